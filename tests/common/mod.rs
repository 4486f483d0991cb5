//! Support shared by the integration tests: a fake upstream LLM, a private Redis, a started
//! thrifty, and the client side of the scenario suites.
//!
//! Each test binary includes this module with `mod common;` and uses only part of it.
#![allow(
    dead_code,
    reason = "each test binary uses a subset of the shared helpers, and `expect` would fail in the binaries that use them all"
)]

pub mod client;
pub mod dialect;
pub mod fake_llm;
pub mod python;
pub mod redis;
pub mod redis_cluster;
pub mod thrifty;
