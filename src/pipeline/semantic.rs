//! The semantic stage of chat calls: a recorded answer to a question that means the same, served
//! when the calibration's bound allows it (or, in static mode, whenever the guard does); else the
//! question to remember and the candidate to verify once this call's own answer is recorded.

use std::sync::Arc;

use crate::cache::Plan;
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;
use crate::cache::record::OnStored;
use crate::chat::Call;
use crate::config::SemanticMode;
use crate::dialect;
use crate::semantic::calibration::{self, Estimate, answers_agree};
use crate::semantic::{self, guard};

use super::Proxy;

/// How many guarded semantic candidates are tried, best first, before going upstream.
const SEMANTIC_CANDIDATES: usize = 3;

/// A recorded answer to a question that means the same, and the two wordings.
pub(super) struct SemanticHit {
    pub entry: Arc<Entry>,
    pub key: CacheKey,
    pub similarity: f32,
    pub asked: String,
    pub recorded: String,
    /// What the calibration estimated, in verified mode.
    pub confidence: Option<Estimate>,
}

impl SemanticHit {
    /// `x-thrifty-confidence`: the lower bound that what is served is right and the
    /// observations behind it, then the same for the candidate's own cell.
    pub fn confidence_header(&self) -> Option<String> {
        let e = self.confidence?;
        let region = e.region?;
        Some(format!(
            "{:.3}; n={:.0}; cell {:.3}; cell-n={:.0}",
            region.lower, region.observations, e.lower, e.observations
        ))
    }
}

/// A candidate that was not served: whether its answer agrees with the one this call gets is
/// a verified outcome for the calibration.
pub(super) struct Verification {
    scope: calibration::Scope,
    similarity: f32,
    features: guard::Features,
    candidate: Arc<Entry>,
}

/// What the stage decided.
#[derive(Default)]
pub(super) struct Decision {
    pub hit: Option<SemanticHit>,
    /// The question to index once this call's answer is stored.
    pub question: Option<semantic::Question>,
    pub verify: Option<Verification>,
}

impl Decision {
    /// Whether the stage ran the model for this call (a local embedding, recorded as such).
    pub fn embedded(&self) -> bool {
        self.hit.is_some()
            || self.verify.is_some()
            || self.question.as_ref().is_some_and(|q| q.vector.is_some())
    }
}

impl Proxy {
    /// Nothing is embedded here unless a hit is possible (see
    /// [`semantic::SemanticCache::lookup`]).
    pub(super) async fn semantic_stage(
        &self,
        plan: &Plan,
        call: &Call,
        upstream: &str,
    ) -> Decision {
        let (Some(semantic), Some(chat)) = (&self.semantic, dialect::whole_conversation(call))
        else {
            return Decision::default();
        };
        if !plan.controls.semantic || plan.key.is_none() {
            return Decision::default();
        }
        let endpoint = call.endpoint();
        let Some(mut question) =
            semantic.question(&plan.scope, plan.dialect, upstream, endpoint, chat)
        else {
            return Decision::default();
        };
        let mut decision = Decision::default();
        if plan.mode.read() {
            let threshold = plan.controls.semantic_threshold;
            if let semantic::Lookup::Searched(hits) = semantic
                .lookup(&mut question, threshold, SEMANTIC_CANDIDATES)
                .await
            {
                self.choose(plan, call, semantic, &question, hits, &mut decision)
                    .await;
            }
        }
        if decision.hit.is_none() {
            decision.question = Some(question);
        }
        decision
    }

    /// The first candidate whose answer is still there decides: it is served if the mode
    /// allows, else verified against this call's own answer. An expired best answer never
    /// hides a live one.
    async fn choose(
        &self,
        plan: &Plan,
        call: &Call,
        semantic: &semantic::SemanticCache,
        question: &semantic::Question,
        hits: Vec<semantic::Hit>,
        decision: &mut Decision,
    ) {
        for hit in hits {
            let Some(entry) = self.cache.read(plan, &hit.answer, call).await else {
                if self.cache.exists(&hit.answer).await == Some(false) {
                    semantic.forget(&question.partition, &hit.answer.0).await;
                }
                continue;
            };
            let confidence = match self.calibration.mode() {
                SemanticMode::Static => None,
                SemanticMode::Verified => {
                    let scope = calibration::Scope {
                        tenant: plan.tenant.clone(),
                        namespace: plan.controls.namespace.clone(),
                        model: plan.model.clone(),
                    };
                    let estimate = self
                        .calibration
                        .estimate(&scope, hit.similarity, &hit.features)
                        .await;
                    // Exploration: a share of the serves the bound allows is verified instead.
                    if !self.calibration.allows(&estimate) || self.calibration.should_verify() {
                        tracing::debug!(
                            similarity = hit.similarity,
                            lower = estimate.lower,
                            observations = estimate.observations,
                            in_served_region = estimate.region.is_some(),
                            "semantic candidate verified, not served"
                        );
                        decision.verify = Some(Verification {
                            scope,
                            similarity: hit.similarity,
                            features: hit.features,
                            candidate: entry,
                        });
                        return;
                    }
                    Some(estimate)
                }
            };
            decision.hit = Some(SemanticHit {
                entry,
                key: hit.answer,
                similarity: hit.similarity,
                asked: question.text.clone(),
                recorded: hit.question,
                confidence,
            });
            return;
        }
    }

    /// What learns of this call's stored answer: the index (its question) and the
    /// calibration (whether the unserved candidate's answer agrees with it).
    pub(super) fn after_stored(
        &self,
        question: Option<semantic::Question>,
        verify: Option<Verification>,
    ) -> Option<OnStored> {
        let semantic = self.semantic.clone()?;
        if question.is_none() && verify.is_none() {
            return None;
        }
        let calibration = self.calibration.clone();
        Some(Box::new(move |key, ttl, fresh| {
            if let Some(question) = question {
                semantic.remember_later(question, key, ttl);
            }
            Box::pin(async move {
                if let Some(v) = verify {
                    let embedder = semantic.embedder();
                    let agreed = answers_agree(&fresh, &v.candidate, Some(embedder)).await;
                    calibration
                        .observe(&v.scope, v.similarity, &v.features, agreed)
                        .await;
                }
            })
        }))
    }
}
