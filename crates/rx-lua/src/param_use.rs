//! Which of a function's parameter tables (KEYS, ARGV) it only ever indexes, read from its
//! LuaJIT bytecode. Plain arithmetic on instruction words, kept apart from the engine so it
//! can be tested alone.
//!
//! A function that does nothing with `keys` but `keys[i]`, `keys.x` and `#keys` can neither
//! change the table nor keep it: no other instruction ever sees it. Such a function can be
//! handed the same table on every call, refilled, instead of a new one that becomes
//! garbage (and collection cycles that walk every loaded library). Anything else it does
//! with the parameter (pass it on, return it, store it, compare it, write into it, capture
//! it in a closure) and it gets a fresh table, as in Redis.
//!
//! EVAL scripts read KEYS and ARGV as globals instead (`scripts_index_only`): there the
//! rule is that every read of the global is immediately indexed or measured and nothing
//! else can reach the globals table.
//!
//! The input is what `jit.util.funcbc` reports per instruction: the word and its opcode's
//! operand modes, so nothing here depends on LuaJIT's opcode numbering.

/// One instruction: the 32-bit word and the opcode's operand modes (`lj_bc_mode`).
#[derive(Clone, Copy, Debug)]
pub struct Instruction {
    pub word: u32,
    pub modes: u16,
}

// Operand modes (LuaJIT's BCMode).
const NONE: u16 = 0;
const DST: u16 = 1;
const VAR: u16 = 3;
const RBASE: u16 = 4;
const LIT: u16 = 6;
const STR: u16 = 10;
const FUNC: u16 = 12;
// Metamethods (LuaJIT's MMS), as the opcode's mode reports them.
const MM_INDEX: u16 = 0;
const MM_NEWINDEX: u16 = 1;
const MM_LEN: u16 = 5;

impl Instruction {
    fn a(self) -> u32 {
        (self.word >> 8) & 0xff
    }
    fn b(self) -> u32 {
        self.word >> 24
    }
    fn c(self) -> u32 {
        (self.word >> 16) & 0xff
    }
    fn d(self) -> u32 {
        self.word >> 16
    }
    fn mode_a(self) -> u16 {
        self.modes & 7
    }
    fn mode_b(self) -> u16 {
        (self.modes >> 3) & 15
    }
    fn mode_cd(self) -> u16 {
        (self.modes >> 7) & 15
    }
    fn metamethod(self) -> u16 {
        self.modes >> 11
    }
    /// The instruction has a 16-bit D operand instead of B and C.
    fn has_d(self) -> bool {
        self.mode_b() == NONE
    }
    /// `FNEW`: creates a closure, which may capture any local of this function.
    pub fn creates_closure(self) -> bool {
        self.mode_cd() == FUNC
    }

    /// `GGET`: `A = _ENV[string constant D]`.
    fn global_read(self) -> bool {
        self.mode_a() == DST
            && self.mode_b() == NONE
            && self.mode_cd() == STR
            && self.metamethod() == MM_INDEX
    }

    /// `GSET`: `_ENV[string constant D] = A`.
    fn global_write(self) -> bool {
        self.mode_a() == VAR
            && self.mode_b() == NONE
            && self.mode_cd() == STR
            && self.metamethod() == MM_NEWINDEX
    }

    /// TGETV/TGETS/TGETB/TGETR: `A = B[C]`.
    fn indexes_b(self) -> bool {
        self.mode_a() == DST && self.mode_b() == VAR && self.metamethod() == MM_INDEX
    }

    /// LEN: `A = #D`.
    fn measures_d(self) -> bool {
        self.mode_a() == DST && self.metamethod() == MM_LEN
    }

    /// Reads the table in `slot`, only to index it or take its length, and leaves the
    /// result in `slot` (so the table is gone from the stack afterwards).
    fn consumes_as_table(self, slot: u32) -> bool {
        if self.a() != slot {
            return false;
        }
        if self.indexes_b() {
            self.b() == slot && !(self.mode_cd() == VAR && self.c() == slot)
        } else {
            self.measures_d() && self.d() == slot
        }
    }

