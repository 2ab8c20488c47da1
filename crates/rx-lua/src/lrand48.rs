//! `math.random` and `math.randomseed` as the servers' Lua has them: Lua 5.1's functions
//! over the 48-bit `lrand48` generator (a = 0x5DEECE66D, c = 0xB), one state for the whole
//! server that starts at the same value on every start and moves only when a script draws
//! from it. Scripts that draw the same numbers in the same order see the same values on
//! every server, node and restart; LuaJIT's own generator would differ. (Redis 7.0 refuses
//! both outside a running script, but a library's body there cannot reach `math` at all.)

use std::cell::Cell;
use std::ffi::c_int;

use mlua::ffi;

const MULTIPLIER: u64 = 0x5_DEEC_E66D;
const INCREMENT: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;
/// The state before any seed: `lrand48`'s X0, X1, X2 words.
const INITIAL: u64 = 0x1234_ABCD_330E;
/// `REDIS_LRAND48_MAX`: INT32_MAX.
const LRAND48_MAX: i64 = i32::MAX as i64;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(INITIAL) };
}

/// The generator's state: 48 bits, advanced by one LCG step per draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lrand48(u64);

impl Lrand48 {
    pub const fn new() -> Self {
        Lrand48(INITIAL)
    }

    /// `srand48(seed)`: the seed's 32 bits above the fixed low word 0x330E.
    pub fn seeded(seed: i32) -> Self {
        Lrand48((((seed as u32) as u64) << 16) | 0x330E)
    }

    /// The next value in [0, 2^31).
    pub fn draw(&mut self) -> i32 {
        self.0 = (self.0.wrapping_mul(MULTIPLIER).wrapping_add(INCREMENT)) & MASK;
        (self.0 >> 17) as i32
    }

    /// Lua 5.1's `math.random` draw: a number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        (self.draw() as i64 % LRAND48_MAX) as f64 / LRAND48_MAX as f64
    }
}

impl Default for Lrand48 {
    fn default() -> Self {
        Lrand48::new()
    }
}

fn draw() -> f64 {
    STATE.with(|s| {
        let mut g = Lrand48(s.get());
        let r = g.next_unit();
        s.set(g.0);
        r
    })
}

/// Raises `msg` (a C string) as a Lua error, as `luaL_error` does.
unsafe fn raise(l: *mut ffi::lua_State, msg: &std::ffi::CStr) -> c_int {
    ffi::luaL_error(l, c"%s".as_ptr(), msg.as_ptr())
}

/// `luaL_checkint`: a number argument, truncated to a C int as Lua 5.1 does on 64 bits.
unsafe fn check_int(l: *mut ffi::lua_State, arg: c_int) -> i32 {
    ffi::luaL_checkinteger(l, arg) as i32
}

/// `math.random([m [, n]])`.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn math_random(l: *mut ffi::lua_State) -> c_int {
    let r = draw();
    match ffi::lua_gettop(l) {
        0 => ffi::lua_pushnumber(l, r),
        1 => {
            let upper = check_int(l, 1);
            if upper < 1 {
                return ffi::luaL_argerror(l, 1, c"interval is empty".as_ptr());
            }
            ffi::lua_pushnumber(l, (r * upper as f64).floor() + 1.0);
        }
        2 => {
            let lower = check_int(l, 1);
            let upper = check_int(l, 2);
            if lower > upper {
                return ffi::luaL_argerror(l, 2, c"interval is empty".as_ptr());
            }
            // As in C: the span is an int expression, so it wraps past INT_MAX.
            let span = upper.wrapping_sub(lower).wrapping_add(1);
            ffi::lua_pushnumber(l, (r * span as f64).floor() + lower as f64);
        }
        _ => return raise(l, c"wrong number of arguments"),
    }
    1
}

/// `math.randomseed(seed)`.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn math_randomseed(l: *mut ffi::lua_State) -> c_int {
    let seed = check_int(l, 1);
    STATE.with(|s| s.set(Lrand48::seeded(seed).0));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unseeded_sequence_is_lrand48s() {
        // glibc's lrand48() after seed48({0x330E, 0xABCD, 0x1234}), the servers' start state.
        let mut g = Lrand48::new();
        assert_eq!(
            [g.draw(), g.draw(), g.draw()],
            [851401618, 1804928587, 758783491]
        );
        // The first math.random() a fresh server gives (measured on Redis 7.0.15).
        let r = Lrand48::new().next_unit();
        assert_eq!(format!("{r:.14}"), "0.39646477363839");
    }

    #[test]
    fn seeding_matches_srand48() {
        // glibc: srand48(42); lrand48() x3.
        let mut g = Lrand48::seeded(42);
        assert_eq!(
            [g.draw(), g.draw(), g.draw()],
            [1598855263, 735945821, 238553827]
        );
        // A negative seed keeps its 32 bits.
        let mut n = Lrand48::seeded(-1);
        assert_eq!(n.0, 0xFFFF_FFFF_330E);
        n.draw();
    }

    #[test]
    fn unit_draws_stay_below_one() {
        let mut g = Lrand48::seeded(7);
        for _ in 0..10_000 {
            let r = g.next_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
