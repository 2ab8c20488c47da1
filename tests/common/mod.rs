//! Test harness shared by the integration tests (std only).
//!
//! * [`Server`]: a throw-away `redis-server` (binary `$REDIS_SERVER`, else
//!   `redis-server` on PATH) on a free port in a fresh directory under
//!   `CARGO_TARGET_TMPDIR`, with the RX module loaded (`$RX_MODULE_PATH`, else
//!   `<manifest>/target/release/librx.so`) or without it (`start_native`).
//! * [`Conn`]: a RESP2/RESP3 client that can return the exact bytes of one
//!   reply frame (`raw`) or a parsed [`Reply`] (`cmd`, `q`).
#![allow(dead_code)]

/// The differential runner (native oracle versus RX), shared by tests/differential.rs
/// and tests/differential_eval.rs.
pub mod differential;

/// A real Redis Cluster of RX nodes, for tests/cluster.rs.
pub mod cluster;

/// Loading libraries both ways and reading map replies, for the stdlib tests.
pub mod stdlib;

/// A server as a local process, or as a container (`RX_TEST_DOCKER=1`).
pub mod process;
use process::{module_mounts, ServerProcess};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Read timeout of every connection: a hung server fails the test instead of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
const STARTUP_DEADLINE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 5;

pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Path of the module under test; panics with a hint when it has not been built.
/// `jit yes|no` from `RX_TEST_JIT`, for every server a test starts: the suite runs with
/// the JIT compiler on (the module's default) and, in CI, once more with it off.
pub fn jit_module_args() -> Vec<String> {
    match std::env::var("RX_TEST_JIT") {
        Ok(v) if !v.is_empty() => vec!["jit".into(), v],
        _ => Vec::new(),
    }
}

pub fn module_path() -> PathBuf {
    let p = match std::env::var("RX_MODULE_PATH") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/librx.so"),
    };
    if !p.exists() {
        panic!(
            "RX module not found at {}: run `cargo build --release` first (or set RX_MODULE_PATH)",
            p.display()
        );
    }
    p
}

