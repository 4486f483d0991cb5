//! Which earlier messages must match: by default the whole conversation before the last user
//! message (`semantic.context = "prefix"`); with `semantic.context = "window"` only the
//! instructions and the last `semantic.window_messages` messages before it, so a follow-up can
//! match across conversations that began differently.

use rstest::rstest;
use thrifty::config::ContextRule;

use crate::matching::{assert_semantic_hit, assert_upstream};
use crate::{Backend, Dialect, NO_HEADERS, SYSTEM, Turn, World};

/// The messages before the last user message that a window of this size keeps.
const WINDOW: usize = 2;

/// The follow-up every conversation here ends with.
const FOLLOW_UP: &str = "and in French?";

/// A paraphrase of [`FOLLOW_UP`] (cosine 0.946; the guard lets it through).
const FOLLOW_UP_PARAPHRASE: &str = "and in French too?";

/// An opening exchange about `city`, then a greeting and `follow_up`: the last [`WINDOW`]
/// messages before the follow-up are the same in every conversation built with the same
/// `greeting`, whatever the city.
fn conversation<'a>(
    city: &'a str,
    capital_of: &'a str,
    greeting: &'a str,
    follow_up: &'a str,
) -> [Turn<'a>; 6] {
    [
        Turn::System(SYSTEM),
        Turn::User(city),
        Turn::Assistant(capital_of),
        Turn::User(greeting),
        Turn::Assistant("Good morning!"),
        Turn::User(follow_up),
    ]
}

const PARIS: [&str; 2] = ["Tell me about Paris", "Paris is the capital of France."];
const ROME: [&str; 2] = ["Tell me about Rome", "Rome is the capital of Italy."];
const SAY_GOOD_MORNING: &str = "Say good morning";

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_lets_a_follow_up_match_across_conversations_that_began_differently(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start_with(Backend::Embedded, |raw| {
        raw.semantic.context = ContextRule::Window;
        raw.semantic.window_messages = WINDOW;
    })
    .await;
    let [city, capital] = PARIS;
    let paris = conversation(city, capital, SAY_GOOD_MORNING, FOLLOW_UP);
    w.api
        .fill(dialect, &dialect.conversation(&paris, false), &NO_HEADERS)
        .await;

    let [city, capital] = ROME;
    for asked in [FOLLOW_UP, FOLLOW_UP_PARAPHRASE] {
        let rome = conversation(city, capital, SAY_GOOD_MORNING, asked);
        assert_semantic_hit(
            &w,
            dialect,
            &dialect.conversation(&rome, false),
            &[],
            FOLLOW_UP,
            &format!("{what}: {asked:?} after the same last {WINDOW} messages"),
        )
        .await;
    }

    // Inside the window every message still counts.
    let good_night = conversation(city, capital, "Say good night", FOLLOW_UP);
    assert_upstream(
        &w,
        dialect,
        &dialect.conversation(&good_night, false),
        &[],
        &format!("{what}: another message inside the window"),
    )
    .await;
    let pirate = {
        let mut turns = conversation(city, capital, SAY_GOOD_MORNING, FOLLOW_UP);
        turns[0] = Turn::System("Answer like a pirate.");
        turns
    };
    assert_upstream(
        &w,
        dialect,
        &dialect.conversation(&pirate, false),
        &[],
        &format!("{what}: instructions before the window"),
    )
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_follow_up_matches_only_after_the_whole_same_conversation(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    assert_eq!(w.raw.semantic.context, ContextRule::Prefix, "the default");
    let [city, capital] = PARIS;
    let paris = conversation(city, capital, SAY_GOOD_MORNING, FOLLOW_UP);
    w.api
        .fill(dialect, &dialect.conversation(&paris, false), &NO_HEADERS)
        .await;

    let [city, capital] = ROME;
    let rome = conversation(city, capital, SAY_GOOD_MORNING, FOLLOW_UP_PARAPHRASE);
    assert_upstream(
        &w,
        dialect,
        &dialect.conversation(&rome, false),
        &[],
        &format!("{what}: the same last {WINDOW} messages after another opening"),
    )
    .await;

    let [city, capital] = PARIS;
    let same = conversation(city, capital, SAY_GOOD_MORNING, FOLLOW_UP_PARAPHRASE);
    assert_semantic_hit(
        &w,
        dialect,
        &dialect.conversation(&same, false),
        &[],
        FOLLOW_UP,
        &format!("{what}: the same conversation"),
    )
    .await;
}
