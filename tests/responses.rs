//! OpenAI's Responses API (`POST /v1/responses`) through thrifty's pipeline, over real sockets:
//! a client talks to thrifty, thrifty to the fake upstream (which speaks the Responses wire
//! format, JSON and event streams), and the cache lives in a private Redis. Tests assert what
//! a user notices: the bytes and headers returned, how many calls reached the fake, what the
//! savings report shows.
//!
//! - `world`: the fake, Redis and thrifty started together; reading event streams.
//! - `cache`: misses and hits in both modes, the full event sequence, the upstream's response
//!   id kept, what is never stored, errors, and the paths that stay passthrough.
//! - `savings`: the ledger's records of Responses calls, by endpoint.
//! - `compression`: a long item list reaches the upstream condensed and still valid.
//! - `semantic`: which Responses calls the semantic cache may answer.
//! - `sdk`: the official openai-python client (`client.responses.create`) through thrifty.

mod common;

#[path = "responses/cache.rs"]
mod cache;
#[path = "responses/compression.rs"]
mod compression;
#[path = "responses/savings.rs"]
mod savings;
#[path = "responses/sdk.rs"]
mod sdk;
#[path = "responses/semantic.rs"]
mod semantic;
#[path = "responses/world.rs"]
mod world;
