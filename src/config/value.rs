//! Validated scalar values of the config file.
//!
//! Each type expands `${NAME}` and validates inside its `Deserialize` impl, so that serde_yaml
//! attaches the line, column and key path of the offending value to the error (it does so for
//! any error raised while it deserializes a value, `de::Error::custom` included). A value that
//! deserializes is therefore already valid; lowering only moves it into the model. The
//! exceptions are what needs the whole file (whether a route's `tier` exists, `rate_limit_key`
//! without `tier`): lowering checks it, and the value raises the error on a second reading
//! ([`context::deferred_error`]).
//!
//! Error messages may quote a value, except a secret's.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::Deserialize;

use super::context::{self, RouteKey, SeenRoute};
use super::model::{
    standard_webhooks_key, HmacAlgorithm, IdSource, LimitKey, MissingId, PathPattern, Secret,
    SignatureEncoding, SignedContent, Tiers, Upstream, UpstreamTls,
};

/// Deserializes a scalar as a string, expands `${NAME}` in it, and converts it with `convert`.
///
/// Any YAML scalar is accepted as text (`8080` reads as `"8080"`); a mapping or sequence is an
/// error naming `expecting`. `convert` runs *inside* the visitor, while serde_yaml still knows
/// the value's position: an error returned after `deserialize_str` had returned would only get
/// the position of the enclosing mapping.
pub(crate) fn parse_scalar<'de, D, T, F>(
    deserializer: D,
    expecting: &'static str,
    convert: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(String) -> Result<T, String>,
{
    struct ScalarVisitor<F> {
        expecting: &'static str,
        convert: F,
    }
    impl<T, F: FnOnce(String) -> Result<T, String>> Visitor<'_> for ScalarVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
            let text = context::expand(value).map_err(E::custom)?;
            (self.convert)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(ScalarVisitor { expecting, convert })
}

/// A listening address: `ip:port` (`127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "an `ip:port` address", |text| {
            text.trim().parse().map(Self).map_err(|_| {
                format!(
                    "`{text}` is not an `ip:port` socket address (e.g. `127.0.0.1:8080`, \
                     `0.0.0.0:8080` or `[::1]:8080`; host names are not accepted here)"
                )
            })
        })
    }
}

/// A strictly positive duration in humantime syntax (`30s`, `500ms`, `1m 30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a duration such as `30s`", |text| {
            let duration = humantime::parse_duration(text.trim()).map_err(|err| {
                format!(
                    "`{text}` is not a duration ({err}); write a number with a unit, e.g. \
                     `30s`, `500ms` or `2m`"
                )
            })?;
            if duration.is_zero() {
                return Err(format!(
                    "the duration must be greater than 0 (got `{text}`)"
                ));
            }
            Ok(Self(duration))
        })
    }
}

/// An integer >= 1, written as a YAML integer or as a string (so `"${THREADS}"` works), then
/// converted by `convert`, which runs inside the visitor so that its error gets the value's
/// position too.
fn positive_integer<'de, D, T, F>(
    deserializer: D,
    expecting: &'static str,
    convert: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(u64) -> Result<T, String>,
{
    struct PositiveVisitor<F> {
        expecting: &'static str,
        convert: F,
    }
    impl<F> PositiveVisitor<F> {
        fn check<T, E: de::Error>(self, value: u64) -> Result<T, E>
        where
            F: FnOnce(u64) -> Result<T, String>,
        {
            if value == 0 {
                Err(E::custom("must be at least 1"))
            } else {
                (self.convert)(value).map_err(E::custom)
            }
        }
    }
    impl<T, F: FnOnce(u64) -> Result<T, String>> Visitor<'_> for PositiveVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
            self.check(value)
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
            match u64::try_from(value) {
                Ok(value) => self.check(value),
                Err(_) => Err(E::custom("must be at least 1")),
            }
        }
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
            Err(E::custom(format!("`{value}` is not a whole number")))
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
            let text = context::expand(value).map_err(E::custom)?;
            match text.trim().parse::<u64>() {
                Ok(value) => self.check(value),
                Err(_) if text.trim().starts_with('-') => Err(E::custom("must be at least 1")),
                Err(_) => Err(E::custom(format!("`{text}` is not a whole number"))),
            }
        }
    }
    deserializer.deserialize_any(PositiveVisitor { expecting, convert })
}

