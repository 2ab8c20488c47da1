//! Loading a library: its body runs in the load-time sandbox, and what it registered
//! comes back as registrations (with Valkey's late name checks).

use super::*;

impl LuaEngine {
    /// Runs a library's code in the load-time sandbox and returns what it registered.
    /// `command` names the loading command in the timeout error (`RX.LOAD timeout`); no
    /// `timeout` means the body may run as long as it takes.
    /// Errors are full error replies, code included (bytes: they may quote the code).
    pub(crate) fn load(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        let loaded = match self.load_once(code, host, timeout, command) {
            // A failed allocation does not make LuaJIT collect, so a body can fail only
            // because earlier loads or calls left garbage: collect, then try once more (a
            // body has no effects but its registrations, which a new attempt starts over).
            Err(e) if e.ends_with(b"not enough memory") => {
                self.collect_garbage();
                self.load_once(code, host, timeout, command)
            }
            other => other,
        };
        self.after_run();
        loaded
    }

    /// One attempt at loading. `cjson` settings the body makes go to the library: its
    /// functions share them (their owner is the first function's slot).
    pub(crate) fn load_once(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        let settings = cjson::owners::enter(cjson::owners::LOADING);
        let mut loaded = self.load_body(code, host, timeout, command);
        drop(settings);
        let owner = match &mut loaded {
            Ok(registrations) => {
                let owner = registrations.first().map(|r| r.callable.id);
                for r in registrations.iter_mut() {
                    r.callable.owner = owner.unwrap_or(r.callable.id);
                }
                owner
            }
            Err(_) => None,
        };
        cjson::owners::settle_loading(owner);
        loaded
    }

    pub(crate) fn load_body(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        // The header is not Lua; blank it but keep its newline so line numbers match Redis.
        let body = match code.iter().position(|&b| b == b'\n') {
            Some(nl) => &code[nl..],
            None => &b""[..],
        };
        let body = match body.iter().position(|&b| b == 0) {
            Some(nul) if crate::dialect::current().function_engine_c_strings => &body[..nul],
            _ => body,
        };
        let chunk = self
            .compile(body, LIBRARY_CHUNK_NAME, &self.env)
            .map_err(|e| [&b"ERR Error compiling function: "[..], &e].concat())?;

        let active = ActiveCall::loading(host, timeout.map(|t| Instant::now() + t));
        // SAFETY: `active` outlives the guard, which drops at the end of this function.
        let _active = unsafe { active.enter() };
        let ran = self
            .begin_load
            .call::<()>(())
            .and_then(|_| self.run_library_body.call::<(bool, Value)>(chunk));
        let registered: mlua::Result<Table> = self.finish_load.call(());

        if active.timed_out() {
            return Err(
                format!("ERR Error registering functions: ERR {command} timeout").into_bytes(),
            );
        }
        let (ok, err) = ran.map_err(|e| {
            format!(
                "ERR Error registering functions: ERR {}",
                lua_error_message(&e)
            )
            .into_bytes()
        })?;
        if !ok {
            return Err([
                &b"ERR Error registering functions: "[..],
                &error_table_message(&err),
            ]
            .concat());
        }
        let text = |e: mlua::Error| format!("ERR {e}").into_bytes();
        let registered = registered.map_err(text)?;
        let mut out = Vec::new();
        for entry in registered.sequence_values::<Table>() {
            let entry = entry.map_err(text)?;
            let mut flags = FunctionFlags::empty();
            let names: Table = entry.get("flags").map_err(text)?;
            for name in names.sequence_values::<mlua::LuaString>().flatten() {
                if let Some(f) = FunctionFlags::from_name(&name.as_bytes()) {
                    flags.insert(f);
                }
            }
            let description: Option<mlua::LuaString> = entry.get("description").map_err(text)?;
            // Any bytes: where names are checked only after the body ran (Valkey), a name
            // that is not UTF-8 must reach that check, which refuses it (lossy conversion
            // keeps it invalid: U+FFFD is not a name character).
            let name: mlua::LuaString = entry.get("name").map_err(text)?;
            out.push(Registration {
                name: String::from_utf8_lossy(&name.as_bytes()).into_owned(),
                description: description.map(|d| d.as_bytes().to_vec()),
                flags,
                callable: entry
                    .get("callback")
                    .and_then(|f| self.callable(f, None))
                    .map_err(text)?,
            });
        }
        if crate::dialect::current().late_function_name_checks {
            check_function_names(&out)?;
        }
        Ok(out)
    }
}

/// Valkey's checks of the functions a library body registered, made after the body ran,
/// in registration order, with its own texts and no `Error registering functions` prefix.
fn check_function_names(registered: &[Registration<LuaCallable>]) -> Result<(), Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    for r in registered {
        let valid = !r.name.is_empty()
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(b"ERR Function names can only contain letters, numbers, or underscores(_) and must be at least one character long".to_vec());
        }
        if !seen.insert(r.name.as_str()) {
            return Err(b"ERR Function already exists in the library".to_vec());
        }
    }
    Ok(())
}
