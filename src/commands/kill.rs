//! RX.KILL: stops the running function if it has not written, as FUNCTION KILL does.
//! It runs while a function is busy (allow-busy), from inside that function's yield.

use super::{command_callback, reply_ok};
use crate::error::{RxError, RxResult};
use crate::ffi::Ctx;
use crate::running::{self, RunKind};

command_callback!(rx_kill_cb, rx_kill);

/// RX.KILL
fn rx_kill(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 1 {
        return Err(RxError::wrong_arity("rx.kill"));
    }
    running::kill(RunKind::Function).map_err(RxError::coded)?;
    reply_ok(ctx);
    Ok(())
}