/// `value` as a `NonZeroU32` (`value` is already >= 1).
fn non_zero_u32(value: u64) -> Result<NonZeroU32, String> {
    u32::try_from(value)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("`{value}` is too large (at most {})", u32::MAX))
}

/// A number of worker threads (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Threads(pub NonZeroUsize);

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        positive_integer(deserializer, "a number of threads (at least 1)", |value| {
            usize::try_from(value)
                .ok()
                .and_then(NonZeroUsize::new)
                .map(Self)
                .ok_or_else(|| "too many threads".to_string())
        })
    }
}

/// A body size limit in bytes (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteLimit(pub u64);

impl<'de> Deserialize<'de> for ByteLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        positive_integer(deserializer, "a size in bytes (at least 1)", |value| {
            Ok(Self(value))
        })
    }
}

/// A route's name: non-empty, `A-Z a-z 0-9 _ - .` only (it becomes a metric label and a log
/// field), and unique among the routes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteName(pub String);

impl<'de> Deserialize<'de> for RouteName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a route name", |name| {
            if name.is_empty() {
                return Err("the route name is empty".to_string());
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!(
                    "route name `{name}` may only contain ASCII letters, digits, `_`, `-` and `.`"
                ));
            }
            if let Some((index, _)) = context::find_seen_route(|seen| seen.name == name) {
                return Err(format!(
                    "duplicate route name `{name}` (already used by routes[{index}]); route \
                     names must be unique"
                ));
            }
            Ok(Self(name))
        })
    }
}

/// A route's path pattern (see [`PathPattern::parse`]) that overlaps no route read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutePath(pub PathPattern);

impl<'de> Deserialize<'de> for RoutePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expecting = "a path such as `/webhooks/x` or `/hooks/*`";
        parse_scalar(deserializer, expecting, |text| {
            let path = PathPattern::parse(&text)?;
            if let Some((index, seen)) = context::find_seen_route(|seen| seen.path.overlaps(&path))
            {
                let SeenRoute {
                    name,
                    path: seen_path,
                } = seen;
                return Err(format!(
                    "path `{path}` overlaps path `{seen_path}` of route `{name}` \
                     (routes[{index}]); every request path must match at most one route"
                ));
            }
            Ok(Self(path))
        })
    }
}

/// An upstream `http://host[:port]` or `https://host[:port]`, resolved now. An https one gets
/// the default TLS settings (its host as SNI, verified against the system's roots) until the
/// route's `upstream_tls` is applied (`super::tls::combine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamUrl(pub Upstream);

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expecting = "an upstream URL such as `http://127.0.0.1:3000`";
        parse_scalar(deserializer, expecting, |text| {
            parse_upstream(text.trim()).map(Self)
        })
    }
}

/// A route's own `upstream`, which also raises the errors lowering finds about it
/// ([`context::deferred_error`]: an https upstream at an IP address without `sni`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteUpstream(pub Upstream);

impl<'de> Deserialize<'de> for RouteUpstream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expecting = "an upstream URL such as `http://127.0.0.1:3000`";
        parse_scalar(deserializer, expecting, |text| {
            let upstream = parse_upstream(text.trim())?;
            match context::deferred_error(RouteKey::Upstream) {
                Some(message) => Err(message),
                None => Ok(Self(upstream)),
            }
        })
    }
}

