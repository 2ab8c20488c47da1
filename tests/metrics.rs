//! INFO rx in Prometheus: Debian's `prometheus-redis-exporter` runs
//! contrib/prometheus/rx_info.lua on a server with RX (its `-script` option: the file is run
//! with EVAL on every scrape), and its /metrics carry every INFO rx number, per function and
//! per EVAL script; the Grafana dashboard (contrib/grafana/rx-dashboard.json) asks for series
//! that exist.
//!
//! The exporter is `$PROMETHEUS_REDIS_EXPORTER`, else `prometheus-redis-exporter` on PATH
//! (`make test` installs the Debian package). Without it the test fails; it never skips.

mod common;

use common::{Conn, Reply, Server};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXPORTER_ATTEMPTS: usize = 5;
const EXPORTER_DEADLINE: Duration = Duration::from_secs(15);

fn exporter_bin() -> String {
    std::env::var("PROMETHEUS_REDIS_EXPORTER")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "prometheus-redis-exporter".to_string())
}

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A running exporter, killed and reaped on drop.
struct Exporter {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Exporter {
    /// Starts the exporter on a free loopback port, pointed at `server` with the RX script,
    /// and waits until it serves /metrics.
    fn start(server: &Server) -> Exporter {
        let bin = exporter_bin();
        let script = contrib("prometheus/rx_info.lua");
        assert!(script.exists(), "{} is missing", script.display());
        let mut last_log = String::new();
        for attempt in 0..EXPORTER_ATTEMPTS {
            let port = free_port();
            let log = server.dir().join(format!("exporter-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("exporter log");
            let child = Command::new(&bin)
                .arg("-redis.addr")
                .arg(format!("redis://127.0.0.1:{}", server.port()))
                .arg("-web.listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-script")
                .arg(&script)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {bin}: {e}. It is Debian 12's prometheus-redis-exporter \
                         package, which `make test` installs (TEST_DEB_PACKAGES in the \
                         Makefile); or `apt-get install prometheus-redis-exporter`, or name \
                         another binary with PROMETHEUS_REDIS_EXPORTER"
                    )
                });
            let mut e = Exporter { child, port, log };
            let deadline = Instant::now() + EXPORTER_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = e.child.try_wait() {
                    last_log = format!("exited with {status}:\n{}", e.log_text());
                    break;
                }
                if let Ok((200, _)) = http_get(port, "/metrics") {
                    return e;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if last_log.contains("address already in use") {
                continue;
            }
            panic!(
                "{bin} did not serve /metrics on port {port} within {EXPORTER_DEADLINE:?}; \
                 {last_log}{}",
                e.log_text()
            );
        }
        panic!("{bin} found no free port in {EXPORTER_ATTEMPTS} attempts; last: {last_log}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One scrape of /metrics, as the samples it holds.
    fn scrape(&self) -> Scrape {
        let (status, body) = http_get(self.port, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}; log:\n{}", self.log_text()));
        assert_eq!(status, 200, "GET /metrics:\n{body}");
        Scrape::parse(&body)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: the status and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// One sample of the text exposition format: `name{label="v",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Scrape {
    samples: Vec<Sample>,
    body: String,
}

impl Scrape {
    fn parse(body: &str) -> Scrape {
        let samples = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("bad sample line {line:?}"));
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let inner = rest
                            .strip_suffix('}')
                            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                        (name.to_string(), parse_labels(inner, line))
                    }
                };
                Sample {
                    name,
                    labels,
                    value,
                }
            })
            .collect();
        Scrape {
            samples,
            body: body.to_string(),
        }
    }

    /// The one sample named `name`, whatever its labels.
    fn value(&self, name: &str) -> f64 {
        let found: Vec<&Sample> = self.samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}\n{}", self.body);
        found[0].value
    }

    /// What the RX script returned: `redis_script_values`, by its `key` label.
    fn script_values(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == "redis_script_values")
        {
            let key = s.labels.get("key").unwrap_or_else(|| panic!("{s:?}"));
            assert!(
                out.insert(key.clone(), s.value).is_none(),
                "{key} twice in the scrape"
            );
        }
        out
    }
}

