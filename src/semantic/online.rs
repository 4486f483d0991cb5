//! `thrifty eval-semantic --online`: verified serving measured on a stream of questions
//! whose right answers are known.
//!
//! Each question of a pairs file gets a class (pairs labelled 1 share one), and the
//! upstream answers by class, so a served answer is right exactly when its class is the
//! asker's. The questions arrive in a seeded shuffled order and go through the real guard,
//! index and calibration: a candidate the calibration allows is served (and sometimes
//! verified), any other goes upstream and its fresh answer is compared with the
//! candidate's. Precision is over served semantic hits; recall is hits over the questions
//! whose class had already been answered. Next to it, the best recall a fixed threshold
//! would have reached, at the same precision, on the same candidates, in hindsight.

use std::collections::HashMap;

use serde_json::json;

use super::calibration::{self, Calibration, Scope};
use super::embedder::Embedder;
use super::guard;
use super::index::Index;
use crate::cache::entry::{Answer, Entry};
use crate::chat::{Dialect, Endpoint};
use crate::config::{SemanticConfig, SemanticMode};

/// The one partition every question of the stream is asked in.
const PARTITION: &str = "eval";

/// How many candidates the index hands the guard, as the semantic stage does.
const SHORTLIST: usize = 4;

/// Rows of the report over time.
const WINDOWS: usize = 8;

/// Questions of one or more pairs files, with their classes.
#[derive(Clone)]
pub struct Workload {
    pub name: String,
    pub texts: Vec<String>,
    pub classes: Vec<usize>,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

impl Workload {
    /// One stream of several workloads' questions; their classes stay apart.
    pub fn mix(name: &str, parts: &[Workload]) -> Workload {
        let mut texts = Vec::new();
        let mut classes = Vec::new();
        for part in parts {
            let offset = texts.len();
            texts.extend(part.texts.iter().cloned());
            classes.extend(part.classes.iter().map(|c| c + offset));
        }
        Workload {
            name: name.to_owned(),
            texts,
            classes,
        }
    }

    /// Reads pairs files into questions and classes; pairs labelled 1 share a class.
    pub fn read(name: &str, files: &[std::path::PathBuf]) -> Result<Workload, String> {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut texts = Vec::new();
        let mut same = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            // Files never share a class: the same sentence in two files is two questions.
            let prefix = path.display().to_string();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let pair: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| format!("{}: not a pairs file: {e}", path.display()))?;
                let mut id = |t: &str| {
                    let key = format!("{prefix}\u{0}{t}");
                    *ids.entry(key).or_insert_with(|| {
                        texts.push(t.to_owned());
                        texts.len() - 1
                    })
                };
                let (Some(a), Some(b)) = (pair["a"].as_str(), pair["b"].as_str()) else {
                    return Err(format!("{}: a pair without a and b", path.display()));
                };
                let (a, b) = (id(a), id(b));
                if pair["label"] == json!(1) {
                    same.push((a, b));
                }
            }
        }
        let mut parent: Vec<usize> = (0..texts.len()).collect();
        for (a, b) in same {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[ra] = rb;
        }
        let classes = (0..texts.len()).map(|i| find(&mut parent, i)).collect();
        Ok(Workload {
            name: name.to_owned(),
            texts,
            classes,
        })
    }
}

/// One question's fate.
#[derive(Clone, Copy, Debug, Default)]
struct Step {
    /// Whether an earlier question of its class had been answered upstream.
    answerable: bool,
    /// The best candidate that passed the guard: similarity and whether its class is right.
    candidate: Option<(f32, bool)>,
    /// Served from the cache: whether rightly.
    served: Option<bool>,
    /// The question asked and, for a candidate, the question it was recorded for and the
    /// pair's features, for `--dump`.
    question: usize,
    recorded: Option<(usize, guard::Features)>,
}

/// The result of one run.
pub struct Run {
    steps: Vec<Step>,
    /// Served hits that were verified anyway (exploration).
    pub verified_calls: usize,
    /// Outcomes the calibration observed, and how many of them agreed.
    pub observed: usize,
    pub agreed: usize,
    /// Candidates the calibration weighed, and the time its bookkeeping took for them: the
    /// estimate and decision, and for a verified one the answers' comparison (without
    /// embedding them: both are the oracle's) and the observation, in memory.
    pub weighed: usize,
    pub bookkeeping: std::time::Duration,
}

