//! The replay window: a delivery whose payload timestamp is too old (or too far in the future)
//! is refused even when its signature is valid, so a captured request can't be replayed after
//! its deduplication record expired.

use std::borrow::Cow;
use std::time::Duration;

/// How far a payload's `timestamp` may be from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Oldest accepted timestamp, as an age: `now - timestamp <= max_age`. Keep it below the
    /// route's dedup TTL, so a replay is refused by one or the other.
    pub max_age: Duration,
    /// How far ahead of our clock a sender's clock may be: `timestamp <= now + max_skew`.
    pub max_skew: Duration,
}

/// Why a payload fell outside the [`ReplayWindow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The body is a JSON object without a `timestamp` string (or with a null one).
    #[error("payload has no timestamp")]
    Missing,
    /// The body isn't JSON, or `timestamp` isn't an RFC 3339 date-time string.
    #[error("payload timestamp is not an RFC 3339 date-time")]
    Unparsable,
    /// The timestamp is older than `max_age`.
    #[error("payload timestamp is {age:?} old, more than the allowed {max_age:?}")]
    TooOld {
        /// How old the timestamp is.
        age: Duration,
        /// The window's `max_age`.
        max_age: Duration,
    },
    /// The timestamp is more than `max_skew` ahead of now.
    #[error("payload timestamp is {ahead:?} in the future, more than the allowed {max_skew:?}")]
    InFuture {
        /// How far ahead the timestamp is.
        ahead: Duration,
        /// The window's `max_skew`.
        max_skew: Duration,
    },
}

/// Just the field the window needs; every other field is skipped without being built.
#[derive(serde::Deserialize)]
struct Timestamped<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

impl ReplayWindow {
    /// Checks the top-level `timestamp` field of a JSON body against `now` (since the epoch,
    /// from the gateway's [`Clock`](crate::clock::Clock)). Allocates nothing unless the
    /// timestamp string contains JSON escapes.
    pub fn check_body(&self, body: &[u8], now: Duration) -> Result<(), ReplayError> {
        // A derived struct also deserializes from a JSON array, whose first element would be
        // taken for the timestamp: only an object has a `timestamp` field.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ReplayError::Unparsable);
        }
        let payload: Timestamped<'_> =
            serde_json::from_slice(body).map_err(|_| ReplayError::Unparsable)?;
        let timestamp = payload.timestamp.ok_or(ReplayError::Missing)?;
        self.check_timestamp(&timestamp, now)
    }

    /// Checks one RFC 3339 timestamp against `now`. Both ends are inclusive: a timestamp
    /// exactly `max_age` old, or exactly `max_skew` ahead, is accepted.
    pub fn check_timestamp(&self, timestamp: &str, now: Duration) -> Result<(), ReplayError> {
        let at = parse_rfc3339(timestamp).ok_or(ReplayError::Unparsable)?;
        let now = now.as_nanos() as i128;
        if at <= now {
            let age = nanos_to_duration(now - at);
            if age > self.max_age {
                return Err(ReplayError::TooOld {
                    age,
                    max_age: self.max_age,
                });
            }
        } else {
            let ahead = nanos_to_duration(at - now);
            if ahead > self.max_skew {
                return Err(ReplayError::InFuture {
                    ahead,
                    max_skew: self.max_skew,
                });
            }
        }
        Ok(())
    }
}

