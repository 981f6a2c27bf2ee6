//! Signed timestamps: parsing them strictly and checking them against a tolerance.
//!
//! A timestamp that is not a plain decimal number of seconds (a sign, a fraction, letters,
//! spaces inside, more than 64 bits) is [`VerifyError::BadTimestamp`]: `invalid_signature`. A
//! well-formed one further from now than the tolerance, in either direction, is
//! [`VerifyError::Stale`]: `stale_event`. The boundary itself is accepted.

use std::sync::Arc;
use std::time::Duration;

use super::VerifyError;
use crate::clock::Clock;

/// Parses a Unix timestamp in seconds: ASCII digits only, fitting in a `u64`. Leading zeros
/// are accepted (the signed text is the header's, whatever its form).
pub(super) fn parse(text: &[u8]) -> Result<u64, VerifyError> {
    if text.is_empty() {
        return Err(VerifyError::BadTimestamp);
    }
    text.iter().try_fold(0u64, |value, &c| {
        if !c.is_ascii_digit() {
            return Err(VerifyError::BadTimestamp);
        }
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(VerifyError::BadTimestamp)
    })
}

/// Whether `timestamp` is at most `tolerance` away from `now` (whole seconds; the sub-second
/// part of `now` is dropped, as the senders' own verifiers do).
pub(super) fn check(timestamp: u64, now: Duration, tolerance: Duration) -> Result<(), VerifyError> {
    let distance = Duration::from_secs(now.as_secs().abs_diff(timestamp));
    if distance <= tolerance {
        Ok(())
    } else {
        Err(VerifyError::Stale)
    }
}

/// A verifier's view of time: its clock and its tolerance.
pub(super) struct Window {
    clock: Arc<dyn Clock>,
    tolerance: Duration,
}

impl Window {
    pub(super) fn new(clock: Arc<dyn Clock>, tolerance: Duration) -> Self {
        Self { clock, tolerance }
    }

    /// [`check`] against the clock's current time.
    pub(super) fn check(&self, timestamp: u64) -> Result<(), VerifyError> {
        check(timestamp, self.clock.now(), self.tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn parses_plain_decimal_seconds_only() {
        assert_eq!(parse(b"1614265330"), Ok(1_614_265_330));
        assert_eq!(parse(b"0"), Ok(0));
        assert_eq!(parse(b"0001614265330"), Ok(1_614_265_330));
        assert_eq!(parse(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+1614265330",
            b"1614265330.5",
            b"1.6e9",
            b"16142 65330",
            b"hello",
            b"0x10",
            b"18446744073709551616",
            b"99999999999999999999999",
            "１６".as_bytes(),
        ] {
            assert_eq!(
                parse(bad),
                Err(VerifyError::BadTimestamp),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let t = 1_700_000_000u64;
        let tolerance = Duration::from_secs(300);
        let at = |secs: u64| Duration::from_secs(secs);
        assert_eq!(check(t, at(t), tolerance), Ok(()));
        assert_eq!(check(t, at(t + 300), tolerance), Ok(()));
        assert_eq!(check(t, at(t - 300), tolerance), Ok(()));
        assert_eq!(check(t, at(t + 301), tolerance), Err(VerifyError::Stale));
        assert_eq!(check(t, at(t - 301), tolerance), Err(VerifyError::Stale));
        // The sub-second part of now does not push the boundary.
        assert_eq!(
            check(t, at(t + 300) + Duration::from_millis(999), tolerance),
            Ok(())
        );
        // Extremes neither overflow nor pass.
        assert_eq!(check(u64::MAX, at(t), tolerance), Err(VerifyError::Stale));
        assert_eq!(check(0, at(t), tolerance), Err(VerifyError::Stale));
    }

    #[test]
    fn window_reads_the_injected_clock() {
        let clock = ManualClock::new(Duration::from_secs(1_000));
        let window = Window::new(clock.clone(), Duration::from_secs(10));
        assert_eq!(window.check(990), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(window.check(990), Err(VerifyError::Stale));
        assert_eq!(window.check(1_011), Ok(()));
    }
}
