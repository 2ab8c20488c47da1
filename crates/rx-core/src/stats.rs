//! Per-function statistics: calls, errors by code, refusals, latency. Pure.
//!
//! Counting a call costs two clock reads and a histogram increment (see `make bench`).
//! The latency histogram (HDR, 2 significant digits, 1 us to 1 h) is created on a
//! function's first call, so idle functions cost nothing.

use std::cell::{Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

#[derive(Debug, Default, Clone)]
pub struct FunctionStats {
    pub calls: u64,
    pub errors: u64,
    /// Error replies by their code (`ERR`, `WRONGTYPE`, ...).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Calls refused before running, by code (`OOM`, `READONLY`, ...).
    pub refusals: BTreeMap<String, u64>,
    pub total_us: u64,
    pub max_us: u64,
    pub redis_calls: u64,
    /// Of `calls`, how many came from other functions or scripts through `rx.fcall`.
    pub nested_calls: u64,
    pub last_error: Option<(String, u64)>,
    latency: Option<Histogram<u32>>,
}

/// A function's statistics, allocated on its first call or refusal: most loaded functions
/// of a large deployment are rarely called, and each would otherwise carry them inline.
#[derive(Debug, Default)]
pub struct StatsCell(RefCell<Option<Box<FunctionStats>>>);

/// Read access to a `StatsCell`: the live statistics, or empty ones for a function never
/// called.
// Lives on the stack for the moment statistics are read; boxing the empty side would
// allocate for every idle function RX.STATS lists.
#[allow(clippy::large_enum_variant)]
pub enum StatsRef<'a> {
    Live(Ref<'a, FunctionStats>),
    Empty(FunctionStats),
}

impl std::ops::Deref for StatsRef<'_> {
    type Target = FunctionStats;
    fn deref(&self) -> &FunctionStats {
        match self {
            StatsRef::Live(r) => r,
            StatsRef::Empty(s) => s,
        }
    }
}

impl StatsCell {
    pub fn borrow(&self) -> StatsRef<'_> {
        match Ref::filter_map(self.0.borrow(), |s| s.as_deref()) {
            Ok(live) => StatsRef::Live(live),
            Err(_) => StatsRef::Empty(FunctionStats::default()),
        }
    }

    /// Back to never called, giving the memory back.
    pub fn reset(&self) {
        *self.0.borrow_mut() = None;
    }

    pub fn borrow_mut(&self) -> RefMut<'_, FunctionStats> {
        RefMut::map(self.0.borrow_mut(), |s| {
            &mut **s.get_or_insert_with(Box::default)
        })
    }
}