/// An answer entry for a class, as the oracle upstream would record it.
fn answer(class: usize) -> Entry {
    Entry {
        created_ms: 0,
        ttl_ms: 0,
        tenant: "eval".to_owned(),
        namespace: None,
        model: "oracle".to_owned(),
        tags: Vec::new(),
        dialect: Dialect::OpenAi,
        endpoint: Endpoint::Chat,
        answer: Answer::Json(json!({"choices":[{"index":0,"message":{"role":"assistant",
            "content": format!("the answer for class {class}")},"finish_reason":"stop"}]})),
        compressed_away: 0,
        framed: Default::default(),
    }
}

/// A seeded Fisher-Yates shuffle of `0..n`.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) as usize) % (i + 1);
        order.swap(i, j);
    }
    order
}

/// Streams the workload's questions through guard, index and calibration.
pub async fn run(
    workload: &Workload,
    vectors: &[std::sync::Arc<Vec<f32>>],
    config: &SemanticConfig,
    seed: u64,
) -> Run {
    let index = Index::new(usize::MAX, usize::MAX, usize::MAX);
    let calibration = Calibration::new(config, None, seed, crate::clock::Clock::system());
    let scope = Scope {
        tenant: "eval".to_owned(),
        namespace: None,
        model: "oracle".to_owned(),
    };
    let floor = match config.mode {
        SemanticMode::Verified => calibration::curve::SIMILARITY_EDGES[0],
        SemanticMode::Static => config.threshold,
    };
    let mut answered: HashMap<usize, ()> = HashMap::new();
    let mut steps = Vec::with_capacity(workload.texts.len());
    let (mut verified_calls, mut observed, mut agreed_count) = (0, 0, 0);
    let (mut weighed, mut bookkeeping) = (0, std::time::Duration::ZERO);
    for q in shuffled(workload.texts.len(), seed) {
        let class = workload.classes[q];
        let text = &workload.texts[q];
        let mut step = Step {
            answerable: answered.contains_key(&class),
            question: q,
            ..Step::default()
        };
        let best = index
            .search(PARTITION, &vectors[q], floor, SHORTLIST)
            .into_iter()
            .find_map(|c| {
                let features = if config.guard {
                    guard::check(text, &c.item.text).ok()?
                } else {
                    guard::Features {
                        overlap: 0.0,
                        length_ratio: 1.0,
                        one_sided: false,
                        unmatched: [0, 0],
                        shared: 0,
                        in_order: 0,
                    }
                };
                let cached: usize = c.item.answer.parse().ok()?;
                Some((c.similarity, features, cached))
            });
        let mut upstream = true;
        if let Some((similarity, features, cached)) = best {
            let right = workload.classes[cached] == class;
            step.candidate = Some((similarity, right));
            step.recorded = Some((cached, features));
            match config.mode {
                SemanticMode::Static => {
                    step.served = Some(right);
                    upstream = false;
                }
                SemanticMode::Verified => {
                    let (fresh, recorded) = (answer(class), answer(workload.classes[cached]));
                    let started = std::time::Instant::now();
                    let estimate = calibration.estimate(&scope, similarity, &features).await;
                    let serve = calibration.allows(&estimate);
                    if serve {
                        step.served = Some(right);
                    }
                    if !serve || calibration.should_verify() {
                        let agreed = calibration::answers_agree(&fresh, &recorded, None).await;
                        calibration
                            .observe(&scope, similarity, &features, agreed)
                            .await;
                        verified_calls += usize::from(serve);
                        observed += 1;
                        agreed_count += usize::from(agreed);
                    } else {
                        upstream = false;
                    }
                    bookkeeping += started.elapsed();
                    weighed += 1;
                }
            }
        }
        if upstream {
            answered.insert(class, ());
            index.insert(PARTITION, &q.to_string(), text, vectors[q].to_vec());
        }
        steps.push(step);
    }
    Run {
        steps,
        verified_calls,
        observed,
        agreed: agreed_count,
        weighed,
        bookkeeping,
    }
}