/// Parses and resolves `http://host[:port][/]` (port 80 by default) or `https://host[:port][/]`
/// (port 443).
fn parse_upstream(text: &str) -> Result<Upstream, String> {
    const EXPECTED: &str = "expected `http://host:port` or `https://host:port`";
    // Checked first: user info may hold a password, which no message may echo.
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority_part = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority_part.contains('@') {
        return Err(format!(
            "the upstream URL may not contain user info (`user@`); {EXPECTED}"
        ));
    }
    let (scheme, _) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` has no scheme; {EXPECTED}"))?;
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else {
        return Err(format!(
            "`{text}`: unsupported scheme `{scheme}`; {EXPECTED}"
        ));
    };
    if text.contains('#') {
        return Err(format!(
            "`{text}`: the upstream URL may not have a fragment; {EXPECTED}"
        ));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|err| format!("`{text}` is not a valid URL ({err}); {EXPECTED}"))?;
    if uri.query().is_some() {
        return Err(format!(
            "`{text}`: the upstream URL may not have a query; the request's own query is \
             forwarded as received"
        ));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(format!(
            "`{text}`: the upstream URL may not have a path (`{}`); the request's own path is \
             forwarded as received",
            uri.path()
        ));
    }
    let authority = uri
        .authority()
        .filter(|authority| !authority.host().is_empty())
        .ok_or_else(|| format!("`{text}` has no host; {EXPECTED}"))?;
    // Read the port from the text: `Authority::port` is `None` for an out-of-range port too.
    let port = match authority.as_str().rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "`{text}`: invalid port `{port}` (expected 1 to 65535); {EXPECTED}"
                ))
            }
            Ok(port) => port,
        },
        _ => default_port,
    };
    let host = authority.host();
    // `host` keeps an IPv6 literal's brackets, which `(&str, u16)` resolution does not accept.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    // Under `cargo fuzz` (which sets `cfg(fuzzing)`), the hosts the fuzzer makes up are not
    // sent to DNS: only IP literals and `localhost` resolve, anything else fails as an
    // unresolvable host does. Normal builds never compile this.
    #[cfg(fuzzing)]
    if bare_host.parse::<std::net::IpAddr>().is_err() && bare_host != "localhost" {
        return Err(format!(
            "cannot resolve upstream host `{host}`: not looked up while fuzzing"
        ));
    }
    let addr = (bare_host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve upstream host `{host}`: {err}"))?
        .next()
        .ok_or_else(|| format!("upstream host `{host}` resolved to no address"))?;
    let tls = (scheme == "https").then(|| UpstreamTls {
        // An IP address is no SNI; `tls::combine` then asks for `upstream_tls.sni`.
        sni: match bare_host.parse::<std::net::IpAddr>() {
            Ok(_) => String::new(),
            Err(_) => bare_host.trim_end_matches('.').to_ascii_lowercase(),
        },
        verify: true,
        ca: None,
    });
    Ok(Upstream {
        url: format!("{scheme}://{authority}"),
        addr,
        tls,
    })
}

/// The name of the header carrying the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderName(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "an HTTP header name", |text| {
            parse_header_name(&text).map(Self)
        })
    }
}

fn parse_header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        format!(
            "`{text}` is not a valid HTTP header name (letters, digits and \
             `!#$%&'*+-.^_|~` only, no spaces or `:`)"
        )
    })
}

/// A non-empty list of non-empty secrets. No error message ever contains a secret's value
/// (and `Secret`'s `Debug` is redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Secrets(pub Vec<Secret>);

/// A check a route's scheme makes on each of its secrets (a Standard Webhooks secret must be
/// base64). Its message never quotes the secret.
pub(crate) type SecretCheck = fn(&str) -> Result<(), String>;

/// Reads a `secrets` list, running `check` on each secret inside that secret's own visitor, so
/// that a bad one is reported at its own line.
pub(crate) struct SecretsSeed(pub Option<SecretCheck>);

