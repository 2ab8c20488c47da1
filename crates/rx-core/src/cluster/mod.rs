//! Cluster sync's pure parts: `meta` (versions, the ordering rule, the state digest),
//! `wire` (messages, frames, reassembly), `peers` (what each peer said, throttles) and
//! `keyslot` (Redis Cluster's key slots).

pub mod keyslot;
pub mod meta;
pub mod peers;
pub mod wire;
