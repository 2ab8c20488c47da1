//! Libraries kept in sync across a Redis Cluster. `meta` (versions and the ordering rule)
//! and `wire` (messages and chunking) are pure; `peers` remembers what each peer said; `bus`
//! is the module glue (cluster messages, the timer, applying changes); `slots` applies
//! Redis's slot rule to the commands a function runs on a cluster node.

pub mod bus;
pub mod slots;
pub use rx_core::cluster::{meta, peers, wire};
