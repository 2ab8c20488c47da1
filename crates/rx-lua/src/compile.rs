//! Compiling Lua 5.1 source: EVAL bodies and library code, read as Lua 5.1 reads them
//! (`lua_source`), text only.

use super::*;

impl LuaEngine {
    /// Compiles an EVAL script body in the EVAL environment. A shebang line is blanked (it is
    /// not Lua) so line numbers stay those of the script, as in Redis.
    pub(crate) fn compile_script(&self, body: &[u8]) -> Result<LuaCallable, Vec<u8>> {
        // LuaJIT skips a leading `#` line and reads bytecode; Lua 5.1, as Redis runs it, sees
        // a syntax error in both.
        let prefix = &b"ERR Error compiling script (new function): "[..];
        let unexpected = b"user_script:1: unexpected symbol near";
        match body.first() {
            Some(b'#') if !body.starts_with(b"#!") => {
                return Err([prefix, unexpected, b" '#'"].concat())
            }
            Some(27) => return Err([prefix, unexpected, b" 'char(27)'"].concat()),
            _ => {}
        }
        let code: &[u8] = if body.starts_with(b"#!") {
            body.iter()
                .position(|&b| b == b'\n')
                .map_or(&b""[..], |nl| &body[nl..])
        } else {
            body
        };
        let function = self
            .compile(code, c"@user_script", &self.eval_env)
            .map_err(|e| [prefix, &e].concat())?;
        let callable = self
            .callable(function, None)
            .map_err(|e| [prefix, lua_error_message(&e).as_bytes()].concat())?;
        // The parameter analysis now, as part of compiling (as a native SCRIPT LOAD compiles),
        // not in the script's first call: a script is compiled to be run.
        self.shape(&callable, CallKind::Script);
        Ok(callable)
    }

    /// Compiles Lua 5.1 source (see `lua_source`), text only, into a function running in
    /// `env`. The error is Lua 5.1's message, as bytes (it may quote any byte of the code).
    pub(crate) fn compile(
        &self,
        code: &[u8],
        chunk_name: &CStr,
        env: &Table,
    ) -> Result<Function, Vec<u8>> {
        let prepared =
            crate::lua_source::prepare(code, crate::dialect::current().refuse_nested_long_brackets);
        if let Some(refusal) = prepared.refusal {
            return Err(refusal);
        }
        prepared.compile_closed(
            |code| self.load_text(code, chunk_name, env),
            // The wrapper runs three instructions (no check, no call out) and returns the
            // function; its environment is the wrapper's.
            |wrapper| {
                wrapper
                    .call::<Function>(())
                    .map_err(|e| Some(lua_error_message(&e).into_bytes()))
            },
            drop,
        )
    }

    /// Compiles `code` as it is, text only, into a function running in `env`; the error is
    /// LuaJIT's message (`None`: not even that could be had).
    fn load_text(
        &self,
        code: &[u8],
        chunk_name: &CStr,
        env: &Table,
    ) -> Result<Function, Option<Vec<u8>>> {
        let mut failed: Option<Vec<u8>> = None;
        // SAFETY: inside mlua's protected call, with the environment pushed as the one
        // argument; the buffer and name outlive it. Exactly one value is left as the result:
        // the function (its environment set), or nil once the message is copied out.
        let compiled = unsafe {
            self.lua.exec_raw::<Option<Function>>(env, |l| {
                let status = ffi::luaL_loadbufferx(
                    l,
                    code.as_ptr().cast(),
                    code.len(),
                    chunk_name.as_ptr(),
                    c"t".as_ptr(),
                );
                if status == 0 {
                    ffi::lua_pushvalue(l, -2);
                    ffi::lua_setfenv(l, -2);
                    ffi::lua_remove(l, -2);
                } else {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, -1, &mut len);
                    failed = Some(if p.is_null() {
                        b"not enough memory".to_vec()
                    } else {
                        std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
                    });
                    ffi::lua_settop(l, 0);
                    ffi::lua_pushnil(l);
                }
            })
        };
        match (compiled, failed) {
            (Ok(Some(f)), _) => Ok(f),
            (_, Some(message)) => Err(Some(message)),
            (Err(e), None) => Err(Some(lua_error_message(&e).into_bytes())),
            (Ok(None), None) => Err(None),
        }
    }
}
