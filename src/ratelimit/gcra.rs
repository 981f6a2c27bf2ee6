//! The generic cell rate algorithm (GCRA) as a pure function, in integer nanoseconds.
//!
//! A key's whole state is one number, its *theoretical arrival time* (TAT): the instant at which
//! its bucket would be full again. A request is allowed when, after adding its cost (the emission
//! interval `T = 60 s / limit`), the TAT runs at most one burst capacity (`limit × T`, one minute's
//! budget) ahead of now. Nothing is counted or approximated, and integers never drift.
//!
//! [`decide`] is the whole algorithm; a shared backend (a Redis Lua script) mirrors it line by
//! line. Mind that nanoseconds since the epoch (about 1.8e18) exceed the 2^53 integers a double
//! holds exactly, so such a script must keep its TAT relative to a recent base or in coarser units.

use std::num::{NonZeroU32, NonZeroU64};

/// Nanoseconds in the window every limit is expressed in (one minute).
pub const WINDOW_NANOS: u64 = 60_000_000_000;

/// Nanoseconds in a second, for rounding the header values.
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A limit of `limit` requests per minute, with a burst of the same size, as GCRA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    limit: NonZeroU32,
    interval: u64,
}

impl Rate {
    /// The rate of `limit` requests per minute.
    ///
    /// The emission interval is `60 s / limit` rounded down to whole nanoseconds. It is exact for
    /// every limit dividing 6·10^10 (all built-in tiers); otherwise the sender gains less than
    /// one nanosecond per request: under `limit` ns per minute, far below anything observable.
    pub const fn per_minute(limit: NonZeroU32) -> Self {
        Self {
            limit,
            // limit ≤ u32::MAX < 6·10^10, so the interval is at least 13 ns, never zero.
            interval: WINDOW_NANOS / limit.get() as u64,
        }
    }

    /// Requests allowed per minute; also the burst size.
    pub const fn limit(self) -> NonZeroU32 {
        self.limit
    }

    /// Emission interval `T`, in nanoseconds: what one request costs, and how often the bucket
    /// regains one request.
    pub const fn interval_nanos(self) -> u64 {
        self.interval
    }

    /// Burst capacity `limit × T`, in nanoseconds: how far ahead of now the TAT may run. At most
    /// one minute.
    pub const fn capacity_nanos(self) -> u64 {
        self.limit.get() as u64 * self.interval
    }
}

/// Whether a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request passes; it has been counted.
    Allowed,
    /// The request is refused; nothing was counted.
    Denied {
        /// Whole seconds, rounded up, until one request would pass (the `Retry-After` value).
        retry_after_secs: NonZeroU64,
    },
}

/// The outcome of one rate-limit check, with what the `RateLimit-*` response headers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request passes.
    pub verdict: Verdict,
    /// The limit applied, in requests per minute (`RateLimit-Limit`).
    pub limit: NonZeroU32,
    /// Whole requests that would still pass right now, after this one (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds, rounded up, until the bucket is full again (`RateLimit-Reset`); 0 when it is.
    pub reset_secs: u64,
}

impl Decision {
    /// Whether the request passes.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }

    /// For a denied request, whole seconds (at least 1) until one request would pass.
    pub fn retry_after_secs(&self) -> Option<NonZeroU64> {
        match self.verdict {
            Verdict::Allowed => None,
            Verdict::Denied { retry_after_secs } => Some(retry_after_secs),
        }
    }
}

/// Decides one request and returns the decision with the TAT to store.
///
/// `stored_tat` is the key's stored TAT in nanoseconds since the epoch, or 0 when the key has none
/// (any TAT not after `now` means the same thing: a full bucket, so reclaimed keys need no
/// entry). `now` is the current time in nanoseconds since the epoch.
///
/// The returned TAT is `max(stored_tat, now)` when denied (nothing consumed) and that plus one
/// interval when allowed. A stored TAT more than one capacity ahead of `now` can only come from a
/// wall clock that stepped back; it is clamped so the sender waits at most one window.
pub fn decide(stored_tat: u64, now: u64, rate: Rate) -> (Decision, u64) {
    let interval = rate.interval_nanos();
    let horizon = now.saturating_add(rate.capacity_nanos());
    let tat = stored_tat.clamp(now, horizon);
    let next = tat.saturating_add(interval);
    if next <= horizon {
        let decision = Decision {
            verdict: Verdict::Allowed,
            limit: rate.limit(),
            // (horizon - next) / interval ≤ capacity / interval = limit, so it fits in u32.
            remaining: ((horizon - next) / interval) as u32,
            reset_secs: ceil_secs(next - now),
        };
        (decision, next)
    } else {
        let decision = Decision {
            // next > horizon, so at least one (rounded-up) second.
            verdict: Verdict::Denied {
                retry_after_secs: NonZeroU64::new(ceil_secs(next - horizon))
                    .unwrap_or(NonZeroU64::MIN),
            },
            limit: rate.limit(),
            // horizon - tat < interval: not even one request fits.
            remaining: 0,
            reset_secs: ceil_secs(tat - now),
        };
        (decision, tat)
    }
}

