//! How a test server runs: a local process (the default), or a container when
//! `RX_TEST_DOCKER=1`.
//!
//! In a container the server is `redis-server` of the image `$RX_TEST_IMAGE` (default
//! `rx:test`, built by `make test` when `RX_TEST_DOCKER` is set), with the host's network
//! (`--network host`: same loopback ports), the test's directory bind-mounted at the same
//! path, and the module under test mounted read-only at its own path, so every argument
//! reads the same in both modes. The container is stopped and removed by id.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static CONTAINER_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Containers the tests start carry this label (so leftovers can be found and removed).
pub const CONTAINER_LABEL: &str = "rx-test=1";

pub fn docker_mode() -> bool {
    matches!(std::env::var("RX_TEST_DOCKER").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

fn test_image() -> String {
    std::env::var("RX_TEST_IMAGE").unwrap_or_else(|_| "rx:test".to_string())
}

/// A running (or exited) server.
pub enum ServerProcess {
    Local(Child),
    Container {
        id: String,
        /// Its exit code, once seen.
        exit_code: Option<i32>,
    },
}

impl ServerProcess {
    /// Starts the server with `args` (and `env`); `dir` is its data directory and
    /// `mounts` the other host paths it reads (read-only in a container).
    pub fn spawn(
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
        mounts: &[PathBuf],
    ) -> ServerProcess {
        if !docker_mode() {
            let child = Command::new(super::redis_server_bin())
                .args(args)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {}", super::redis_server_bin(), e));
            return ServerProcess::Local(child);
        }
        let name = format!(
            "rx-test-{}-{}",
            std::process::id(),
            CONTAINER_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // As the owner of the test directory, so that what the server writes there belongs
        // to whoever runs the tests and the directory can be removed afterwards.
        let owner = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir).expect("the test directory exists");
            format!("{}:{}", m.uid(), m.gid())
        };
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--detach", "--network", "host", "--name", &name])
            .args(["--label", CONTAINER_LABEL, "--entrypoint", "redis-server"])
            .args(["--user", &owner]);
        let dir = dir.to_string_lossy();
        cmd.arg("--volume").arg(format!("{dir}:{dir}"));
        for m in mounts {
            let m = m.to_string_lossy();
            cmd.arg("--volume").arg(format!("{m}:{m}:ro"));
        }
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(test_image()).args(args);
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker: {e}"));
        assert!(
            out.status.success(),
            "docker run {} failed: {}",
            test_image(),
            String::from_utf8_lossy(&out.stderr)
        );
        ServerProcess::Container {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            exit_code: None,
        }
    }

    /// The process id of a local server.
    pub fn pid(&self) -> Option<u32> {
        match self {
            ServerProcess::Local(c) => Some(c.id()),
            ServerProcess::Container { .. } => None,
        }
    }

    /// The id of a container.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            ServerProcess::Local(_) => None,
            ServerProcess::Container { id, .. } => Some(id),
        }
    }

    /// Whether the server has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        match self {
            ServerProcess::Local(c) => !matches!(c.try_wait(), Ok(None)),
            ServerProcess::Container { id, exit_code } => {
                if exit_code.is_some() {
                    return true;
                }
                // A busy engine can fail an inspect now and then: ask again before taking a
                // failure to mean the container is gone.
                for _ in 0..3 {
                    let out = docker(&[
                        "inspect",
                        "--format",
                        "{{.State.Running}} {{.State.ExitCode}}",
                        id,
                    ]);
                    match out.as_deref().map(str::trim) {
                        Some(s) if s.starts_with("true") => return false,
                        Some(s) => {
                            *exit_code = s.split(' ').nth(1).and_then(|c| c.parse().ok());
                            return true;
                        }
                        None => std::thread::sleep(std::time::Duration::from_millis(100)),
                    }
                }
                true
            }
        }
    }

    /// Waits for the server to exit; its exit code (a local process killed by a signal has
    /// none; a container reports 128 + the signal).
    pub fn wait(&mut self) -> Option<i32> {
        match self {
            ServerProcess::Local(c) => c.wait().ok().and_then(|s| s.code()),
            ServerProcess::Container { id, exit_code } => {
                if exit_code.is_none() {
                    *exit_code = docker(&["wait", id]).and_then(|s| s.trim().parse().ok());
                }
                *exit_code
            }
        }
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        match self {
            ServerProcess::Local(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            ServerProcess::Container { id, .. } => {
                let _ = docker(&["kill", "--signal", "KILL", id]);
                let _ = self.wait();
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let ServerProcess::Container { id, .. } = self {
            let _ = docker(&["rm", "--force", "--volumes", id]);
        }
    }
}

/// Runs a docker command; its standard output when it succeeded.
pub fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host paths a server with the module at `module` reads besides its directory: the
/// module's directory (the test modules of `target/release/examples` are under it), mounted
/// at its own path, so RX_MODULE_PATH should not point into a system directory.
pub fn module_mounts(module: &Path) -> Vec<PathBuf> {
    module.parent().map(Path::to_path_buf).into_iter().collect()
}
