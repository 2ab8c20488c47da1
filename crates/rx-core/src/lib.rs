//! RX's core: plain Rust that knows nothing of the module API or of Lua, unit-tested hard.
//!
//! Libraries and functions (`header`, `flags`, `registry`), the EVAL cache (`scripts`),
//! per-function statistics (`stats`), the run state a kill or time limit acts on
//! (`running`), conversions and protocol (`resp`, `reply`, `numfmt`), payloads
//! (`payload`), cluster metadata (`cluster`), what differs between servers (`dialect`),
//! and the boundary a script engine implements (`engine`).

pub mod cluster;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod flags;
pub mod glob;
pub mod header;
pub mod history;
pub mod numfmt;
pub mod numkeys;
pub mod payload;
#[cfg(test)]
mod proptests;
pub mod registry;
pub mod reply;
pub mod resp;
pub mod running;
pub mod scripts;
pub mod sort_in_scripts;
pub mod stats;
pub mod strtod;