/// Precision and recall of served hits over a stretch of steps.
fn rates(steps: &[Step]) -> (usize, f64, f64) {
    let served = steps.iter().filter(|s| s.served.is_some()).count();
    let right = steps.iter().filter(|s| s.served == Some(true)).count();
    let answerable = steps.iter().filter(|s| s.answerable).count();
    let precision = if served == 0 {
        1.0
    } else {
        right as f64 / served as f64
    };
    let recall = if answerable == 0 {
        0.0
    } else {
        right as f64 / answerable as f64
    };
    (served, precision, recall)
}

/// The best recall a fixed threshold reaches over `steps` with precision at least `floor`.
fn hindsight(steps: &[Step], floor: f64) -> (f64, f32) {
    let answerable = steps.iter().filter(|s| s.answerable).count().max(1) as f64;
    let mut candidates: Vec<(f32, bool)> = steps.iter().filter_map(|s| s.candidate).collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut right, mut served) = (0usize, 0usize);
    let mut best = (0.0, 1.0f32);
    for (i, (similarity, ok)) in candidates.iter().enumerate() {
        served += 1;
        right += usize::from(*ok);
        let tie = candidates.get(i + 1).is_some_and(|n| n.0 == *similarity);
        if !tie && right as f64 / served as f64 >= floor {
            let recall = right as f64 / answerable;
            if recall > best.0 {
                best = (recall, *similarity);
            }
        }
    }
    best
}

/// When serving began: the question (counted from 1) of the first served hit, and how many
/// candidates came before it (each one verified, in verified mode).
fn first_served(steps: &[Step]) -> Option<(usize, usize)> {
    let at = steps.iter().position(|s| s.served.is_some())?;
    let before = steps[..at].iter().filter(|s| s.candidate.is_some()).count();
    Some((at + 1, before))
}

/// The report of one run: totals, then precision and recall window by window.
pub fn render(workload: &Workload, run: &Run, mode: SemanticMode) -> String {
    let steps = &run.steps;
    let (served, precision, recall) = rates(steps);
    let half = &steps[steps.len() / 2..];
    let (_, warm_precision, warm_recall) = rates(half);
    let (best_95, t_95) = hindsight(half, 0.95);
    let (best_same, t_same) = hindsight(half, warm_precision.min(1.0));
    let mode = match mode {
        SemanticMode::Verified => "verified",
        SemanticMode::Static => "static",
    };
    let first = match first_served(steps) {
        Some((question, before)) => {
            format!("first hit served at question {question}, after {before} candidates")
        }
        None => "no hit served".to_owned(),
    };
    let bookkeeping = match run.weighed {
        0 => String::new(),
        n => format!(
            "; bookkeeping {:.1} µs per candidate over {n} (estimate, decision, answer comparison \
             and observation, in memory)",
            run.bookkeeping.as_secs_f64() * 1e6 / n as f64
        ),
    };
    let mut out = format!(
        "{} ({mode}): {} questions, {} of them asked after their class was answered\n\
         whole run: {served} served, precision {precision:.3}, recall {recall:.3}; {} served hits verified; \
         {} outcomes observed, {} agreeing; {first}{bookkeeping}\n\
         second half (warm): precision {warm_precision:.3}, recall {warm_recall:.3}; \
         hindsight-best fixed threshold: recall {best_95:.3} at precision >= 0.95 (t = {t_95:.3}), \
         {best_same:.3} at precision >= {warm_precision:.3} (t = {t_same:.3})\n\
         questions  served  precision  recall  hindsight-recall@0.95\n",
        workload.name,
        steps.len(),
        steps.iter().filter(|s| s.answerable).count(),
        run.verified_calls,
        run.observed,
        run.agreed,
    );
    let width = steps.len().div_ceil(WINDOWS).max(1);
    for (i, window) in steps.chunks(width).enumerate() {
        let (served, precision, recall) = rates(window);
        let (best, _) = hindsight(window, 0.95);
        out.push_str(&format!(
            "{:>9}  {served:>6}  {precision:>9.3}  {recall:>6.3}  {best:>21.3}\n",
            (i + 1) * width.min(steps.len())
        ));
    }
    out
}