impl<'de> DeserializeSeed<'de> for SecretsSeed {
    type Value = Secrets;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Secrets, D::Error> {
        const NOT_A_LIST: &str = "must be a list of secrets (one `- secret` item per line), not a \
                                  single value";
        struct ListVisitor(Option<SecretCheck>);
        // Every non-list case is overridden so that serde's default "invalid type" message,
        // which quotes the value, never prints a secret written in the wrong place.
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<Secret>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty list of secrets")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut secrets = Vec::new();
                while let Some(secret) = seq.next_element_seed(SecretSeed(self.0))? {
                    secrets.push(secret);
                }
                if secrets.is_empty() {
                    return Err(de::Error::custom(
                        "at least one secret is required (list several to rotate without \
                         downtime)",
                    ));
                }
                Ok(secrets)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_LIST))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_LIST))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_LIST))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_LIST))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_LIST))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("at least one secret is required"))
            }
        }
        deserializer
            .deserialize_any(ListVisitor(self.0))
            .map(Secrets)
    }
}

/// One secret: the whole string (a `whsec_` prefix included), `${NAME}` expanded, not empty,
/// and passing the scheme's check if there is one.
struct SecretSeed(Option<SecretCheck>);

impl<'de> DeserializeSeed<'de> for SecretSeed {
    type Value = Secret;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Secret, D::Error> {
        // `deserialize_str` takes any scalar as its text and reports only the *kind* of a
        // non-scalar, so nothing here can quote the secret.
        parse_scalar(deserializer, "a secret string", |secret| {
            if secret.is_empty() {
                return Err(
                    "the secret is empty (is its environment variable set to an empty value?)"
                        .to_string(),
                );
            }
            if let Some(check) = self.0 {
                check(&secret)?;
            }
            Ok(Secret::new(secret))
        })
    }
}

/// `verify.scheme`: how the route's senders sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemeName {
    HmacSha256,
    StandardWebhooks,
    GitHub,
    Stripe,
    Shopify,
    Slack,
    Hmac,
}

impl SchemeName {
    const ALL: [(&'static str, SchemeName); 7] = [
        ("hmac-sha256", Self::HmacSha256),
        ("standard-webhooks", Self::StandardWebhooks),
        ("github", Self::GitHub),
        ("stripe", Self::Stripe),
        ("shopify", Self::Shopify),
        ("slack", Self::Slack),
        ("hmac", Self::Hmac),
    ];

    pub(crate) fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, scheme)| *scheme == self)
            .map_or("", |(name, _)| name)
    }

    /// The check this scheme makes on each secret, if any.
    pub(crate) fn secret_check(self) -> Option<SecretCheck> {
        fn standard_webhooks(secret: &str) -> Result<(), String> {
            standard_webhooks_key(secret).map(drop)
        }
        match self {
            Self::StandardWebhooks => Some(standard_webhooks),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for SchemeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a signature scheme name", |text| {
            let name = text.trim();
            Self::ALL
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name))
                .map(|(_, scheme)| *scheme)
                .ok_or_else(|| {
                    let known: Vec<String> =
                        Self::ALL.iter().map(|(n, _)| format!("`{n}`")).collect();
                    format!(
                        "unknown signature scheme `{name}`; expected one of {}",
                        known.join(", ")
                    )
                })
        })
    }
}

/// `verify.algorithm` (scheme `hmac`): `sha256`, `sha512`, or `sha1` (only when named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Algorithm(pub HmacAlgorithm);

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`sha256`, `sha512` or `sha1`", |text| {
            match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
                "sha256" => Ok(Self(HmacAlgorithm::Sha256)),
                "sha512" => Ok(Self(HmacAlgorithm::Sha512)),
                // Never a default: SHA-1 is weak, and only legacy senders need it.
                "sha1" => Ok(Self(HmacAlgorithm::Sha1)),
                _ => Err(format!(
                    "unknown algorithm `{text}`; expected `sha256`, `sha512` or `sha1`"
                )),
            }
        })
    }
}

/// `verify.encoding` (scheme `hmac`): `hex` or `base64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding(pub SignatureEncoding);

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`hex` or `base64`", |text| {
            match text.trim().to_ascii_lowercase().as_str() {
                "hex" => Ok(Self(SignatureEncoding::Hex)),
                "base64" => Ok(Self(SignatureEncoding::Base64)),
                _ => Err(format!(
                    "unknown encoding `{text}`; expected `hex` or `base64`"
                )),
            }
        })
    }
}

