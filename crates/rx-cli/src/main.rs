//! `rx`: deploys RX libraries from files and inspects and rolls back their history.
//!
//!   rx deploy [--dry-run] [--prune] <dir-or-files...>
//!   rx history <library>
//!   rx rollback <library> [--to <version>]
//!   rx status
//!   rx diff <file>
//!
//! Every command takes `--url redis://host:port` (default redis://127.0.0.1:6379, or
//! `$RX_URL`) and `--json`. Exit codes: 0 done (for `diff`: no difference), 1 `diff` found
//! differences, 2 bad usage or a connection or file error, 3 a conflict (someone else
//! changed a library during the deploy), 4 the server refused a library, 5 the cluster did
//! not converge before `--timeout` seconds (default 30).

mod diff;
mod json;
mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::json::Json;
use crate::plan::{Action, Planned};

const USAGE: &str = "usage:
  rx deploy [--dry-run] [--prune] [--timeout <s>] <dir-or-files...>
  rx history <library>
  rx rollback <library> [--to <version>]
  rx status
  rx diff <file>
options for every command: --url redis://host:port (default $RX_URL, else redis://127.0.0.1:6379), --json";

/// A failure and the exit code it ends the tool with.
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Failure {
        match e.code() {
            Some("CONFLICT") => fail(3, format!("CONFLICT {}", e.detail().unwrap_or_default())),
            Some(_) => fail(4, e.to_string()),
            None => fail(2, e.to_string()),
        }
    }
}

