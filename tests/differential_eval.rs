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

// One test per corpus file (`cargo test --test differential_eval corpus::sandbox`), each in its
// own server.
corpus_tests!("tests/differential_eval": conv_lua_to_reply, conv_reply_to_lua, errors, globals_sandbox, keys_args, libs, lua51_syntax, misc, script_cmd, shebang_ro_oom);

/// The whole corpus in one server, from `$RX_DIFF_DIR` when set (a corpus being written
/// elsewhere): `cargo test --test differential_eval -- --ignored whole_corpus`.
#[test]
#[ignore]
fn whole_corpus_from_rx_diff_dir() {
    run_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential_eval"));
}
