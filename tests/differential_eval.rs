//! Differential test of the EVAL family: native EVAL/EVALSHA/EVAL_RO/EVALSHA_RO/SCRIPT
//! (the oracle) versus RX.EVAL/RX.EVALSHA/RX.EVAL_RO/RX.EVALSHA_RO/RX.SCRIPT, on ONE
//! server.
//!
//! Runs the corpus in `tests/differential_eval/*.case`.  The case format, the command
//! mapping, the error normalisation and the environment variables (`RX_DIFF_FILTER`,
//! `RX_DIFF_NATIVE_ONLY`, `RX_DIFF_DIR`, `RX_DIFF_DUMP`) are documented in
//! tests/common/differential.rs (the runner, shared with tests/differential.rs).

mod common;
use common::differential::*;

use std::path::Path;

#[test]
fn differential_eval_corpus() {
    run_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential_eval"));
}
