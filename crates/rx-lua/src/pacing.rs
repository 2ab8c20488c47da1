//! How long the collector rests between cycles: plain arithmetic on the VM's size after
//! each call, kept apart from the engine so it can be tested alone.
//!
//! Every call leaves garbage (its KEYS and ARGV tables at least), and each cycle walks
//! everything alive, every loaded function included. The cost of a cycle is roughly
//! `live + garbage`, so the share spent on walking what is alive falls as more garbage may
//! gather between cycles. Lua's default pause (200: a cycle per heap-size of allocation)
//! makes a VM holding 10,000 libraries spend a noticeable share of each call marking them.
//!
//! The pause is a multiple of what the last cycle left alive, so it has to come from that
//! live size, not from the size right now (which includes the garbage gathered since): a
//! pause computed from the current size shrinks as garbage gathers, and the VM ends up
//! collecting about twice as often as intended.

/// The pause the collector starts with, and the least the pacing chooses on its own.
pub const DEFAULT_PAUSE: i32 = 200;
/// The most: a cycle at the latest when the heap is ten times what was alive.
const MAX_PAUSE: i32 = 1000;

/// Follows the VM's size call by call and picks the collector's pause.
#[derive(Debug)]
pub struct CollectorPacing {
    previous: usize,
    falling: bool,
    /// The size at the last local minimum: what a finished sweep left, plus whatever was
    /// allocated while it ran. 0 until the first call.
    live: usize,
    pause: i32,
}

impl Default for CollectorPacing {
    fn default() -> Self {
        CollectorPacing {
            previous: 0,
            falling: false,
            live: 0,
            pause: DEFAULT_PAUSE,
        }
    }
}

impl CollectorPacing {
    /// Takes the VM's size after a call, how much garbage may gather between cycles, and
    /// the VM's memory cap; returns the new pause when it should change.
    pub fn observe(&mut self, in_use: usize, allowance: usize, limit: usize) -> Option<i32> {
        let previous = std::mem::replace(&mut self.previous, in_use);
        if self.live == 0 {
            self.live = in_use;
        }
        if in_use < previous {
            // A sweep is freeing memory; its lowest point is the live size.
            self.falling = true;
        } else if in_use > previous && self.falling {
            self.falling = false;
            self.live = previous;
        }
        let live = self.live.max(1);
        let wanted =
            (100 + 100 * allowance / live).clamp(DEFAULT_PAUSE as usize, MAX_PAUSE as usize);
        // Whatever the estimate, the next cycle starts before the heap reaches half the cap
        // (LuaJIT does not collect when an allocation fails).
        let safe = (100 * (limit / 2) / in_use.max(1)).max(100);
        // In steps of 50, so the setting does not change on every call.
        let pause = (wanted.min(safe) / 50 * 50).max(100) as i32;
        (pause != self.pause).then(|| {
            self.pause = pause;
            pause
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;
    const LIMIT: usize = 1 << 30;

    /// Feeds a whole cycle: garbage gathers from `live` to `peak`, then a sweep brings it
    /// back to `live` in steps with small rises between them, then it grows again.
    fn cycle(p: &mut CollectorPacing, live: usize, peak: usize) -> Option<i32> {
        let mut last = None;
        let mut size = live;
        while size < peak {
            size += 64 * 1024;
            last = p.observe(size, 8 * MB, LIMIT).or(last);
        }
        while size > live + 256 * 1024 {
            size -= 256 * 1024;
            last = p.observe(size, 8 * MB, LIMIT).or(last);
            last = p.observe(size + 1024, 8 * MB, LIMIT).or(last);
        }
        last = p.observe(live, 8 * MB, LIMIT).or(last);
        last = p.observe(live + 1024, 8 * MB, LIMIT).or(last);
        last
    }

    #[test]
    fn pause_comes_from_the_live_size_not_the_current_one() {
        let mut p = CollectorPacing::default();
        // 2 MB alive and 8 MB of garbage allowed: a cycle when the heap is 5x the live size.
        assert_eq!(p.observe(2 * MB, 8 * MB, LIMIT), Some(500));
        cycle(&mut p, 2 * MB, 10 * MB);
        assert_eq!(p.pause, 500, "garbage gathering must not lower the pause");
        assert!(
            p.live >= 2 * MB && p.live <= 2 * MB + 2048,
            "live estimate {}",
            p.live
        );
    }

    #[test]
    fn estimate_follows_the_live_size_as_it_grows() {
        let mut p = CollectorPacing::default();
        p.observe(300 * 1024, 8 * MB, LIMIT);
        assert_eq!(p.pause, MAX_PAUSE, "a small heap gets the most rest");
        cycle(&mut p, 4 * MB, 12 * MB);
        assert_eq!(p.pause, 300);
    }

    #[test]
    fn a_stale_small_estimate_never_lets_the_heap_reach_half_the_cap() {
        let mut p = CollectorPacing::default();
        p.observe(MB, 8 * MB, LIMIT);
        // Live data grew to 300 MB inside one call, with no sweep seen since.
        let pause = p.observe(300 * MB, 8 * MB, LIMIT).unwrap();
        assert!(
            pause as usize * 300 * MB / 100 <= LIMIT / 2,
            "pause {pause}"
        );
        // Past half the cap, the collector runs continuously.
        assert_eq!(p.observe(700 * MB, 8 * MB, LIMIT), Some(100));
    }

    #[test]
    fn steady_calls_do_not_change_the_setting() {
        let mut p = CollectorPacing::default();
        assert!(p.observe(2 * MB, 8 * MB, LIMIT).is_some());
        assert_eq!(p.observe(2 * MB, 8 * MB, LIMIT), None);
        assert_eq!(p.observe(2 * MB + 1024, 8 * MB, LIMIT), None);
    }
}
