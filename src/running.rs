//! The function running right now, for RX.KILL, busy replies and RX.STATS.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

/// What is running: RX.KILL stops functions, RX.SCRIPT KILL stops scripts, as in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Function,
    Script,
}

pub struct Running {
    pub kind: RunKind,
    /// The function's name, or the script's SHA1.
    pub function: String,
    /// The command and arguments that started it, for `running_script`; copied only when
    /// the function turns busy (the only time anyone can look).
    pub command: RefCell<Vec<Vec<u8>>>,
    pub started: Instant,
    /// A write command ran: the function can no longer be killed.
    pub wrote: Cell<bool>,
    pub kill_requested: Cell<bool>,
    pub timed_out: Cell<bool>,
    /// Past the busy threshold: other clients are being told BUSY.
    pub busy: Cell<bool>,
}

impl Running {
    pub fn new(kind: RunKind, name: &str) -> Running {
        Running {
            kind,
            function: name.to_string(),
            command: Default::default(),
            started: Instant::now(),
            wrote: Cell::new(false),
            kill_requested: Cell::new(false),
            timed_out: Cell::new(false),
            busy: Cell::new(false),
        }
    }

    /// The command that stops this kind of run.
    pub fn kill_command(&self) -> &'static str {
        match self.kind {
            RunKind::Function => "RX.KILL",
            RunKind::Script => "RX.SCRIPT KILL",
        }
    }
}

thread_local! {
    static RUNNING: RefCell<Option<Rc<Running>>> = const { RefCell::new(None) };
}

/// Marks `running` as the running function until the guard drops.
pub struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| r.borrow_mut().take());
    }
}

pub fn start(running: Rc<Running>) -> RunningGuard {
    RUNNING.with(|r| *r.borrow_mut() = Some(running));
    RunningGuard
}

pub fn current() -> Option<Rc<Running>> {
    RUNNING.with(|r| r.borrow().clone())
}