/// `a="x",b="y"` (values without escapes: the exporter's labels here need none).
fn parse_labels(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let (value, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        assert!(!value.contains('\\'), "escaped label value in {line:?}");
        labels.insert(name.to_string(), value.to_string());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

/// INFO rx as the exporter should show it through rx_info.lua: `rx_<field>` for the plain
/// fields, `rx_fn:<name>:<field>` and `rx_script:<sha1>:<field>` for the entry lines.
fn info_rx_as_series(c: &mut Conn) -> BTreeMap<String, f64> {
    let info = c.q(&["INFO", "rx"]);
    let text = String::from_utf8_lossy(info.as_bytes().expect("INFO rx")).into_owned();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let entry = key
            .strip_prefix("rx_fn_")
            .map(|n| ("rx_fn", n))
            .or_else(|| key.strip_prefix("rx_script_").map(|s| ("rx_script", s)));
        match entry {
            Some((kind, name)) => {
                for kv in value.trim().split(',') {
                    let (field, v) = kv.split_once('=').expect(line);
                    out.insert(format!("{kind}:{name}:{field}"), v.parse().expect(line));
                }
            }
            None => {
                out.insert(key.to_string(), value.trim().parse().expect(line));
            }
        }
    }
    out
}

const LIB: &str = "#!lua name=shop
redis.register_function('hit', function(keys) return redis.call('INCR', keys[1]) end)
redis.register_function('fail', function() return redis.error_reply('ERR out of stock') end)
redis.register_function{function_name='peek', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}
redis.register_function('idle', function() return 1 end)
";

const COUNT_SCRIPT: &str = "return redis.call('INCR', KEYS[1])";
const FAIL_SCRIPT: &str = "return redis.error_reply('WRONGTYPE made up')";
const WRITER_SCRIPT: &str = "#!lua\nreturn redis.call('SET', KEYS[1], 'x')";
const RO_TEXT: &str = "ERR Can not execute a script with write flag using *_ro command.";

fn ok_int(r: Reply) -> i64 {
    r.as_int()
        .unwrap_or_else(|| panic!("expected an integer, got {r:?}"))
}

#[test]
fn exporter_scrapes_info_rx_per_function_and_per_script() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(c.q(&["RX.LOAD", LIB]).as_str(), Some("shop"));
    // Functions: hit 5 calls (5 redis.call) and 1 refusal, fail 2 errors, peek 1 call.
    for i in 1..=5 {
        assert_eq!(ok_int(c.q(&["RX.CALL", "hit", "1", "n"])), i);
    }
    for _ in 0..2 {
        assert_eq!(
            c.q(&["RX.CALL", "fail", "0"]).err_text(),
            Some("ERR out of stock")
        );
    }
    assert_eq!(c.q(&["RX.CALL", "peek", "1", "n"]).as_str(), Some("5"));
    assert_eq!(
        c.q(&["RX.CALL_RO", "hit", "1", "n"]).err_text(),
        Some("ERR Can not execute a script with write flag using *_ro command.")
    );
    // Scripts: count 3 calls, fail 1 error, writer 1 call and 1 refusal.
    let count = common::sha1_hex(COUNT_SCRIPT.as_bytes());
    let fail = common::sha1_hex(FAIL_SCRIPT.as_bytes());
    let writer = common::sha1_hex(WRITER_SCRIPT.as_bytes());
    for i in 1..=3 {
        assert_eq!(ok_int(c.q(&["RX.EVAL", COUNT_SCRIPT, "1", "m"])), i);
    }
    assert_eq!(
        c.q(&["RX.EVAL", FAIL_SCRIPT, "0"]).err_text(),
        Some("WRONGTYPE made up")
    );
    assert!(!c.q(&["RX.EVAL", WRITER_SCRIPT, "1", "w"]).is_error());
    assert_eq!(
        c.q(&["RX.EVALSHA_RO", &writer, "1", "w"]).err_text(),
        Some(RO_TEXT)
    );

    let e = Exporter::start(&s);
    let scrape = e.scrape();
    assert_eq!(scrape.value("redis_up"), 1.0, "{}", e.log_text());
    assert_eq!(
        scrape.value("redis_exporter_last_scrape_error"),
        0.0,
        "the exporter reports a scrape error (the script failed?):\n{}",
        scrape.body
    );
    let got = scrape.script_values();
    let want = info_rx_as_series(&mut c);
    // Every INFO rx number, and nothing else, under the same name. The VM's memory is
    // compared by presence only: it is the one number not frozen between the two reads.
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "series from rx_info.lua vs INFO rx"
    );
    for (k, w) in &want {
        if k != "rx_vm_memory_bytes" {
            assert_eq!(got[k], *w, "{k}: scraped vs INFO rx");
        }
    }
    assert!(got["rx_vm_memory_bytes"] > 0.0);
    // The exact numbers.
    let series = |name: &str, field: &str| {
        got.get(&format!("{name}:{field}"))
            .copied()
            .unwrap_or_else(|| panic!("no series {name}:{field} in\n{}", scrape.body))
    };
    for (name, calls, errors, refusals, redis_calls) in [
        ("rx_fn:hit".to_string(), 5.0, 0.0, 1.0, 5.0),
        ("rx_fn:fail".to_string(), 2.0, 2.0, 0.0, 0.0),
        ("rx_fn:peek".to_string(), 1.0, 0.0, 0.0, 1.0),
        ("rx_fn:idle".to_string(), 0.0, 0.0, 0.0, 0.0),
        (format!("rx_script:{count}"), 3.0, 0.0, 0.0, 3.0),
        (format!("rx_script:{fail}"), 1.0, 1.0, 0.0, 0.0),
        (format!("rx_script:{writer}"), 1.0, 0.0, 1.0, 1.0),
    ] {
        let name = name.as_str();
        assert_eq!(
            [
                series(name, "calls"),
                series(name, "errors"),
                series(name, "refusals"),
                series(name, "redis_calls")
            ],
            [calls, errors, refusals, redis_calls],
            "{name}: calls, errors, refusals, redis_calls"
        );
        let (p50, p99, p999, max) = (
            series(name, "p50_usec"),
            series(name, "p99_usec"),
            series(name, "p999_usec"),
            series(name, "max_usec"),
        );
        if calls > 0.0 {
            assert!(
                0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
                "{name}: p50 {p50}, p99 {p99}, p999 {p999}, max {max}"
            );
            assert!(series(name, "usec") >= max, "{name}");
        } else {
            assert_eq!([p50, p99, p999, max], [0.0; 4], "{name}");
        }
    }
    for (total, v) in [
        ("rx_calls", 13.0),
        ("rx_errors", 3.0),
        ("rx_refusals", 2.0),
        ("rx_libraries", 1.0),
        ("rx_functions", 4.0),
        ("rx_scripts", 3.0),
        ("rx_aof_rewrite_keeps_libraries", 1.0),
    ] {
        assert_eq!(got[total], v, "{total}");
    }

    // The next scrape follows new calls.
    for _ in 0..2 {
        c.q(&["RX.CALL", "hit", "1", "n"]);
        c.q(&["RX.EVALSHA", &count, "1", "m"]);
    }
    let again = e.scrape().script_values();
    assert_eq!(again["rx_fn:hit:calls"], 7.0);
    assert_eq!(again[&format!("rx_script:{count}:calls")], 5.0);
    assert_eq!(again["rx_calls"], 17.0);

    // Every series the Grafana dashboard selects is one the exporter serves.
    dashboard_selects_scraped_series(&again, "hit", &count);
}

/// The `key` matchers of contrib/grafana/rx-dashboard.json, with `$function` and `$script`
/// set to `function` and `script`, each match at least one scraped series.
fn dashboard_selects_scraped_series(got: &BTreeMap<String, f64>, function: &str, script: &str) {
    let path = contrib("grafana/rx-dashboard.json");
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut matchers = Vec::new();
    for start in ["key=\\\"", "key=~\\\""] {
        for (at, _) in json.match_indices(start) {
            let rest = &json[at + start.len()..];
            let end = rest.find("\\\"").expect("a closed key matcher");
            matchers.push(rest[..end].to_string());
        }
    }
    assert!(matchers.len() > 20, "{matchers:?}");
    for m in &matchers {
        let concrete = m
            .replace("(${function})", function)
            .replace("(${script})", script);
        // A matcher is a literal, or a literal around one `.+`.
        let matches = |key: &str| match concrete.split_once(".+") {
            None => key == concrete,
            Some((head, tail)) => {
                key.len() > head.len() + tail.len() && key.starts_with(head) && key.ends_with(tail)
            }
        };
        assert!(
            got.keys().any(|k| matches(k)),
            "the dashboard's key matcher {m:?} selects no scraped series"
        );
    }
}
