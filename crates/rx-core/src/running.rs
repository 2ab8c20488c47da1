//! The function running right now, for RX.KILL, busy replies and RX.STATS.

use quanta::Instant;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

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
    /// Why the run must stop, once something decided it must.
    pub stop: Cell<Option<Stop>>,
    /// Past the busy threshold: other clients are being told BUSY.
    pub busy: Cell<bool>,
}

impl Running {
    pub fn new(kind: RunKind, name: &str, started: Instant) -> Running {
        Running {
            kind,
            function: name.to_string(),
            command: Default::default(),
            started,
            wrote: Cell::new(false),
            stop: Cell::new(None),
            busy: Cell::new(false),
        }
    }

    /// A `Running` for a new call. The previous call's allocation is reused when nothing
    /// kept it, so a call allocates neither the `Rc` nor the name.
    pub fn for_call(kind: RunKind, name: &str, started: Instant) -> Rc<Running> {
        if let Some(mut spare) = SPARE.take() {
            if let Some(r) = Rc::get_mut(&mut spare) {
                r.kind = kind;
                r.function.clear();
                r.function.push_str(name);
                r.command.get_mut().clear();
                r.started = started;
                r.wrote.set(false);
                r.stop.set(None);
                r.busy.set(false);
                return spare;
            }
        }
        Rc::new(Running::new(kind, name, started))
    }

    /// Hands a finished call's `Running` back for the next `for_call`.
    pub fn recycle(done: Rc<Running>) {
        SPARE.set(Some(done));
    }

    /// The command that stops this kind of run.
    pub fn kill_command(&self) -> &'static str {
        match self.kind {
            RunKind::Function => "RX.KILL",
            RunKind::Script => "RX.SCRIPT KILL",
        }
    }

    /// What other clients are told while this run is busy (without the `BUSY` code).
    pub fn busy_message(&self) -> String {
        match self.kind {
            RunKind::Function => format!(
                "Redis is busy running the RX function '{}'. You can only call RX.KILL or SHUTDOWN NOSAVE.",
                self.function
            ),
            RunKind::Script => "Redis is busy running an RX script. You can only call RX.SCRIPT KILL or SHUTDOWN NOSAVE.".to_string(),
        }
    }

    /// The error the run's caller gets once it was stopped.
    pub fn stop_text(&self) -> Option<String> {
        Some(match self.stop.get()? {
            Stop::Killed => format!("ERR Script killed by user with {}...", self.kill_command()),
            Stop::TimeLimit { limit_ms } => {
                format!("ERR Script stopped after running longer than rx.time-limit-ms ({limit_ms} ms)")
            }
            Stop::Unyieldable {
                threshold_ms,
                place,
            } => format!(
                "ERR Script stopped after running longer than busy-reply-threshold ({threshold_ms} ms) {}, where Redis cannot serve other clients, so it could not be killed",
                place.describe()
            ),
        })
    }
}

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// RX.KILL or RX.SCRIPT KILL.
    Killed,
    /// `rx.time-limit-ms` passed before the run wrote anything.
    TimeLimit { limit_ms: i64 },
    /// `busy-reply-threshold` passed in a place where the server cannot let other clients
    /// in (so nobody could send a kill), before the run wrote anything.
    Unyieldable {
        threshold_ms: u64,
        place: UnyieldablePlace,
    },
}

/// Where a run cannot hand control back to the server to serve other clients: Redis
/// asserts (and aborts) if another client's command is processed while EXEC or a script
/// of its own is running, and a loading server or a replica applying its master's stream
/// must not take commands in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnyieldablePlace {
    Transaction,
    Script,
    Loading,
    MasterStream,
}

impl UnyieldablePlace {
    fn describe(self) -> &'static str {
        match self {
            UnyieldablePlace::Transaction => "inside MULTI/EXEC",
            UnyieldablePlace::Script => "inside a script",
            UnyieldablePlace::Loading => "while loading",
            UnyieldablePlace::MasterStream => "from the master's replication stream",
        }
    }
}

thread_local! {
    static RUNNING: RefCell<Option<Rc<Running>>> = const { RefCell::new(None) };
    static SPARE: Cell<Option<Rc<Running>>> = const { Cell::new(None) };
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

/// The run that is busy (past the busy threshold, serving other clients), if any.
pub fn busy() -> Option<Rc<Running>> {
    current().filter(|r| r.busy.get())
}

/// RX.KILL (`kind` Function) or RX.SCRIPT KILL (`kind` Script): stops the running
/// function or script if it has not written. The refusals are checked in Redis's order:
/// nothing running, then a run that wrote, then a run of the other kind (which only its
/// own kill command stops: the reply is the BUSY error that run gives others).
pub fn kill(kind: RunKind) -> Result<(), String> {
    let Some(r) = current() else {
        return Err("NOTBUSY No scripts in execution right now.".into());
    };
    if r.wrote.get() {
        return Err("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.".into());
    }
    if r.kind != kind {
        return Err(format!("BUSY {}", r.busy_message()));
    }
    r.stop.set(Some(Stop::Killed));
    Ok(())
}
