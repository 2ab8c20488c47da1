//! A test-only module that calls other commands the way any module may, through
//! `RedisModule_Call` without the script or ACL flags: `rmcall.call <command> [arg ...]`
//! replies whatever the command replied. tests/core.rs loads it next to RX to run RX
//! commands from inside another module's command (and from there inside MULTI/EXEC and
//! scripts). Built by `cargo build --release --examples`.

use redis_module::{raw, redis_module, Context, RedisError, RedisResult, RedisString, RedisValue};

fn call(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let command =
        std::ffi::CString::new(args[1].as_slice()).map_err(|_| RedisError::Str("bad name"))?;
    let rest: Vec<*mut raw::RedisModuleString> = args[2..].iter().map(|a| a.inner).collect();
    // SAFETY: the context and the argument strings are live for this command; the reply is
    // handed to the client and freed here.
    unsafe {
        let reply = raw::RedisModule_Call.unwrap()(
            ctx.ctx,
            command.as_ptr(),
            c"Ev".as_ptr(),
            rest.as_ptr(),
            rest.len(),
        );
        if reply.is_null() {
            return Err(RedisError::Str("NULL reply returned"));
        }
        raw::RedisModule_ReplyWithCallReply.unwrap()(ctx.ctx, reply);
        raw::RedisModule_FreeCallReply.unwrap()(reply);
    }
    Ok(RedisValue::NoReply)
}

redis_module! {
    name: "rmcall",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    commands: [
        ["rmcall.call", call, "", 0, 0, 0, ""],
    ],
}
