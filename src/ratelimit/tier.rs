//! What the configuration says about rate limits: named tiers and each route's limit.
//!
//! The config loader parses the file, then builds these (with [`Tiers::set`],
//! [`LimitKey::parse`] and [`RateLimit::resolve`]); the proxy only reads them.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

/// The built-in tiers, in requests per minute.
pub const BUILTIN_TIERS: [(&str, u32); 3] = [("free", 60), ("pro", 600), ("enterprise", 6000)];

/// Named tiers: name → requests per minute (also the burst size).
///
/// Starts from the built-in `free` (60), `pro` (600) and `enterprise` (6000); the config may
/// override them and add more. Iterates in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    by_name: BTreeMap<String, NonZeroU32>,
}

impl Tiers {
    /// The built-in tiers only.
    pub fn builtin() -> Self {
        let by_name = BUILTIN_TIERS
            .iter()
            .filter_map(|&(name, n)| Some((name.to_string(), NonZeroU32::new(n)?)))
            .collect();
        Self { by_name }
    }

    /// Defines or overrides tier `name`; returns the limit it replaced, if any.
    ///
    /// Names are non-empty ASCII letters, digits, `-` and `_` (they appear in metrics and logs).
    pub fn set(
        &mut self,
        name: &str,
        per_minute: NonZeroU32,
    ) -> Result<Option<NonZeroU32>, String> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "tier name {name:?} must be non-empty ASCII letters, digits, '-' or '_'"
            ));
        }
        Ok(self.by_name.insert(name.to_string(), per_minute))
    }

    /// The limit of tier `name`, in requests per minute.
    pub fn get(&self, name: &str) -> Option<NonZeroU32> {
        self.by_name.get(name).copied()
    }

    /// All tiers in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, NonZeroU32)> {
        self.by_name.iter().map(|(name, &n)| (name.as_str(), n))
    }
}

impl Default for Tiers {
    /// The built-in tiers.
    fn default() -> Self {
        Self::builtin()
    }
}

/// What one route's limit counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// `route`: all requests to the route share one bucket.
    Route,
    /// `header:NAME`: one bucket per value of this request header (e.g. a tenant id).
    Header(http::HeaderName),
    /// `client_ip`: one bucket per peer address.
    ClientIp,
}

impl LimitKey {
    /// Parses the config syntax: `route`, `header:NAME` or `client_ip`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "route" => Ok(Self::Route),
            "client_ip" => Ok(Self::ClientIp),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(Self::Header)
                    .map_err(|_| format!("limit key {s:?}: {name:?} is not a valid header name")),
                None => Err(format!(
                    "limit key {s:?} must be 'route', 'header:NAME' or 'client_ip'"
                )),
            },
        }
    }
}

impl fmt::Display for LimitKey {
    /// The config syntax, which [`LimitKey::parse`] reads back (header names in lower case).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Route => f.write_str("route"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::ClientIp => f.write_str("client_ip"),
        }
    }
}

/// One route's rate limit, resolved: the proxy checks `per_minute` per value of `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The tier it came from, for metrics and logs.
    pub tier_name: String,
    /// Requests per minute, and the burst size.
    pub per_minute: NonZeroU32,
    /// What the limit counts per.
    pub key: LimitKey,
}

impl RateLimit {
    /// The limit of tier `tier_name` in `tiers`, counted per `key`; an unknown tier is an error.
    pub fn resolve(tiers: &Tiers, tier_name: &str, key: LimitKey) -> Result<Self, String> {
        let per_minute = tiers.get(tier_name).ok_or_else(|| {
            let known: Vec<&str> = tiers.iter().map(|(name, _)| name).collect();
            format!("unknown tier {tier_name:?} (known: {})", known.join(", "))
        })?;
        Ok(Self {
            tier_name: tier_name.to_string(),
            per_minute,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn builtin_tiers_can_be_overridden_and_extended() {
        let mut tiers = Tiers::builtin();
        assert_eq!(
            tiers.iter().collect::<Vec<_>>(),
            [("enterprise", nz(6000)), ("free", nz(60)), ("pro", nz(600))]
        );
        assert_eq!(tiers.set("free", nz(30)), Ok(Some(nz(60))));
        assert_eq!(tiers.set("partner_x-2", nz(1200)), Ok(None));
        assert_eq!(tiers.get("free"), Some(nz(30)));
        assert_eq!(tiers.get("partner_x-2"), Some(nz(1200)));
        assert_eq!(tiers.get("gold"), None);
        for bad in ["", "a b", "é", "a:b"] {
            assert!(tiers.set(bad, nz(1)).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Tiers::default(), Tiers::builtin());
    }

    #[test]
    fn limit_keys_parse_and_print_the_config_syntax() {
        let tenant = LimitKey::parse("header:X-Tenant-Id").unwrap();
        assert_eq!(
            tenant,
            LimitKey::Header(http::HeaderName::from_static("x-tenant-id"))
        );
        for (text, key) in [
            ("route", LimitKey::Route),
            ("client_ip", LimitKey::ClientIp),
            ("header:x-tenant-id", tenant),
        ] {
            assert_eq!(LimitKey::parse(text).unwrap(), key);
            assert_eq!(key.to_string(), text);
        }
        for bad in [
            "",
            "Route",
            "ip",
            "header:",
            "header:a b",
            "header",
            " route",
        ] {
            assert!(LimitKey::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rate_limits_resolve_their_tier() {
        let tiers = Tiers::builtin();
        let limit = RateLimit::resolve(&tiers, "pro", LimitKey::ClientIp).unwrap();
        assert_eq!(
            limit,
            RateLimit {
                tier_name: "pro".into(),
                per_minute: nz(600),
                key: LimitKey::ClientIp
            }
        );
        let err = RateLimit::resolve(&tiers, "gold", LimitKey::Route).unwrap_err();
        assert!(
            err.contains("gold") && err.contains("enterprise, free, pro"),
            "{err}"
        );
    }
}