fn nanos_to_duration(nanos: i128) -> Duration {
    let nanos = u128::try_from(nanos).unwrap_or(0);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// Parses an RFC 3339 `date-time` (section 5.6) into nanoseconds since the Unix epoch
/// (negative before 1970): `2024-01-15T10:30:00Z`, `2024-01-15T11:30:00.250+01:00`.
///
/// Accepts `T`, `t` or a space between date and time (the RFC's note allows the space), `Z` or
/// `z`, any number of fraction digits (beyond nanoseconds they are ignored) and a leap second
/// `:60` (counted as the next second, like POSIX time). Rejects everything else, including
/// impossible dates (`2023-02-29`), a missing offset and trailing text. Never panics.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    let month = after(b, 4, b'-', 2)?;
    let day = after(b, 7, b'-', 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let minute = after(b, 13, b':', 2)?;
    let second = after(b, 16, b':', 2)?;

    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            i += 1;
        }
        let count = i - start;
        if count == 0 {
            return None;
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }

    let offset = match b.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let oh = digits(b, i + 1, 2)?;
            let om = after(b, i + 3, b':', 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let minutes = oh * 60 + om;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }

    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

/// `n` ASCII digits at `b[at..]`, as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let field = b.get(at..at.checked_add(n)?)?;
    field.iter().try_fold(0i64, |acc, d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

/// The separator `sep` at `b[at]`, then `n` digits.
fn after(b: &[u8], at: usize, sep: u8, n: usize) -> Option<i64> {
    (b.get(at) == Some(&sep)).then_some(())?;
    digits(b, at + 1, n)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March is 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    fn secs(s: &str) -> i128 {
        parse_rfc3339(s).unwrap_or_else(|| panic!("{s} should parse")) / S
    }

    #[test]
    fn parses_known_instants() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2024-01-15T10:30:00Z"), 1_705_314_600);
        assert_eq!(secs("2000-02-29T12:00:00Z"), 951_825_600);
        assert_eq!(secs("9999-12-31T23:59:59Z"), 253_402_300_799);
        assert_eq!(secs("0001-01-01T00:00:00Z"), -62_135_596_800);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-S));
        // Lowercase and space separators; a leap second rolls over.
        assert_eq!(secs("2024-01-15t10:30:00z"), 1_705_314_600);
        assert_eq!(secs("2024-01-15 10:30:00Z"), 1_705_314_600);
        assert_eq!(secs("2016-12-31T23:59:60Z"), secs("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn offsets() {
        let utc = secs("2024-01-15T10:30:00Z");
        assert_eq!(secs("2024-01-15T11:30:00+01:00"), utc);
        assert_eq!(secs("2024-01-15T05:00:00-05:30"), utc);
        assert_eq!(secs("2024-01-15T10:30:00+00:00"), utc);
        assert_eq!(secs("2024-01-15T10:30:00-00:00"), utc);
        // An offset can cross a date boundary.
        assert_eq!(secs("2024-01-16T00:30:00+14:00"), utc);
        assert_eq!(secs("2024-01-14T23:59:00-10:31"), utc);
    }

    #[test]
    fn fractional_seconds() {
        let base = parse_rfc3339("2024-01-15T10:30:00Z").unwrap();
        let at = |s: &str| parse_rfc3339(s).unwrap() - base;
        assert_eq!(at("2024-01-15T10:30:00.5Z"), S / 2);
        assert_eq!(at("2024-01-15T10:30:00.000001Z"), 1_000);
        assert_eq!(at("2024-01-15T10:30:00.123456789Z"), 123_456_789);
        assert_eq!(at("2024-01-15T10:30:00.1234567899999Z"), 123_456_789);
        assert_eq!(at("2024-01-15T11:30:00.250+01:00"), S / 4);
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        for bad in [
            "",
            "2024",
            "2024-01-15",
            "2024-01-15T10:30Z",
            "2024-01-15T10:30:00",    // no offset
            "2024-01-15T10:30:00+01", // offset without minutes
            "2024-01-15T10:30:00+0100",
            "2024-01-15T10:30:00+24:00",
            "2024-01-15T10:30:00+01:60",
            "2024-01-15T10:30:00.Z", // empty fraction
            "2024-01-15T10:30:00ZZ", // trailing text
            "2024-01-15T10:30:00Z ",
            " 2024-01-15T10:30:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-01-15T24:00:00Z",
            "2024-01-15T10:60:00Z",
            "2024-01-15T10:30:61Z",
            "2024-01-15X10:30:00Z",
            "2024/01/15T10:30:00Z",
            "+2024-01-15T10:30:00Z",
            "-024-01-15T10:30:00Z",
            "２０２４-01-15T10:30:00Z",
            "2024-01-15T10:30:00.1é",
            "1705314600",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?} should be rejected");
        }
        // Every prefix and every single-byte corruption of a valid timestamp: no panic.
        let good = "2024-02-29T23:59:60.123456789+14:00";
        assert!(parse_rfc3339(good).is_some());
        for end in 0..good.len() {
            let _ = parse_rfc3339(&good[..end]);
        }
        for i in 0..good.len() {
            for byte in [b'0', b'9', b':', b'-', b'+', b'.', b'Z', b'T', b' ', 0xff] {
                let mut bytes = good.as_bytes().to_vec();
                bytes[i] = byte;
                if let Ok(s) = std::str::from_utf8(&bytes) {
                    let _ = parse_rfc3339(s);
                }
            }
        }
    }

    fn window() -> ReplayWindow {
        ReplayWindow {
            max_age: Duration::from_secs(300),
            max_skew: Duration::from_secs(30),
        }
    }

    /// `now` = 2024-01-15T10:30:00Z.
    const NOW: Duration = Duration::from_secs(1_705_314_600);

    #[test]
    fn window_boundaries() {
        let w = window();
        let check = |ts: &str| w.check_timestamp(ts, NOW);
        assert_eq!(check("2024-01-15T10:30:00Z"), Ok(()));
        // Exactly max_age old passes; one second more doesn't.
        assert_eq!(check("2024-01-15T10:25:00Z"), Ok(()));
        assert_eq!(check("2024-01-15T10:25:01Z"), Ok(()));
        assert_eq!(
            check("2024-01-15T10:24:59Z"),
            Err(ReplayError::TooOld {
                age: Duration::from_secs(301),
                max_age: Duration::from_secs(300)
            })
        );
        assert!(matches!(
            check("2024-01-15T10:24:59.999Z"),
            Err(ReplayError::TooOld { .. })
        ));
        // Exactly max_skew ahead passes; one second more doesn't.
        assert_eq!(check("2024-01-15T10:30:29Z"), Ok(()));
        assert_eq!(check("2024-01-15T10:30:30Z"), Ok(()));
        assert_eq!(
            check("2024-01-15T10:30:31Z"),
            Err(ReplayError::InFuture {
                ahead: Duration::from_secs(31),
                max_skew: Duration::from_secs(30)
            })
        );
        assert!(matches!(
            check("2024-01-15T10:30:30.001Z"),
            Err(ReplayError::InFuture { .. })
        ));
        // The same instants written with an offset.
        assert_eq!(check("2024-01-15T11:25:00+01:00"), Ok(()));
        assert!(matches!(
            check("2024-01-15T11:24:59+01:00"),
            Err(ReplayError::TooOld { .. })
        ));
        assert!(matches!(
            check("2024-01-15T05:00:31-05:30"),
            Err(ReplayError::InFuture { .. })
        ));
        assert_eq!(check("yesterday"), Err(ReplayError::Unparsable));
        assert!(matches!(
            check("1969-01-01T00:00:00Z"),
            Err(ReplayError::TooOld { .. })
        ));
    }

    #[test]
    fn window_reads_the_payload() {
        let w = window();
        let check = |body: &str| w.check_body(body.as_bytes(), NOW);
        assert_eq!(
            check(r#"{"id":"evt_1","timestamp":"2024-01-15T10:29:00Z"}"#),
            Ok(())
        );
        assert_eq!(
            check(r#"{"timestamp":"2024-01-15T10:29:00\u005a","data":{"x":[1,2]}}"#),
            Ok(()),
            "escaped strings are decoded"
        );
        assert!(matches!(
            check(r#"{"timestamp":"2024-01-15T10:00:00Z"}"#),
            Err(ReplayError::TooOld { .. })
        ));
        assert_eq!(check(r#"{"id":"evt_1"}"#), Err(ReplayError::Missing));
        assert_eq!(check(r#"{"timestamp":null}"#), Err(ReplayError::Missing));
        assert_eq!(
            check(r#"{"timestamp":1705314600}"#),
            Err(ReplayError::Unparsable)
        );
        assert_eq!(
            check(r#"{"timestamp":"soon"}"#),
            Err(ReplayError::Unparsable)
        );
        assert_eq!(check("not json"), Err(ReplayError::Unparsable));
        assert_eq!(check(""), Err(ReplayError::Unparsable));
    }

    // Found by fuzz/fuzz_targets/delivery_ids.rs: an array's first element was read as the
    // timestamp, so `["<now>"]` passed the window.
    #[test]
    fn only_an_object_has_a_timestamp() {
        let w = window();
        let check = |body: &str| w.check_body(body.as_bytes(), NOW);
        for body in [
            r#"["2024-01-15T10:29:00Z"]"#,
            r#" ["2024-01-15T10:29:00Z"]"#,
            "[]",
            r#""2024-01-15T10:29:00Z""#,
        ] {
            assert_eq!(check(body), Err(ReplayError::Unparsable), "{body}");
        }
        assert_eq!(check(" \n{\"timestamp\":\"2024-01-15T10:29:00Z\"}"), Ok(()));
    }
}