/// `verify.prefix` (scheme `hmac`): text before the MAC in the header value, e.g. `sha256=`.
/// Visible ASCII only, since it is compared with a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignaturePrefix(pub String);

impl<'de> Deserialize<'de> for SignaturePrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(
            deserializer,
            "a signature prefix such as `sha256=`",
            |text| {
                if text.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(Self(text))
                } else {
                    Err(format!(
                        "prefix `{text}` may only contain visible ASCII characters (no spaces)"
                    ))
                }
            },
        )
    }
}

/// `verify.signed_content` (scheme `hmac`): a template such as `{timestamp}.{body}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(pub SignedContent);

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(
            deserializer,
            "a template such as `{timestamp}.{body}`",
            |text| SignedContent::parse(&text).map(Self),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits: `tiers`, `unverified_per_ip`, a route's `tier` and `rate_limit_key`

/// A limit in requests per minute (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerMinute(pub NonZeroU32);

impl<'de> Deserialize<'de> for PerMinute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        positive_integer(deserializer, "requests per minute (at least 1)", |value| {
            non_zero_u32(value).map(Self)
        })
    }
}

/// The top-level `tiers` mapping (name: requests per minute), over the built-in tiers (also
/// its default): an entry overrides a built-in tier or adds one. A bad name is reported at its value, whose
/// key path names it (`tiers.<name>`); a repeated name was reported by `scan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TierTable(pub Tiers);

impl<'de> Deserialize<'de> for TierTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TiersVisitor;
        impl<'de> Visitor<'de> for TiersVisitor {
            type Value = Tiers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of tier names to requests per minute")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Tiers, A::Error> {
                let mut tiers = Tiers::builtin();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value_seed(TierSeed {
                        tiers: &mut tiers,
                        name: &name,
                    })?;
                }
                Ok(tiers)
            }
        }
        deserializer.deserialize_map(TiersVisitor).map(Self)
    }
}

/// One entry of `tiers`: its limit, added to `tiers` inside the value's visitor so that a name
/// [`Tiers::set`] refuses is reported at this entry's line.
struct TierSeed<'a> {
    tiers: &'a mut Tiers,
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for TierSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let Self { tiers, name } = self;
        positive_integer(deserializer, "requests per minute (at least 1)", |value| {
            let per_minute = non_zero_u32(value)?;
            tiers.set(name, per_minute).map(drop)
        })
    }
}

/// A route's `tier`. Whether the tier exists is known only once the whole file is read (the
/// top-level `tiers` may come after `routes`), so lowering checks it and reports an unknown
/// tier through [`context::deferred_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TierRef(pub String);

impl<'de> Deserialize<'de> for TierRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a tier name", |text| {
            let name = text.trim();
            if name.is_empty() {
                return Err("the tier name is empty".to_string());
            }
            match context::deferred_error(RouteKey::Tier) {
                Some(message) => Err(message),
                None => Ok(Self(name.to_string())),
            }
        })
    }
}

/// A route's `rate_limit_key`: `route`, `header:NAME` or `client_ip` ([`LimitKey::parse`]).
/// Lowering refuses it on a route without `tier`, through [`context::deferred_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimitKey(pub LimitKey);

impl<'de> Deserialize<'de> for RateLimitKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expecting = "`route`, `header:NAME` or `client_ip`";
        parse_scalar(deserializer, expecting, |text| {
            let key = LimitKey::parse(text.trim())?;
            match context::deferred_error(RouteKey::RateLimitKey) {
                Some(message) => Err(message),
                None => Ok(Self(key)),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Deduplication: a route's `dedup` values

/// `dedup.capacity`: records kept for the route (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity(pub NonZeroUsize);

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        positive_integer(deserializer, "a number of entries (at least 1)", |value| {
            usize::try_from(value)
                .ok()
                .and_then(NonZeroUsize::new)
                .map(Self)
                .ok_or_else(|| format!("`{value}` is too large"))
        })
    }
}

/// `dedup.missing`: `reject` or `forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing(pub MissingId);

impl<'de> Deserialize<'de> for Missing {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`reject` or `forward`", |text| {
            match text.trim().to_ascii_lowercase().as_str() {
                "reject" => Ok(Self(MissingId::Reject)),
                "forward" => Ok(Self(MissingId::Forward)),
                _ => Err(format!(
                    "unknown value `{text}`; expected `reject` (answer 400) or `forward` \
                     (forward without deduplication)"
                )),
            }
        })
    }
}

