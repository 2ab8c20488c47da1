//! Differential test: native Redis Functions (the oracle) versus RX, on ONE server.
//!
//! Runs the corpus in `tests/differential/*.case`.  The case format, the command
//! mapping, the error normalisation and the environment variables are documented in
//! tests/common/differential.rs (the runner, shared with tests/differential_eval.rs).

mod common;
use common::differential::*;

use std::path::Path;

// One test per corpus file (`cargo test --test differential corpus::sandbox`), each in its
// own server.
corpus_tests!("tests/differential": call_errors, conv_lua_to_reply, conv_reply_to_lua, flags, function_admin, keys_args, load_errors, lua51_syntax, sandbox, writes);

/// The whole corpus in one server, from `$RX_DIFF_DIR` when set (a corpus being written
/// elsewhere): `cargo test --test differential -- --ignored whole_corpus`.
#[test]
#[ignore]
fn whole_corpus_from_rx_diff_dir() {
    run_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential"));
}

// Self-tests of the runner's pure parts (no server needed).

#[test]
fn runner_tokenizer() {
    let t = tokenize(r#"FCALL f 0 "a\x00b\n\"q\"\\" 'lit\x00' plain"#).unwrap();
    assert_eq!(
        t,
        vec![
            b"FCALL".to_vec(),
            b"f".to_vec(),
            b"0".to_vec(),
            b"a\x00b\n\"q\"\\".to_vec(),
            b"lit\\x00".to_vec(),
            b"plain".to_vec()
        ]
    );
    assert_eq!(
        tokenize(r#"SET "" ''"#).unwrap(),
        vec![b"SET".to_vec(), vec![], vec![]]
    );
    assert_eq!(tokenize("\"\\xff\\xFE\"").unwrap(), vec![vec![0xff, 0xfe]]);
    assert!(tokenize("\"unterminated").is_err());
    assert!(tokenize("\"a\"b").is_err());
    assert!(tokenize("\"\\q\"").is_err());
    assert!(tokenize("\"\\x1\"").is_err());
}

#[test]
fn runner_command_mapping() {
    let m = |s: &str| -> Vec<String> {
        to_rx(&tokenize(s).unwrap())
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect()
    };
    assert_eq!(m("FCALL f 0 a"), vec!["RX.CALL", "f", "0", "a"]);
    assert_eq!(m("fcall_ro f 0"), vec!["RX.CALL_RO", "f", "0"]);
    assert_eq!(
        m("function load replace code"),
        vec!["RX.LOAD", "replace", "code"]
    );
    assert_eq!(m("FUNCTION List WITHCODE"), vec!["RX.LIST", "WITHCODE"]);
    assert_eq!(m("FUNCTION DELETE x"), vec!["RX.DELETE", "x"]);
    assert_eq!(m("FUNCTION FLUSH"), vec!["RX.FLUSH"]);
    assert_eq!(m("FUNCTION STATS"), vec!["FUNCTION", "STATS"]);
    assert_eq!(m("FUNCTION"), vec!["FUNCTION"]);
    assert_eq!(m("SET k v"), vec!["SET", "k", "v"]);
}

#[test]
fn runner_error_normalisation() {
    let args = tokenize("FUNCTION FLUSH ASYNC SYNC").unwrap();
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.flush' command\r\n",
            &args
        ),
        b"-ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try FUNCTION HELP.\r\n"
            .to_vec()
    );
    let args = tokenize("FCALL").unwrap();
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.call' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'fcall' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.call_ro' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'fcall_ro' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.load' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'function|load' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(b"-ERR RX.FLUSH only supports SYNC|ASYNC option\r\n", &args),
        b"-ERR FUNCTION FLUSH only supports SYNC|ASYNC option\r\n".to_vec()
    );
    // Nested errors are rewritten, bulk strings are not; blob errors get a new length.
    assert_eq!(
        normalize_rx_reply(
            b"*3\r\n$7\r\nRX.CALL\r\n-ERR RX.CALL x\r\n!10\r\nRX.LOAD xy\r\n",
            &args
        ),
        b"*3\r\n$7\r\nRX.CALL\r\n-ERR FCALL x\r\n!16\r\nFUNCTION LOAD xy\r\n".to_vec()
    );
    // Maps and attributes are walked too.
    assert_eq!(
        normalize_rx_reply(b"|1\r\n+a\r\n-RX.LIST\r\n%1\r\n+k\r\n-RX.DELETE\r\n", &args),
        b"|1\r\n+a\r\n-FUNCTION LIST\r\n%1\r\n+k\r\n-FUNCTION DELETE\r\n".to_vec()
    );
}