    /// Whether this instruction does anything with `slot` other than index it or take
    /// its length or truth.
    fn lets_out(self, slot: u32) -> bool {
        let (ma, mb, mcd) = (self.mode_a(), self.mode_b(), self.mode_cd());
        // Indexing the table in B is the allowed use; so are taking D's length and IST/ISF
        // (a jump on D's truth, nothing stored).
        let index_read = self.indexes_b();
        let harmless_d = self.measures_d() || (ma == NONE && mb == NONE);
        if ma == VAR && self.a() == slot {
            return true;
        }
        // RET0/RET1/RET return the slots A .. A+D-2, which may be a local itself. Other
        // base operands (calls, iterators, concatenation, table constructors) are
        // temporaries above every active local, so never a parameter.
        if ma == RBASE && mcd == LIT {
            let (a, d) = (self.a(), self.d());
            if a <= slot && slot + 2 <= a + d {
                return true;
            }
        }
        if self.has_d() {
            mcd == VAR && self.d() == slot && !harmless_d
        } else {
            (mb == VAR && self.b() == slot && !index_read) || (mcd == VAR && self.c() == slot)
        }
    }
}

/// The parameters (bit 0: the first, bit 1: the second, of the first `params`) that `code`
/// only indexes. `captured(i)` says whether a closure the function creates may capture
/// parameter `i` (by name: the caller knows the closures' upvalue names).
pub fn indexed_only(code: &[Instruction], params: u32, captured: impl Fn(u32) -> bool) -> u8 {
    let creates_closures = code.iter().any(|i| i.creates_closure());
    (0..params.min(2))
        .filter(|&slot| {
            let escapes = creates_closures && captured(slot);
            !escapes && !code.iter().any(|i| i.lets_out(slot))
        })
        .fold(0, |bits, slot| bits | 1 << slot)
}

/// Globals through which a script could reach KEYS or ARGV other than by their names, or
/// run code this analysis never saw.
const OPEN_DOORS: [&[u8]; 9] = [
    b"_G",
    b"getfenv",
    b"setfenv",
    b"loadstring",
    b"load",
    b"dofile",
    b"loadfile",
    b"require",
    b"module",
];

