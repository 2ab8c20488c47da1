//! RX.KILL: stops the running function if it has not written, as FUNCTION KILL does.
//! It runs while a function is busy (allow-busy), from inside that function's yield.

use super::{command_callback, reply_ok};
use crate::error::{RxError, RxResult};
use crate::running::{self, RunKind, Stop};
use crate::server::Ctx;

command_callback!(rx_kill_cb, rx_kill);

/// RX.KILL
fn rx_kill(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 1 {
        return Err(RxError::wrong_arity("rx.kill"));
    }
    let Some(running) = running::current().filter(|r| r.kind == RunKind::Function) else {
        return Err(RxError::coded("NOTBUSY No scripts in execution right now."));
    };
    if running.wrote.get() {
        return Err(RxError::coded(
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ));
    }
    running.stop.set(Some(Stop::Killed));
    reply_ok(ctx);
    Ok(())
}