fn fresh_dir() -> PathBuf {
    let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("redis")
        .join(format!("srv-{}-{}-{}", std::process::id(), n, t));
    std::fs::create_dir_all(&dir).expect("create server dir");
    dir
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

pub struct Server {
    child: Option<ServerProcess>,
    port: u16,
    dir: PathBuf,
    server_args: Vec<String>,
    module_args: Vec<String>,
    with_module: bool,
    /// Environment variables for the server process.
    env: Vec<(String, String)>,
}

impl Server {
    /// Server with the RX module loaded, no module arguments.
    pub fn start() -> Server {
        Server::start_with(&[], &[])
    }

    /// Server with the RX module loaded with `module_args`, plus extra `server_args`
    /// (e.g. `&["--maxmemory", "10mb"]`).
    pub fn start_with(server_args: &[&str], module_args: &[&str]) -> Server {
        Server::launch(server_args, module_args, true)
    }

    /// Server without the RX module (native Redis only).
    pub fn start_native(server_args: &[&str]) -> Server {
        Server::launch(server_args, &[], false)
    }

    /// Server with the RX module, and these environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let mut s = Server::new(&[], &[], true);
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.spawn(None);
        s
    }

    fn new(server_args: &[&str], module_args: &[&str], with_module: bool) -> Server {
        Server {
            child: None,
            port: 0,
            dir: fresh_dir(),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            module_args: module_args.iter().map(|s| s.to_string()).collect(),
            with_module,
            env: Vec::new(),
        }
    }

    fn launch(server_args: &[&str], module_args: &[&str], with_module: bool) -> Server {
        let mut s = Server::new(server_args, module_args, with_module);
        s.spawn(None);
        s
    }

    fn build_args(&self, port: u16) -> Vec<String> {
        let d = self.dir.to_string_lossy().to_string();
        let mut a: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            d.clone(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--enable-debug-command".into(),
            "yes".into(),
            "--enable-module-command".into(),
            "yes".into(),
            "--logfile".into(),
            format!("{}/redis.log", d),
        ];
        if self.with_module {
            a.push("--loadmodule".into());
            a.push(module_path().to_string_lossy().to_string());
            a.extend(self.module_args.iter().cloned());
            if !self
                .module_args
                .iter()
                .any(|m| m.eq_ignore_ascii_case("jit"))
            {
                a.extend(jit_module_args());
            }
            // Tests load the libraries they need; the bundled ones only when asked for.
            if !self
                .module_args
                .iter()
                .any(|m| m.eq_ignore_ascii_case("stdlib"))
            {
                a.push("stdlib".into());
                a.push("none".into());
            }
        }
        a.extend(self.server_args.iter().cloned());
        a
    }

    /// Start the process; `preferred_port` is tried first (restart), then fresh free ports.
    fn spawn(&mut self, preferred_port: Option<u16>) {
        let mut last_err = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let port = match (attempt, preferred_port) {
                (0, Some(p)) => p,
                _ => free_port(),
            };
            let log_path = self.dir.join("redis.log");
            let log_offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            let mut child =
                ServerProcess::spawn(&self.build_args(port), &self.env, &self.dir, &self.mounts());
            let deadline = Instant::now() + STARTUP_DEADLINE;
            let mut up = false;
            let mut exited = false;
            while Instant::now() < deadline {
                if child.has_exited() {
                    exited = true;
                    break;
                }
                if ping(port) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                self.child = Some(child);
                self.port = port;
                return;
            }
            // Also when it looked exited: a container whose state could not be read is
            // killed rather than waited for.
            child.kill();
            let log = std::fs::read(&log_path)
                .map(|b| {
                    String::from_utf8_lossy(&b[(log_offset as usize).min(b.len())..]).to_string()
                })
                .unwrap_or_default();
            if log.contains("Address already in use") || log.contains("Could not create server TCP")
            {
                last_err = log;
                continue;
            }
            panic!(
                "redis-server {} (port {}, dir {}); log:\n{}",
                if exited {
                    "exited during startup".to_string()
                } else {
                    format!("did not answer PING within {:?}", STARTUP_DEADLINE)
                },
                port,
                self.dir.display(),
                log
            );
        }
        panic!(
            "redis-server could not find a free port after {} attempts; last log:\n{}",
            PORT_ATTEMPTS, last_err
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whole contents of the server log file.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("redis.log"))
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .unwrap_or_default()
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// Is the process still running?
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !c.has_exited(),
            None => false,
        }
    }

    /// The running server process (or container).
    pub fn process(&self) -> Option<&ServerProcess> {
        self.child.as_ref()
    }

    /// What the server reads besides its directory: the module's directory.
    fn mounts(&self) -> Vec<PathBuf> {
        if self.with_module {
            module_mounts(&module_path())
        } else {
            Vec::new()
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Kill (SIGKILL) and start again with the same directory and arguments
    /// (same port when it is still free).
    pub fn restart(&mut self) {
        self.kill();
        let p = self.port;
        self.spawn(Some(p));
    }

    /// Graceful restart: SHUTDOWN (with SAVE when `save`, else NOSAVE), then start again.
    pub fn restart_graceful(&mut self, save: bool) {
        self.shutdown_inner(save);
        let p = self.port;
        self.spawn(Some(p));
    }

    fn shutdown_inner(&mut self, save: bool) {
        if self.child.is_none() {
            return;
        }
        if let Ok(mut c) = Conn::try_connect(self.port) {
            let _ = c.send(&[
                &b"SHUTDOWN"[..],
                if save { &b"SAVE"[..] } else { &b"NOSAVE"[..] },
            ]);
            let _ = c.read_frame();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if c.has_exited() {
                    break;
                }
                if Instant::now() > deadline {
                    c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// SHUTDOWN NOSAVE, wait for the process, then clean up.
    pub fn stop(mut self) {
        self.shutdown_inner(false);
    }

    pub fn shutdown(self) {
        self.stop()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // Keep the directory (with its log) when a test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ping(port: u16) -> bool {
    match Conn::try_connect(port) {
        Ok(mut c) => {
            c.stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .ok();
            matches!(c.try_raw(&[b"PING"]), Ok(ref r) if r == b"+PONG\r\n")
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Replies

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(String),
    Bool(bool),
    BigNumber(String),
    Verbatim(String, Vec<u8>),
}

impl Reply {
    /// Text of a status, bulk (if UTF-8), verbatim, double or big number reply.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Double(s) | Reply::BigNumber(s) => Some(s),
            Reply::Bulk(b) | Reply::Verbatim(_, b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) | Reply::Set(v) => Some(v),
            _ => None,
        }
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }
    pub fn err_text(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
    /// Panics with the reply when it is an error; returns self otherwise.
    pub fn ok(self) -> Reply {
        if let Reply::Error(e) = &self {
            panic!("unexpected error reply: {}", e);
        }
        self
    }
}

/// Parse exactly one frame (as returned by [`Conn::raw`]). Attributes are dropped.
pub fn parse_reply(bytes: &[u8]) -> Reply {
    let mut pos = 0;
    let r = parse_at(bytes, &mut pos)
        .unwrap_or_else(|e| panic!("bad RESP ({}): {}", e, escape_bytes(bytes)));
    r
}

fn line_at<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let start = *pos;
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'\r' && b[i + 1] == b'\n' {
            *pos = i + 2;
            return Ok(&b[start..i]);
        }
        i += 1;
    }
    Err("unterminated line".into())
}

fn num(l: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(l)))
}

fn blob_at(b: &[u8], pos: &mut usize, len: i64) -> Result<Vec<u8>, String> {
    let len = len as usize;
    if *pos + len + 2 > b.len() {
        return Err("short blob".into());
    }
    let v = b[*pos..*pos + len].to_vec();
    *pos += len + 2;
    Ok(v)
}

fn parse_at(b: &[u8], pos: &mut usize) -> Result<Reply, String> {
    if *pos >= b.len() {
        return Err("empty".into());
    }
    let t = b[*pos];
    *pos += 1;
    let l = line_at(b, pos)?;
    let text = || String::from_utf8_lossy(l).to_string();
    Ok(match t {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(num(l)?),
        b',' => Reply::Double(text()),
        b'(' => Reply::BigNumber(text()),
        b'#' => Reply::Bool(l == b"t"),
        b'_' => Reply::Nil,
        b'$' => {
            let n = num(l)?;
            if n < 0 {
                Reply::Nil
            } else {
                Reply::Bulk(blob_at(b, pos, n)?)
            }
        }
        b'!' => {
            let n = num(l)?;
            Reply::Error(String::from_utf8_lossy(&blob_at(b, pos, n)?).to_string())
        }
        b'=' => {
            let n = num(l)?;
            let v = blob_at(b, pos, n)?;
            if v.len() >= 4 && v[3] == b':' {
                Reply::Verbatim(
                    String::from_utf8_lossy(&v[..3]).to_string(),
                    v[4..].to_vec(),
                )
            } else {
                Reply::Verbatim(String::new(), v)
            }
        }
        b'*' | b'~' | b'>' => {
            let n = num(l)?;
            if n < 0 {
                Reply::Nil
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(parse_at(b, pos)?);
                }
                if t == b'~' {
                    Reply::Set(v)
                } else {
                    Reply::Array(v)
                }
            }
        }
        b'%' => {
            let n = num(l)?;
            let mut v = Vec::new();
            for _ in 0..n {
                let k = parse_at(b, pos)?;
                let val = parse_at(b, pos)?;
                v.push((k, val));
            }
            Reply::Map(v)
        }
        b'|' => {
            let n = num(l)?;
            for _ in 0..n * 2 {
                parse_at(b, pos)?;
            }
            parse_at(b, pos)?
        }
        _ => return Err(format!("unknown type byte {:?}", t as char)),
    })
}

/// Printable form of raw bytes: printable ASCII kept, `\r\n` etc. escaped.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{:02x}", c)),
        }
    }
    s
}