/// The keys of `dedup` that say where the delivery ID is; at most one may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKey {
    Header,
    Json,
    BodyHash,
}

impl SourceKey {
    fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Json => "json",
            Self::BodyHash => "body_hash",
        }
    }
}

/// Reads the value of the source key `key` of a `dedup` mapping. `earlier` is the source key
/// already read in that mapping, if any: then this one is an error, raised inside this value's
/// visitor so that it names this key and its line.
pub(crate) struct IdSourceSeed {
    pub key: SourceKey,
    pub earlier: Option<SourceKey>,
}

impl IdSourceSeed {
    fn conflict(&self) -> Result<(), String> {
        match self.earlier {
            Some(earlier) => Err(format!(
                "`{}` and `{}` are both set; the delivery ID comes from one source: set only \
                 one of `header`, `json` and `body_hash`",
                self.key.as_str(),
                earlier.as_str()
            )),
            None => Ok(()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for IdSourceSeed {
    type Value = IdSource;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<IdSource, D::Error> {
        match self.key {
            SourceKey::Header => parse_scalar(deserializer, "an HTTP header name", |text| {
                self.conflict()?;
                parse_header_name(text.trim()).map(IdSource::Header)
            }),
            SourceKey::Json => parse_scalar(deserializer, "a JSON pointer such as `/id`", |text| {
                self.conflict()?;
                parse_json_pointer(&text).map(IdSource::JsonPointer)
            }),
            SourceKey::BodyHash => deserializer.deserialize_any(BodyHashVisitor(self)),
        }
    }
}

/// `body_hash`: only `true` means something (`false` alone would silently fall back to the
/// scheme's default source, which is surely not what was meant).
struct BodyHashVisitor(IdSourceSeed);

impl BodyHashVisitor {
    fn finish<E: de::Error>(self, value: bool) -> Result<IdSource, E> {
        self.0.conflict().map_err(E::custom)?;
        if value {
            Ok(IdSource::BodyHash)
        } else {
            Err(E::custom(
                "`body_hash: false` does nothing: set body_hash: true or leave it out (the \
                 scheme's delivery ID, or `header` or `json`, is used then)",
            ))
        }
    }
}

impl Visitor<'_> for BodyHashVisitor {
    type Value = IdSource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`true`")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<IdSource, E> {
        self.finish(value)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<IdSource, E> {
        let text = context::expand(value).map_err(E::custom)?;
        match text.trim() {
            "true" => self.finish(true),
            "false" => self.finish(false),
            _ => Err(E::custom(format!("`{text}` is not `true` or `false`"))),
        }
    }
}

/// A JSON pointer (RFC 6901): empty (the whole document) or `/`-separated reference tokens, in
/// which `~` is only found escaped as `~0` (`~`) or `~1` (`/`).
fn parse_json_pointer(text: &str) -> Result<String, String> {
    if !text.is_empty() && !text.starts_with('/') {
        return Err(format!(
            "JSON pointer `{text}` must be empty or start with `/` (e.g. `/id` or `/data/id`)"
        ));
    }
    let mut rest = text;
    while let Some(at) = rest.find('~') {
        rest = &rest[at + 1..];
        if !rest.starts_with(['0', '1']) {
            return Err(format!(
                "JSON pointer `{text}`: `~` must be followed by `0` (for `~`) or `1` (for `/`)"
            ));
        }
    }
    Ok(text.to_string())
}