/// The code of an error text: its first word.
pub fn error_code(text: &str) -> &str {
    text.split(' ').next().unwrap_or("ERR")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FunctionStats {
    /// Records one call that ran; `error` is its error reply, if it failed.
    pub fn record_call(&mut self, took: Duration, redis_calls: u64, error: Option<&str>) {
        // Whole microseconds, rounded up (at least 1), the same in the totals, the maximum
        // and the histogram, so no percentile can exceed the maximum.
        let us = took
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(took.subsec_nanos().div_ceil(1000)))
            .max(1);
        self.calls += 1;
        self.total_us += us;
        self.max_us = self.max_us.max(us);
        self.redis_calls += redis_calls;
        let h = self.latency.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("static histogram bounds are valid")
        });
        h.saturating_record(us);
        if let Some(e) = error {
            self.errors += 1;
            *self
                .errors_by_code
                .entry(error_code(e).to_string())
                .or_default() += 1;
            self.last_error = Some((e.to_string(), now_ms()));
        }
    }

    /// Records a call refused before it ran.
    pub fn record_refusal(&mut self, error: &str) {
        *self
            .refusals
            .entry(error_code(error).to_string())
            .or_default() += 1;
        self.last_error = Some((error.to_string(), now_ms()));
    }

    pub fn refusal_count(&self) -> u64 {
        self.refusals.values().sum()
    }

    pub fn avg_us(&self) -> u64 {
        self.total_us.checked_div(self.calls).unwrap_or(0)
    }

    /// The value of this function's or script's `INFO rx` line, in the style of INFO
    /// commandstats: `calls=3,errors=0,refusals=1,usec=237,...`. The field names and their
    /// order are documented (README, "INFO rx") and read by contrib/prometheus/rx_info.lua.
    pub fn info_line(&self) -> String {
        format!(
            "calls={},errors={},refusals={},usec={},usec_per_call={},max_usec={},p50_usec={},p99_usec={},p999_usec={},redis_calls={}",
            self.calls,
            self.errors,
            self.refusal_count(),
            self.total_us,
            self.avg_us(),
            self.max_us,
            self.percentile_us(0.5),
            self.percentile_us(0.99),
            self.percentile_us(0.999),
            self.redis_calls
        )
    }

    /// Latency at `quantile` (0.5, 0.99, 0.999), in microseconds; 0 before any call.
    pub fn percentile_us(&self, quantile: f64) -> u64 {
        // The histogram answers with its bucket's upper bound, which can exceed the real
        // maximum; no percentile is above it.
        self.latency
            .as_ref()
            .map_or(0, |h| h.value_at_quantile(quantile).min(self.max_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_refusals_by_code() {
        let mut s = FunctionStats::default();
        s.record_call(Duration::from_micros(10), 2, None);
        s.record_call(
            Duration::from_micros(30),
            1,
            Some("WRONGTYPE Operation against a key"),
        );
        s.record_call(Duration::from_micros(20), 0, Some("ERR boom"));
        s.record_refusal("OOM command not allowed");
        assert_eq!((s.calls, s.errors, s.redis_calls), (3, 2, 3));
        assert_eq!(s.errors_by_code.get("WRONGTYPE"), Some(&1));
        assert_eq!(s.errors_by_code.get("ERR"), Some(&1));
        assert_eq!(s.refusals.get("OOM"), Some(&1));
        assert_eq!((s.total_us, s.max_us, s.avg_us()), (60, 30, 20));
        assert_eq!(s.last_error.as_ref().unwrap().0, "OOM command not allowed");
    }

    #[test]
    fn info_line_has_every_field_in_order() {
        assert_eq!(
            FunctionStats::default().info_line(),
            "calls=0,errors=0,refusals=0,usec=0,usec_per_call=0,max_usec=0,p50_usec=0,p99_usec=0,p999_usec=0,redis_calls=0"
        );
        let mut s = FunctionStats::default();
        s.record_call(Duration::from_micros(10), 2, None);
        s.record_call(Duration::from_micros(30), 1, Some("ERR boom"));
        s.record_refusal("OOM command not allowed");
        assert_eq!(
            s.info_line(),
            "calls=2,errors=1,refusals=1,usec=40,usec_per_call=20,max_usec=30,p50_usec=10,p99_usec=30,p999_usec=30,redis_calls=3"
        );
    }

    /// `make bench` runs this to show what counting costs on top of a call.
    #[test]
    #[ignore]
    fn stats_bookkeeping_cost() {
        let mut s = FunctionStats::default();
        let rounds = 2_000_000u32;
        let t = std::time::Instant::now();
        for i in 0..rounds {
            let started = quanta::Instant::now();
            let took = started.elapsed();
            s.record_call(took, std::hint::black_box(i as u64 & 3), None);
        }
        let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
        println!("  {ns:.1} ns per call");
        assert_eq!(s.calls, rounds as u64);
    }

    #[test]
    fn percentiles_within_histogram_precision() {
        let mut s = FunctionStats::default();
        for us in 1..=1000u64 {
            s.record_call(Duration::from_micros(us), 0, None);
        }
        let within =
            |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.01 + 1.0;
        assert!(
            within(s.percentile_us(0.5), 500),
            "{}",
            s.percentile_us(0.5)
        );
        assert!(
            within(s.percentile_us(0.99), 990),
            "{}",
            s.percentile_us(0.99)
        );
        assert!(
            within(s.percentile_us(0.999), 999),
            "{}",
            s.percentile_us(0.999)
        );
        s = FunctionStats::default();
        assert_eq!((s.calls, s.percentile_us(0.5)), (0, 0));
        // A single call: every percentile is that call, never above it.
        s.record_call(Duration::from_micros(23_081), 0, None);
        assert!(s.percentile_us(0.5) <= 23_081 && s.percentile_us(0.999) <= s.max_us);
    }
}