/// Encode one command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------------------
// Connection

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// Raw bytes of every `>` push frame received so far (not returned by `raw`).
    pub pushes: Vec<Vec<u8>>,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        Conn::try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{}: {}", port, e))
    }

    pub fn try_connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true).ok();
        Ok(Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            pushes: Vec::new(),
        })
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).ok();
    }

    /// Send one command without reading the reply.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<()> {
        self.stream.write_all(&encode_command(args))
    }

    /// Send raw bytes (e.g. an inline command or a malformed request).
    pub fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Read one line (without CRLF) from the buffer, appending line+CRLF to `out`.
    fn read_line(&mut self, out: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
        let mut scan = self.pos;
        loop {
            if let Some(i) = self.buf[scan..].windows(2).position(|w| w == b"\r\n") {
                let end = scan + i;
                let line = self.buf[self.pos..end].to_vec();
                out.extend_from_slice(&self.buf[self.pos..end + 2]);
                self.pos = end + 2;
                return Ok(line);
            }
            scan = self.buf.len().saturating_sub(1).max(self.pos);
            self.fill()?;
        }
    }

    fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(())
    }

    fn read_frame_into(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let line = self.read_line(out)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        if line.is_empty() {
            return Err(bad("empty frame header"));
        }
        let n = || -> std::io::Result<i64> {
            std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| {
                    bad(&format!(
                        "bad length in {:?}",
                        String::from_utf8_lossy(&line)
                    ))
                })
        };
        match line[0] {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(()),
            b'$' | b'!' | b'=' => {
                let n = n()?;
                if n >= 0 {
                    self.read_exact_into(n as usize + 2, out)?;
                }
                Ok(())
            }
            b'*' | b'~' | b'>' => {
                let n = n()?;
                for _ in 0..n.max(0) {
                    self.read_frame_into(out)?;
                }
                Ok(())
            }
            b'%' | b'|' => {
                let n = n()?;
                for _ in 0..n.max(0) * 2 {
                    self.read_frame_into(out)?;
                }
                if line[0] == b'|' {
                    // An attribute annotates the reply that follows it: include it.
                    self.read_frame_into(out)?;
                }
                Ok(())
            }
            c => Err(bad(&format!("unknown RESP type byte {:?}", c as char))),
        }
    }

    /// Read the exact bytes of the next reply frame; push frames (`>`) are stored
    /// in `self.pushes` and skipped.
    pub fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut out = Vec::new();
            self.read_frame_into(&mut out)?;
            if out.first() == Some(&b'>') {
                self.pushes.push(out);
                continue;
            }
            return Ok(out);
        }
    }

    /// Send one command and return the exact bytes of its reply, or an I/O error
    /// (connection lost, timeout).
    pub fn try_raw<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Vec<u8>> {
        self.send(args)?;
        self.read_frame()
    }

    /// Send one command followed by `ECHO <fence>`, and return every byte the server sent
    /// before the fence's reply, however many frames (or malformed bytes) that is. For a
    /// command whose reply may not be one well-formed frame (a server that lets CR/LF from
    /// a script's error reach the wire sends two); the connection stays in sync. `fence`
    /// must be unique, and the connection must be allowed `ECHO` and not be in MULTI.
    pub fn try_raw_fenced<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        fence: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let mut out = encode_command(args);
        out.extend_from_slice(&encode_command(&[&b"ECHO"[..], fence]));
        self.stream.write_all(&out)?;
        let mut reply = format!("${}\r\n", fence.len()).into_bytes();
        reply.extend_from_slice(fence);
        reply.extend_from_slice(b"\r\n");
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut scan = 0;
        loop {
            if let Some(i) = self.buf[scan..]
                .windows(reply.len())
                .position(|w| w == reply.as_slice())
            {
                let got = self.buf[..scan + i].to_vec();
                self.buf.drain(..scan + i + reply.len());
                return Ok(got);
            }
            scan = self.buf.len().saturating_sub(reply.len() - 1);
            self.fill()?;
        }
    }

    /// Send one command and return the exact bytes of its reply.
    pub fn raw<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.try_raw(args).unwrap_or_else(|e| {
            panic!(
                "I/O error on {:?}: {}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).to_string())
                    .collect::<Vec<_>>(),
                e
            )
        })
    }

    /// Send one command and return its parsed reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        parse_reply(&self.raw(args))
    }

    /// `cmd` taking `&str` arguments.
    pub fn q(&mut self, args: &[&str]) -> Reply {
        self.cmd(args)
    }

    /// Send all commands at once, then read one reply per command (exact bytes).
    pub fn pipeline(&mut self, cmds: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in &cmds {
            out.extend_from_slice(&encode_command(c));
        }
        self.stream.write_all(&out).expect("pipeline write");
        cmds.iter()
            .map(|_| self.read_frame().expect("pipeline read"))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Waiting and INFO helpers shared by the test files

/// The value of `field` in `INFO <section>`.
pub fn info_field(c: &mut Conn, section: &str, field: &str) -> Option<String> {
    let info = c.q(&["INFO", section]);
    let text = String::from_utf8_lossy(info.as_bytes().unwrap_or_default()).into_owned();
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

/// Polls `f` every 20 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs redis-server with RX in `dir` and `module_args` until it exits (for start-ups that
/// must fail); returns whether it exited successfully and its log.
pub fn run_to_exit(dir: &Path, module_args: &[&str]) -> (bool, String) {
    let log = dir.join("redis.log");
    let port = free_port().to_string();
    let mut args: Vec<String> = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--dir",
        dir.to_str().unwrap(),
        "--save",
        "",
        "--logfile",
        log.to_str().unwrap(),
        "--loadmodule",
        module_path().to_str().unwrap(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(module_args.iter().map(|a| a.to_string()));
    let mut server = ServerProcess::spawn(&args, &[], dir, &module_mounts(&module_path()));
    let code = server.wait();
    (
        code == Some(0),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// SHA-1 (a small implementation: the tests have no dependencies), as 20 bytes.
pub fn sha1(b: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = b.to_vec();
    let bits = (b.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut bb, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((bb & c) | (!bb & d), 0x5A827999),
                20..=39 => (bb ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((bb & c) | (bb & d) | (c & d), 0x8F1BBCDC),
                _ => (bb ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = bb.rotate_left(30);
            bb = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, bb, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// SHA-1 in lowercase hex, as RX.LIST shows library digests.
pub fn sha1_hex(b: &[u8]) -> String {
    sha1(b).iter().map(|x| format!("{x:02x}")).collect()
}