#[test]
fn runner_unordered_comparison() {
    assert_eq!(
        unordered_canon(b"*3\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n"),
        unordered_canon(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n:1\r\n")
    );
    assert_eq!(
        unordered_canon(b"%2\r\n+x\r\n:1\r\n+y\r\n:2\r\n"),
        unordered_canon(b"%2\r\n+y\r\n:2\r\n+x\r\n:1\r\n")
    );
    assert_ne!(
        unordered_canon(b"~2\r\n+x\r\n+y\r\n"),
        unordered_canon(b"*2\r\n+x\r\n+y\r\n")
    );
}

#[test]
fn runner_case_file_parsing() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("case-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.case");
    std::fs::write(
        &f,
        "header text\n@@@ one\n# comment\n@@ lib\n#!lua name=a\nline2\n\n\n@@ lib\n#!lua name=b\n@@ run\nSET k v\n\n# skipped\n~ SMEMBERS s\n@@ teardown\nDEL k\n@@@ two\n@@ run\nPING\n! ~ SMEMBERS s\n% GET k\n% ~ SMEMBERS t\n",
    )
    .unwrap();
    let cases = parse_case_file(&f);
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].name, "one");
    assert_eq!(
        cases[0].libs,
        vec![
            "#!lua name=a\nline2".to_string(),
            "#!lua name=b".to_string()
        ]
    );
    assert_eq!(cases[0].run.len(), 2);
    assert!(!cases[0].run[0].unordered);
    assert!(cases[0].run[1].unordered);
    assert_eq!(
        cases[0].run[1].args,
        vec![b"SMEMBERS".to_vec(), b"s".to_vec()]
    );
    assert_eq!(cases[0].teardown.len(), 1);
    assert_eq!(cases[1].run[0].args, vec![b"PING".to_vec()]);
    assert!(!cases[0].run[1].documented_difference && !cases[0].run[1].unpatched_difference);
    // `!` and `%` lines, alone and with `~`.
    let marks = |l: &Line| (l.documented_difference, l.unpatched_difference, l.unordered);
    assert_eq!(marks(&cases[1].run[1]), (true, false, true));
    assert_eq!(marks(&cases[1].run[2]), (false, true, false));
    assert_eq!(marks(&cases[1].run[3]), (false, true, true));
    assert_eq!(cases[1].run[2].args, vec![b"GET".to_vec(), b"k".to_vec()]);
    assert_eq!(
        cases[1].run[3].args,
        vec![b"SMEMBERS".to_vec(), b"t".to_vec()]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn runner_eval_command_mapping() {
    let m = |s: &str| -> Vec<String> {
        to_rx(&tokenize(s).unwrap())
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect()
    };
    assert_eq!(m("EVAL s 1 k a"), vec!["RX.EVAL", "s", "1", "k", "a"]);
    assert_eq!(m("evalsha x 0"), vec!["RX.EVALSHA", "x", "0"]);
    assert_eq!(m("Eval_Ro s 0"), vec!["RX.EVAL_RO", "s", "0"]);
    assert_eq!(m("EVALSHA_RO x 0"), vec!["RX.EVALSHA_RO", "x", "0"]);
    assert_eq!(m("script load s"), vec!["RX.SCRIPT", "load", "s"]);
    assert_eq!(m("SCRIPT"), vec!["RX.SCRIPT"]);
    assert_eq!(m("EVAL"), vec!["RX.EVAL"]);
}

#[test]
fn runner_eval_error_normalisation() {
    let n = |reply: &str, cmd: &str| -> String {
        String::from_utf8(normalize_rx_reply(
            reply.as_bytes(),
            &tokenize(cmd).unwrap(),
        ))
        .unwrap()
    };
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.eval' command\r\n",
            "EVAL"
        ),
        "-ERR wrong number of arguments for 'eval' command\r\n"
    );
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'RX.EVALSHA_RO' command\r\n",
            "EVALSHA_RO x"
        ),
        "-ERR wrong number of arguments for 'evalsha_ro' command\r\n"
    );
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.evalsha' command\r\n",
            "EVALSHA"
        ),
        "-ERR wrong number of arguments for 'evalsha' command\r\n"
    );
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.eval_ro' command\r\n",
            "EVAL_RO"
        ),
        "-ERR wrong number of arguments for 'eval_ro' command\r\n"
    );
    // SCRIPT: native names script|<sub> for known subcommands, else script.
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.script' command\r\n",
            "SCRIPT LOAD"
        ),
        "-ERR wrong number of arguments for 'script|load' command\r\n"
    );
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.script|exists' command\r\n",
            "script exists"
        ),
        "-ERR wrong number of arguments for 'script|exists' command\r\n"
    );
    assert_eq!(
        n(
            "-ERR wrong number of arguments for 'rx.script' command\r\n",
            "SCRIPT"
        ),
        "-ERR wrong number of arguments for 'script' command\r\n"
    );
    assert_eq!(
        n(
            "-NOSCRIPT No matching script. Please use RX.EVAL.\r\n",
            "EVALSHA x 0"
        ),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(
        n(
            "-ERR unknown subcommand 'foo'. Try Rx.Script HELP.\r\n",
            "SCRIPT foo"
        ),
        "-ERR unknown subcommand 'foo'. Try SCRIPT HELP.\r\n"
    );
    assert_eq!(
        n(
            "-ERR RX.SCRIPT FLUSH only support SYNC|ASYNC option\r\n",
            "SCRIPT FLUSH x"
        ),
        "-ERR SCRIPT FLUSH only support SYNC|ASYNC option\r\n"
    );
    // Bulk strings are untouched.
    assert_eq!(n("$7\r\nRX.EVAL\r\n", "EVAL"), "$7\r\nRX.EVAL\r\n");
}