/// The run step by step as TSV for `--dump`: question number, whether its class had been
/// answered, then for a candidate its similarity, whether its class is right, whether it was
/// served, its features (overlap, length ratio, a rule came close), and both texts.
pub fn tsv(workload: &Workload, run: &Run) -> String {
    let clean = |t: &str| t.replace(['\t', '\n'], " ");
    let mut out = String::new();
    for step in &run.steps {
        let (Some((similarity, right)), Some((cached, f))) = (step.candidate, step.recorded) else {
            out.push_str(&format!(
                "{}\t{}\t\t\t\t\t\t\t\t\t\t\t{}\t\n",
                step.question,
                u8::from(step.answerable),
                clean(&workload.texts[step.question]),
            ));
            continue;
        };
        out.push_str(&format!(
            "{}\t{}\t{similarity}\t{}\t{}\t{:.3}\t{:.3}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            step.question,
            u8::from(step.answerable),
            u8::from(right),
            u8::from(step.served.is_some()),
            f.overlap,
            f.length_ratio,
            u8::from(f.one_sided),
            f.unmatched[0],
            f.unmatched[1],
            f.shared,
            f.in_order,
            clean(&workload.texts[step.question]),
            clean(&workload.texts[cached]),
        ));
    }
    out
}

/// Embeds every question once.
pub async fn embed(
    embedder: &Embedder,
    workload: &Workload,
) -> Result<Vec<std::sync::Arc<Vec<f32>>>, String> {
    embedder
        .embed_many(&workload.texts)
        .await
        .into_iter()
        .map(|v| v.ok_or_else(|| "the model failed to embed a question".to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_labelled_same_share_a_class_transitively() {
        let path = std::env::temp_dir().join(format!(
            "thrifty-online-{}.jsonl",
            uuid::Uuid::new_v4().simple()
        ));
        let lines = [
            r#"{"a":"x","b":"y","label":1}"#,
            r#"{"a":"y","b":"z","label":1}"#,
            r#"{"a":"z","b":"w","label":0}"#,
        ];
        std::fs::write(&path, lines.join("\n")).expect("writes the pairs");
        let w = Workload::read("t", std::slice::from_ref(&path)).expect("reads the pairs");
        let _ = std::fs::remove_file(&path);
        assert_eq!(w.texts, ["x", "y", "z", "w"]);
        assert_eq!(w.classes[0], w.classes[1]);
        assert_eq!(w.classes[1], w.classes[2]);
        assert_ne!(w.classes[2], w.classes[3]);
        let mixed = Workload::mix("m", &[w.clone(), w]);
        assert_eq!(mixed.texts.len(), 8);
        assert_ne!(
            mixed.classes[0], mixed.classes[4],
            "files never share a class"
        );
    }

    #[test]
    fn the_order_is_a_seeded_permutation() {
        let a = shuffled(100, 3);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled(100, 3));
        assert_ne!(a, shuffled(100, 4));
    }

    #[test]
    fn the_first_served_hit_is_found_with_the_candidates_before_it() {
        let step = |candidate: bool, served: Option<bool>| Step {
            answerable: true,
            candidate: candidate.then_some((0.9, true)),
            served,
            ..Step::default()
        };
        let steps = [
            step(false, None),
            step(true, None),
            step(true, None),
            step(false, None),
            step(true, Some(true)),
            step(true, Some(false)),
        ];
        assert_eq!(first_served(&steps), Some((5, 2)));
        assert_eq!(first_served(&steps[..4]), None);
    }

    #[test]
    fn hindsight_finds_the_best_threshold_at_a_precision() {
        let step = |similarity, right| Step {
            answerable: true,
            candidate: Some((similarity, right)),
            ..Step::default()
        };
        let steps = [
            step(0.99, true),
            step(0.97, true),
            step(0.95, false),
            step(0.93, true),
            step(0.91, true),
            step(0.90, true),
            step(0.85, false),
            step(0.84, false),
        ];
        let (recall, threshold) = hindsight(&steps, 0.8);
        assert_eq!(threshold, 0.90, "5 of 6 served are right");
        assert!((recall - 5.0 / 8.0).abs() < 1e-9);
        assert_eq!(hindsight(&steps, 1.0), (0.25, 0.97));
    }
}