/// Which of the globals KEYS (bit 0) and ARGV (bit 1) a script only indexes, from the
/// bytecode of all its functions (in any order; each ends with a return, so an
/// instruction's successor is in the same function). `constant(i)` is the string
/// constant instruction `i` names when its D operand is one (`GGET`, `GSET`), else None.
pub fn scripts_index_only<'a>(
    code: &[Instruction],
    constant: impl Fn(usize) -> Option<&'a [u8]>,
) -> u8 {
    let mut bits = 0b11;
    for (i, ins) in code.iter().enumerate() {
        let (reads, writes) = (ins.global_read(), ins.global_write());
        if !reads && !writes {
            continue;
        }
        let Some(name) = constant(i) else {
            return 0;
        };
        if OPEN_DOORS.contains(&name) {
            return 0;
        }
        let bit = match name {
            b"KEYS" => 0b01,
            b"ARGV" => 0b10,
            _ => continue,
        };
        let consumed = reads
            && code
                .get(i + 1)
                .is_some_and(|next| next.consumes_as_table(ins.a()));
        if !consumed {
            bits &= !bit;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    // Modes as LuaJIT's lj_bc.h builds them: a | b << 3 | cd << 7 | mm << 11.
    const fn modes(a: u16, b: u16, cd: u16, mm: u16) -> u16 {
        a | b << 3 | cd << 7 | mm << 11
    }
    const BASE: u16 = 2;
    const JUMP: u16 = 13;
    const NO_MM: u16 = 22;
    const TGETV: u16 = modes(DST, VAR, VAR, MM_INDEX);
    const TGETS: u16 = modes(DST, VAR, STR, MM_INDEX);
    const TSETV: u16 = modes(VAR, VAR, VAR, 1);
    const TSETS: u16 = modes(VAR, VAR, STR, 1);
    const LEN: u16 = modes(DST, NONE, VAR, MM_LEN);
    const MOV: u16 = modes(DST, NONE, VAR, NO_MM);
    const IST: u16 = modes(NONE, NONE, VAR, NO_MM);
    const ISEQV: u16 = modes(VAR, NONE, VAR, 4);
    const RET: u16 = modes(RBASE, NONE, LIT, NO_MM);
    const CALL: u16 = modes(BASE, LIT, LIT, 9);
    const UCLO: u16 = modes(RBASE, NONE, JUMP, NO_MM);
    const FNEW: u16 = modes(DST, NONE, FUNC, 2);
    const USETV: u16 = modes(5, NONE, VAR, NO_MM);

    fn abc(modes: u16, a: u32, b: u32, c: u32) -> Instruction {
        Instruction {
            word: a << 8 | c << 16 | b << 24,
            modes,
        }
    }
    fn ad(modes: u16, a: u32, d: u32) -> Instruction {
        Instruction {
            word: a << 8 | d << 16,
            modes,
        }
    }
    fn check(code: &[Instruction]) -> u8 {
        indexed_only(code, 2, |_| false)
    }

    #[test]
    fn indexing_and_length_keep_the_table_private() {
        // local x = keys[args.n]; local n = #keys; if keys then return x end
        let code = [
            abc(TGETS, 2, 1, 0),
            abc(TGETV, 2, 0, 2),
            ad(LEN, 3, 0),
            ad(IST, 0, 0),
            ad(RET, 2, 2),
            ad(RET, 0, 1), // the final `return` with no values reads nothing
        ];
        assert_eq!(check(&code), 0b11);
    }

    #[test]
    fn every_other_use_lets_the_table_out() {
        let cases: [(&str, Instruction); 10] = [
            ("keys[1] = v (written)", abc(TSETV, 2, 0, 3)),
            ("keys.x = v", abc(TSETS, 2, 0, 0)),
            ("t[k] = keys (stored)", abc(TSETV, 0, 2, 3)),
            ("t[keys] (used as a key)", abc(TGETV, 2, 3, 0)),
            (
                "local k = keys (copied, e.g. as a call argument)",
                ad(MOV, 2, 0),
            ),
            ("return keys", ad(RET, 0, 2)),
            ("return x, keys", ad(RET, 0, 3)),
            ("keys == t", ad(ISEQV, 0, 3)),
            ("a global = keys", ad(GSET, 0, 0)),
            ("an upvalue = keys", ad(USETV, 0, 0)),
        ];
        for (what, ins) in cases {
            assert_eq!(check(&[ins]) & 1, 0, "{what}");
        }
    }

    #[test]
    fn temporaries_above_the_parameters_are_not_parameters() {
        // redis.call('GET', keys[1]) at slot 2 and up; closing upvalues from slot 2.
        let code = [
            abc(TGETV, 5, 0, 4),
            abc(CALL, 2, 2, 4),
            ad(UCLO, 2, 0),
            ad(RET, 2, 2),
        ];
        assert_eq!(check(&code), 0b11);
        // `return args` as the second of two results from slot 0.
        assert_eq!(check(&[ad(RET, 0, 3)]), 0);
        assert_eq!(check(&[ad(RET, 1, 2)]), 0b01);
    }

    #[test]
    fn closures_capturing_a_parameter_let_it_out() {
        let code = [ad(FNEW, 2, 0), abc(CALL, 2, 1, 1)];
        assert_eq!(indexed_only(&code, 2, |slot| slot == 1), 0b01);
        assert_eq!(indexed_only(&code, 2, |_| false), 0b11);
        // Without a closure, capture does not matter.
        assert_eq!(indexed_only(&[ad(RET, 2, 1)], 2, |_| true), 0b11);
    }

    const GGET: u16 = modes(DST, NONE, STR, MM_INDEX);
    const GSET: u16 = modes(VAR, NONE, STR, MM_NEWINDEX);
    const KSTR: u16 = modes(DST, NONE, STR, NO_MM);
    const TGETB: u16 = modes(DST, VAR, LIT, MM_INDEX);

    /// A script's code with the string constants of its D operands.
    fn script(code: &[(Instruction, Option<&'static str>)]) -> u8 {
        let words: Vec<Instruction> = code.iter().map(|(i, _)| *i).collect();
        scripts_index_only(&words, |i| code[i].1.map(str::as_bytes))
    }

    #[test]
    fn scripts_that_index_keys_and_argv_right_away_keep_them_private() {
        // local x = redis.call('GET', KEYS[1], ARGV[2]); local n = #KEYS;
        // for i = 1, #ARGV do x = x .. ARGV[i] end; return x, n   (LuaJIT's own bytecode)
        let code = [
            (ad(GGET, 0, 0), Some("redis")),
            (abc(TGETS, 0, 0, 1), None),
            (ad(KSTR, 2, 2), Some("GET")),
            (ad(GGET, 3, 3), Some("KEYS")),
            (abc(TGETB, 3, 3, 1), None),
            (ad(GGET, 4, 4), Some("ARGV")),
            (abc(TGETB, 4, 4, 2), None),
            (abc(CALL, 0, 2, 4), None),
            (ad(GGET, 1, 3), Some("KEYS")),
            (ad(LEN, 1, 1), None),
            (ad(GGET, 7, 4), Some("ARGV")),
            (abc(TGETV, 7, 7, 5), None),
            (ad(RET, 0, 3), None),
        ];
        assert_eq!(script(&code), 0b11);
    }

    #[test]
    fn any_other_use_of_the_globals_gives_fresh_tables() {
        let keys = |next: Instruction| script(&[(ad(GGET, 3, 0), Some("KEYS")), (next, None)]);
        assert_eq!(keys(ad(MOV, 4, 3)), 0b10, "copied");
        assert_eq!(
            keys(abc(TGETB, 4, 3, 1)),
            0b10,
            "indexed, but left on the stack"
        );
        assert_eq!(keys(abc(TGETV, 3, 5, 3)), 0b10, "used as a key");
        assert_eq!(keys(abc(CALL, 3, 1, 1)), 0b10, "called");
        assert_eq!(keys(ad(RET, 3, 2)), 0b10, "returned");
        assert_eq!(script(&[(ad(GGET, 3, 0), Some("KEYS"))]), 0b10, "last");
        assert_eq!(
            script(&[(ad(GSET, 3, 0), Some("ARGV")), (ad(RET, 0, 1), None)]),
            0b01
        );
        // A string 'KEYS' is not the global.
        assert_eq!(
            script(&[(ad(KSTR, 3, 0), Some("KEYS")), (ad(MOV, 4, 3), None)]),
            0b11
        );
    }

    #[test]
    fn scripts_that_can_reach_globals_otherwise_give_fresh_tables() {
        for door in ["_G", "getfenv", "loadstring", "load"] {
            let code = [(ad(GGET, 2, 0), Some(door)), (ad(RET, 2, 2), None)];
            assert_eq!(script(&code), 0, "{door}");
        }
        // A global whose name is unknown counts as a door.
        assert_eq!(script(&[(ad(GGET, 2, 0), None), (ad(RET, 2, 2), None)]), 0);
    }

    #[test]
    fn only_declared_parameters_count() {
        assert_eq!(indexed_only(&[], 0, |_| false), 0);
        assert_eq!(indexed_only(&[], 1, |_| false), 0b01);
        assert_eq!(indexed_only(&[], 3, |_| false), 0b11);
    }
}
