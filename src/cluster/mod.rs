//! Libraries kept in sync across a Redis Cluster. `meta` (versions and the ordering rule)
//! and `wire` (messages and chunking) are pure; `peers` remembers what each peer said.

pub mod meta;
pub mod peers;
pub mod wire;