/// Nanoseconds to whole seconds, rounded up.
fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    fn rate(per_minute: u32) -> Rate {
        Rate::per_minute(NonZeroU32::new(per_minute).unwrap())
    }

    /// Sends `n` requests at `now`, returning the decisions and the final TAT.
    fn burst(mut tat: u64, now: u64, rate: Rate, n: usize) -> (Vec<Decision>, u64) {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (d, t) = decide(tat, now, rate);
            out.push(d);
            tat = t;
        }
        (out, tat)
    }

    #[test]
    fn builtin_tiers_have_exact_intervals() {
        for (limit, interval) in [(60, S), (600, S / 10), (6000, S / 100)] {
            let r = rate(limit);
            assert_eq!(r.interval_nanos(), interval);
            assert_eq!(r.capacity_nanos(), WINDOW_NANOS);
        }
        // Not a divisor: rounded down, capacity just under a minute.
        let r = rate(7);
        assert_eq!(r.interval_nanos(), 8_571_428_571);
        assert_eq!(r.capacity_nanos(), 59_999_999_997);
        // The largest limit still has a non-zero interval.
        assert_eq!(rate(u32::MAX).interval_nanos(), 13);
    }

    #[test]
    fn a_fresh_key_spends_a_whole_minute_at_once() {
        let now = 1_700_000_000 * S;
        let (ds, tat) = burst(0, now, rate(60), 61);
        for (i, d) in ds[..60].iter().enumerate() {
            assert!(d.is_allowed(), "request {i}");
            assert_eq!(d.remaining, 59 - i as u32);
            assert_eq!(d.reset_secs, i as u64 + 1);
        }
        let last = ds[60];
        assert_eq!(
            last.verdict,
            Verdict::Denied {
                retry_after_secs: NonZeroU64::new(1).unwrap()
            }
        );
        assert_eq!((last.remaining, last.reset_secs), (0, 60));
        assert_eq!(tat, now + 60 * S, "the denied request consumed nothing");
    }

    #[test]
    fn stored_tat_in_the_past_is_a_full_bucket() {
        let now = 100 * S;
        for stored in [0, 1, now - 1, now] {
            let (d, tat) = decide(stored, now, rate(60));
            assert_eq!((d.is_allowed(), d.remaining, d.reset_secs), (true, 59, 1));
            assert_eq!(tat, now + S);
        }
    }

    #[test]
    fn partial_refill_rounds_remaining_down_and_times_up() {
        let r = rate(60);
        let (_, tat) = burst(0, 0, r, 60); // TAT = 60 s
                                           // 2.5 s later: 2 whole requests are back; half of a third.
        let (d, tat2) = decide(tat, 2 * S + S / 2, r);
        assert!(d.is_allowed());
        assert_eq!(d.remaining, 1);
        assert_eq!(d.reset_secs, 59); // TAT 61 s - now 2.5 s = 58.5 s
        let (d, tat3) = decide(tat2, 2 * S + S / 2, r);
        assert_eq!((d.is_allowed(), d.remaining, d.reset_secs), (true, 0, 60));
        let (d, tat4) = decide(tat3, 2 * S + S / 2, r);
        assert_eq!(d.retry_after_secs(), NonZeroU64::new(1)); // 0.5 s, rounded up
        assert_eq!((d.remaining, d.reset_secs), (0, 60));
        assert_eq!(tat4, tat3);
    }

    #[test]
    fn retry_after_tells_exactly_when_the_next_request_passes() {
        let r = rate(6); // one request per 10 s
        let (_, tat) = burst(0, 0, r, 6);
        let (d, _) = decide(tat, 3 * S, r);
        assert_eq!(d.retry_after_secs(), NonZeroU64::new(7));
        assert!(!decide(tat, 10 * S - 1, r).0.is_allowed());
        assert!(decide(tat, 10 * S, r).0.is_allowed());
    }

    #[test]
    fn non_divisor_limits_refill_one_per_interval() {
        let r = rate(7);
        let (ds, tat) = burst(0, 0, r, 8);
        assert_eq!(ds.iter().filter(|d| d.is_allowed()).count(), 7);
        let t = r.interval_nanos();
        assert!(!decide(tat, t - 1, r).0.is_allowed());
        let (d, tat) = decide(tat, t, r);
        assert!(d.is_allowed());
        assert!(!decide(tat, t, r).0.is_allowed());
    }

    #[test]
    fn a_clock_stepping_back_costs_at_most_one_window() {
        let r = rate(60);
        let (d, tat) = decide(10_000 * S, 100 * S, r);
        assert_eq!(d.retry_after_secs(), NonZeroU64::new(1));
        assert_eq!(d.reset_secs, 60);
        assert_eq!(tat, 160 * S);
    }

    #[test]
    fn no_overflow_at_the_end_of_time() {
        // Year 2554: saturating arithmetic, no panic, values stay in range.
        for (stored, now) in [(u64::MAX, u64::MAX), (0, u64::MAX - S), (u64::MAX, 0)] {
            for limit in [1, 60, u32::MAX] {
                let (d, _) = decide(stored, now, rate(limit));
                assert!(d.remaining <= limit && d.reset_secs <= 60);
            }
        }
    }
}