struct Options {
    url: String,
    json: bool,
    dry_run: bool,
    prune: bool,
    timeout: Duration,
    to: Option<u64>,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut o = Options {
        url: std::env::var("RX_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        json: false,
        dry_run: false,
        prune: false,
        timeout: Duration::from_secs(30),
        to: None,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| fail(2, format!("{name} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--url" => o.url = value("--url")?,
            "--json" => o.json = true,
            "--dry-run" => o.dry_run = true,
            "--prune" => o.prune = true,
            "--timeout" => {
                let v = value("--timeout")?;
                o.timeout = Duration::from_secs_f64(
                    v.parse::<f64>()
                        .ok()
                        .filter(|s| *s >= 0.0 && s.is_finite())
                        .ok_or_else(|| fail(2, "--timeout needs a number of seconds"))?,
                );
            }
            "--to" => {
                let v = value("--to")?;
                o.to = Some(
                    v.parse()
                        .map_err(|_| fail(2, "--to needs a version number"))?,
                );
            }
            "-h" | "--help" => return Err(fail(0, USAGE)),
            s if s.starts_with("--") => {
                return Err(fail(2, format!("unknown option {s}\n{USAGE}")))
            }
            s => o.positional.push(s.to_string()),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Options may come before or after the command: the command is the first word.
    let result = parse(&args).and_then(|mut o| {
        if o.positional.is_empty() {
            return Err(fail(2, USAGE));
        }
        let command = o.positional.remove(0);
        run(&command, &o)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if f.code == 0 {
                println!("{}", f.message);
            } else {
                eprintln!("rx: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(command: &str, o: &Options) -> Result<u8, Failure> {
    let one = |what: &str| -> Result<&str, Failure> {
        match o.positional.as_slice() {
            [x] => Ok(x.as_str()),
            _ => Err(fail(2, format!("{command} takes one {what}\n{USAGE}"))),
        }
    };
    match command {
        "deploy" => deploy(o),
        "history" => history(o, one("library name")?),
        "rollback" => rollback(o, one("library name")?),
        "status" if o.positional.is_empty() => status(o),
        "diff" => diff_file(o, one("file")?),
        _ => Err(fail(2, USAGE)),
    }
}

fn connect(o: &Options) -> Result<Connection, Failure> {
    redis::Client::open(o.url.as_str())
        .and_then(|c| c.get_connection())
        .map_err(|e| fail(2, format!("cannot connect to {}: {e}", o.url)))
}

// ---------------------------------------------------------------------------
// Replies

/// A map reply as (name, value) pairs, whether the server sent a RESP3 map or a RESP2
/// array of alternating names and values.
fn fields(v: &Value) -> BTreeMap<String, Value> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m.clone(),
        Value::Array(a) => a
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect(),
        _ => Vec::new(),
    };
    pairs.into_iter().map(|(k, v)| (text(&k), v)).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        _ => String::new(),
    }
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(i) => *i as u64,
        other => text(other).parse().unwrap_or(0),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).into_bytes(),
    }
}

/// Every library on the server: name -> (version, digest).
fn deployed(con: &mut Connection) -> Result<BTreeMap<String, (u64, String)>, Failure> {
    let list: Value = redis::cmd("RX.LIST").arg("WITHVERSIONS").query(con)?;
    let Value::Array(libs) = list else {
        return Err(fail(2, "RX.LIST did not answer a list: is RX loaded?"));
    };
    Ok(libs
        .iter()
        .map(|l| {
            let f = fields(l);
            (
                text(&f["library_name"]),
                (int(&f["version"]), text(&f["digest"])),
            )
        })
        .collect())
}

// ---------------------------------------------------------------------------
// deploy

/// The `.lua` files named, directories expanded (their `.lua` files, sorted).
fn library_files(paths: &[String]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| fail(2, format!("{p}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "lua") && f.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.to_path_buf());
        }
    }
    if out.is_empty() {
        return Err(fail(2, "no .lua files to deploy"));
    }
    Ok(out)
}

fn deploy(o: &Options) -> Result<u8, Failure> {
    let mut sources = Vec::new();
    for file in library_files(&o.positional)? {
        let code = std::fs::read(&file).map_err(|e| fail(2, format!("{}: {e}", file.display())))?;
        sources.push((file.display().to_string(), code));
    }
    let mut con = connect(o)?;
    let current = deployed(&mut con)?;
    let planned = plan::plan(&sources, &current, o.prune).map_err(|e| fail(2, e))?;
    if !o.json {
        print!("{}", plan::table(&planned));
    }
    let changes = planned
        .iter()
        .filter(|p| p.action != Action::Unchanged)
        .count();
    let mut results = Vec::new();
    let mut outcome: Result<(), Failure> = Ok(());
    if !o.dry_run && changes > 0 {
        // Every load is checked first (DRYRUN, with its condition), so a library the
        // server refuses stops the deploy before anything changed.
        for p in planned
            .iter()
            .filter(|p| matches!(p.action, Action::Create | Action::Replace))
        {
            let checked: Result<Value, _> = redis::cmd("RX.LOAD")
                .arg("IFDIGEST")
                .arg(&p.expected_digest)
                .arg("DRYRUN")
                .arg(&p.code)
                .query(&mut con);
            if let Err(e) = checked {
                outcome = Err(Failure::from(e)).map_err(|f| named(f, p));
                break;
            }
        }
        if outcome.is_ok() {
            for p in planned.iter().filter(|p| p.action != Action::Unchanged) {
                let applied: Result<Value, _> = if p.action == Action::Delete {
                    redis::cmd("RX.DELETE").arg(&p.name).query(&mut con)
                } else {
                    redis::cmd("RX.LOAD")
                        .arg("IFDIGEST")
                        .arg(&p.expected_digest)
                        .arg(&p.code)
                        .query(&mut con)
                };
                match applied {
                    Ok(_) => {
                        results.push(p.name.clone());
                        if !o.json {
                            println!("{} {}: done", p.action.name(), p.name);
                        }
                    }
                    Err(e) => {
                        outcome = Err(named(Failure::from(e), p));
                        break;
                    }
                }
            }
        }
        if outcome.is_ok() {
            outcome = wait_for_cluster(&mut con, o);
        }
    }
    if o.json {
        let mut j = Json::object();
        j.field("url", Json::string(&o.url));
        j.field("dry_run", Json::Bool(o.dry_run));
        j.field(
            "plan",
            Json::Array(planned.iter().map(plan::json).collect()),
        );
        j.field(
            "applied",
            Json::Array(results.iter().map(|n| Json::string(n)).collect()),
        );
        match &outcome {
            Ok(()) => j.field("error", Json::Null),
            Err(f) => j.field("error", Json::string(&f.message)),
        }
        println!("{}", j.render());
    } else if outcome.is_ok() {
        println!(
            "{}",
            if o.dry_run || changes == 0 {
                format!("{changes} change(s) planned, nothing applied")
            } else {
                format!("{changes} change(s) applied")
            }
        );
    }
    outcome.map(|()| 0)
}

fn named(f: Failure, p: &Planned) -> Failure {
    let hint = if f.code == 3 {
        " (another client changed it since this deploy read it; nothing after it was applied: run the deploy again to see the new plan)"
    } else {
        ""
    };
    fail(
        f.code,
        format!(
            "{} {} ({}): {}{hint}",
            p.action.name(),
            p.name,
            p.file,
            f.message
        ),
    )
}

/// In a cluster, waits until every node reports the same libraries as this one.
fn wait_for_cluster(con: &mut Connection, o: &Options) -> Result<(), Failure> {
    let deadline = Instant::now() + o.timeout;
    loop {
        let status: Value = redis::cmd("RX.CLUSTER").arg("STATUS").query(con)?;
        let f = fields(&status);
        if int(&f["cluster_enabled"]) == 0 {
            return Ok(());
        }
        if int(&f["in_sync"]) == 1 {
            if !o.json {
                let nodes = match &f["nodes"] {
                    Value::Array(n) => n.len(),
                    _ => 0,
                };
                println!("cluster: all {nodes} nodes in sync");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(
                5,
                format!(
                    "the cluster did not report every node in sync within {:?} (RX.CLUSTER STATUS)",
                    o.timeout
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// history, rollback, status, diff

fn history(o: &Options, name: &str) -> Result<u8, Failure> {
    let mut con = connect(o)?;
    let reply: Value = redis::cmd("RX.HISTORY").arg(name).query(&mut con)?;
    let Value::Array(entries) = reply else {
        return Err(fail(2, "RX.HISTORY did not answer a list"));
    };
    let rows: Vec<BTreeMap<String, Value>> = entries.iter().map(fields).collect();
    if o.json {
        let list = rows
            .iter()
            .map(|e| {
                let mut j = Json::object();
                j.field("version", Json::Number(int(&e["version"])));
                j.field("action", Json::string(&text(&e["action"])));
                j.field("digest", Json::string(&text(&e["digest"])));
                j.field("time_ms", Json::Number(int(&e["time_ms"])));
                j.field("bytes", Json::Number(int(&e["bytes"])));
                j
            })
            .collect();
        println!("{}", Json::Array(list).render());
        return Ok(0);
    }
    if rows.is_empty() {
        println!("library '{name}' has no history");
        return Ok(0);
    }
    println!(
        "{:>8}  {:<9} {:<24} {:>8}  digest",
        "version", "action", "time (UTC)", "bytes"
    );
    for e in &rows {
        println!(
            "{:>8}  {:<9} {:<24} {:>8}  {}",
            int(&e["version"]),
            text(&e["action"]),
            utc(int(&e["time_ms"])),
            int(&e["bytes"]),
            text(&e["digest"])
        );
    }
    Ok(0)
}

fn rollback(o: &Options, name: &str) -> Result<u8, Failure> {
    let mut con = connect(o)?;
    let mut cmd = redis::cmd("RX.ROLLBACK");
    cmd.arg(name);
    if let Some(v) = o.to {
        cmd.arg("TO").arg(v);
    }
    let version: u64 = cmd.query(&mut con)?;
    wait_for_cluster(&mut con, o)?;
    if o.json {
        let mut j = Json::object();
        j.field("library", Json::string(name));
        j.field("version", Json::Number(version));
        println!("{}", j.render());
    } else {
        println!("library '{name}' rolled back: now at version {version}");
    }
    Ok(0)
}

fn status(o: &Options) -> Result<u8, Failure> {
    let mut con = connect(o)?;
    let libs = deployed(&mut con)?;
    let cluster: Value = redis::cmd("RX.CLUSTER").arg("STATUS").query(&mut con)?;
    let c = fields(&cluster);
    let enabled = int(&c["cluster_enabled"]) == 1;
    if o.json {
        let mut j = Json::object();
        let list = libs
            .iter()
            .map(|(n, (v, d))| {
                let mut l = Json::object();
                l.field("library", Json::string(n));
                l.field("version", Json::Number(*v));
                l.field("digest", Json::string(d));
                l
            })
            .collect();
        j.field("libraries", Json::Array(list));
        j.field("cluster_enabled", Json::Bool(enabled));
        j.field("in_sync", Json::Bool(int(&c["in_sync"]) == 1));
        println!("{}", j.render());
        return Ok(0);
    }
    println!("{:<32} {:>8}  digest", "library", "version");
    for (n, (v, d)) in &libs {
        println!("{n:<32} {v:>8}  {d}");
    }
    if enabled {
        let nodes = match &c["nodes"] {
            Value::Array(n) => n.iter().map(fields).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let synced = nodes.iter().filter(|n| int(&n["in_sync"]) == 1).count();
        println!(
            "cluster: {}, {synced} of {} nodes in sync",
            if int(&c["in_sync"]) == 1 {
                "in sync"
            } else {
                "NOT in sync"
            },
            nodes.len()
        );
    } else {
        println!("not a cluster");
    }
    Ok(0)
}

fn diff_file(o: &Options, file: &str) -> Result<u8, Failure> {
    let code = std::fs::read(file).map_err(|e| fail(2, format!("{file}: {e}")))?;
    let name = rx_core::header::parse_header(&code)
        .map_err(|e| fail(2, format!("{file}: {}", e.message())))?
        .name;
    let mut con = connect(o)?;
    let list: Value = redis::cmd("RX.LIST")
        .arg("LIBRARYNAME")
        .arg(&name)
        .arg("WITHCODE")
        .query(&mut con)?;
    let deployed = match list {
        Value::Array(libs) => libs
            .iter()
            .map(fields)
            .find(|f| text(&f["library_name"]) == name)
            .map(|f| bytes(&f["library_code"])),
        _ => None,
    };
    let old = deployed.unwrap_or_default();
    let same = old == code;
    if o.json {
        let mut j = Json::object();
        j.field("library", Json::string(&name));
        j.field("deployed", Json::Bool(!old.is_empty()));
        j.field("same", Json::Bool(same));
        println!("{}", j.render());
    } else if !same {
        print!(
            "{}",
            diff::unified(
                &String::from_utf8_lossy(&old),
                &String::from_utf8_lossy(&code),
                &format!("deployed/{name}"),
                file
            )
        );
    }
    Ok(if same { 0 } else { 1 })
}

/// `2026-12-05 04:22:15.123` from Unix milliseconds (UTC), without a date crate.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(1_796_445_617_110), "2026-12-05 04:40:17.110");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
