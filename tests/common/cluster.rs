//! A real Redis Cluster on loopback for the cluster tests: N `redis-server` processes with
//! `--cluster-enabled yes` and RX loaded, each in its own directory, joined with
//! `redis-cli --cluster create`. Nodes are stopped by their own process (or container) on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{module_mounts, ServerProcess};
use super::{free_port, fresh_dir, module_path, ping, Conn, Reply};

pub struct Node {
    child: Option<ServerProcess>,
    pub port: u16,
    pub bus_port: u16,
    pub dir: PathBuf,
}

impl Node {
    /// Starts a cluster-enabled node with RX (no bundled libraries) in a fresh directory.
    pub fn start() -> Node {
        let mut n = Node {
            child: None,
            port: 0,
            bus_port: 0,
            dir: fresh_dir(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        for _ in 0..5 {
            let (port, bus_port) = if self.port == 0 {
                (free_port(), free_port())
            } else {
                (self.port, self.bus_port)
            };
            let d = self.dir.to_string_lossy().to_string();
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &d,
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--enable-debug-command",
                "yes",
                "--logfile",
                &format!("{d}/redis.log"),
                "--loadmodule",
                module_path().to_str().unwrap(),
                "stdlib",
                "none",
            ]
            .iter()
            .map(|a| a.to_string())
            .chain(super::jit_module_args())
            .collect();
            let mut child =
                ServerProcess::spawn(&args, &[], &self.dir, &module_mounts(&module_path()));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.has_exited() {
                    break;
                }
                if ping(port) {
                    self.child = Some(child);
                    self.port = port;
                    self.bus_port = bus_port;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill();
            // A port taken meanwhile: try fresh ones (only for a first start).
            if self.port != 0 {
                break;
            }
        }
        panic!(
            "cluster node did not start; log:\n{}",
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn id(&self) -> String {
        self.conn()
            .q(&["CLUSTER", "MYID"])
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL, then start again on the same ports and directory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `masters` primaries with `replicas` replicas each, created with redis-cli and
    /// waited for until every node says `cluster_state:ok` and knows all the others.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        let total = masters * (1 + replicas);
        let nodes: Vec<Node> = (0..total).map(|_| Node::start()).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.addr()));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster { nodes };
        c.wait_ok(Duration::from_secs(30));
        c
    }

    /// Waits until every node is `cluster_state:ok` and knows every other node.
    pub fn wait_ok(&self, timeout: Duration) {
        let n = self.nodes.len();
        let start = Instant::now();
        loop {
            let ok = self.nodes.iter().all(|node| {
                let Ok(mut c) = Conn::try_connect(node.port) else {
                    return false;
                };
                let info = c.q(&["CLUSTER", "INFO"]);
                let text = info.as_str().unwrap_or_default().to_string();
                text.contains("cluster_state:ok")
                    && text.contains(&format!("cluster_known_nodes:{n}\r"))
            });
            if ok {
                return;
            }
            if start.elapsed() > timeout {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut c = n.conn();
                        format!(
                            "port {}:\n{}\n{}",
                            n.port,
                            c.q(&["CLUSTER", "INFO"]).as_str().unwrap_or_default(),
                            c.q(&["CLUSTER", "NODES"]).as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                panic!(
                    "cluster did not become ok within {timeout:?}:\n{}",
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node serving `slot` as primary.
    pub fn owner_of(&self, slot: u16) -> usize {
        let mut c = self.nodes[0].conn();
        let slots = c.q(&["CLUSTER", "SLOTS"]);
        for range in slots.as_array().unwrap() {
            let r = range.as_array().unwrap();
            let (lo, hi) = (r[0].as_int().unwrap(), r[1].as_int().unwrap());
            if (lo..=hi).contains(&(slot as i64)) {
                let port = r[2].as_array().unwrap()[1].as_int().unwrap() as u16;
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("no owner for slot {slot}");
    }

    /// Runs a command the way a cluster-aware client does: picks the node owning the
    /// first key's slot (`key` given), or node 0, and follows MOVED (at most 5 times).
    pub fn route(&self, key: Option<&[u8]>, args: &[&[u8]]) -> Reply {
        let mut port = match key {
            Some(k) => self.nodes[self.owner_of(key_slot(k))].port,
            None => self.nodes[0].port,
        };
        for _ in 0..5 {
            let r = Conn::connect(port).cmd(args);
            match &r {
                Reply::Error(e) if e.starts_with("MOVED ") => {
                    let addr = e.rsplit(' ').next().unwrap();
                    port = addr.rsplit(':').next().unwrap().parse().unwrap();
                }
                _ => return r,
            }
        }
        panic!("too many redirections for {args:?}");
    }

    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("--- node {i} (port {}):\n", n.port));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// CRC16-CCITT (XMODEM), as Redis Cluster uses for key slots.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, honouring `{hash tags}`.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key)) & 16383
}
