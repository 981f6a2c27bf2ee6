//! Validated scalar values of the config file.
//!
//! Each type expands `${NAME}` and validates inside its `Deserialize` impl, so that serde_yaml
//! attaches the line, column and key path of the offending value to the error (it does so for
//! any error raised while it deserializes a value, `de::Error::custom` included). A value that
//! deserializes is therefore already valid; lowering only moves it into the model.
//!
//! Error messages may quote a value, except a secret's.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::Deserialize;

use super::context::{self, SeenRoute};
use super::model::{
    standard_webhooks_key, HmacAlgorithm, PathPattern, Secret, SignatureEncoding, SignedContent,
    Upstream,
};

/// Deserializes a scalar as a string, expands `${NAME}` in it, and converts it with `convert`.
///
/// Any YAML scalar is accepted as text (`8080` reads as `"8080"`); a mapping or sequence is an
/// error naming `expecting`. `convert` runs *inside* the visitor, while serde_yaml still knows
/// the value's position: an error returned after `deserialize_str` had returned would only get
/// the position of the enclosing mapping.
fn parse_scalar<'de, D, T, F>(
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

/// An integer >= 1, written as a YAML integer or as a string (so `"${THREADS}"` works).
fn positive_integer<'de, D: Deserializer<'de>>(
    deserializer: D,
    expecting: &'static str,
) -> Result<u64, D::Error> {
    struct PositiveVisitor(&'static str);
    impl PositiveVisitor {
        fn check<E: de::Error>(value: u64) -> Result<u64, E> {
            if value == 0 {
                Err(E::custom("must be at least 1"))
            } else {
                Ok(value)
            }
        }
    }
    impl Visitor<'_> for PositiveVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Self::check(value)
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            match u64::try_from(value) {
                Ok(value) => Self::check(value),
                Err(_) => Err(E::custom("must be at least 1")),
            }
        }
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
            Err(E::custom(format!("`{value}` is not a whole number")))
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            let text = context::expand(value).map_err(E::custom)?;
            match text.trim().parse::<u64>() {
                Ok(value) => Self::check(value),
                Err(_) if text.trim().starts_with('-') => Err(E::custom("must be at least 1")),
                Err(_) => Err(E::custom(format!("`{text}` is not a whole number"))),
            }
        }
    }
    deserializer.deserialize_any(PositiveVisitor(expecting))
}

/// A number of worker threads (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Threads(pub NonZeroUsize);

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = positive_integer(deserializer, "a number of threads (at least 1)")?;
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(Self)
            .ok_or_else(|| de::Error::custom("too many threads"))
    }
}

/// A body size limit in bytes (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteLimit(pub u64);

impl<'de> Deserialize<'de> for ByteLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        positive_integer(deserializer, "a size in bytes (at least 1)").map(Self)
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

/// A plain-HTTP upstream `http://host[:port]`, resolved now.
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

/// Parses and resolves `http://host[:port][/]` (port 80 by default).
fn parse_upstream(text: &str) -> Result<Upstream, String> {
    const EXPECTED: &str = "expected `http://host:port`";
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
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "`{text}`: TLS to upstreams is not supported yet; use a plain `http://` upstream \
             (e.g. a local TLS-terminating sidecar)"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "`{text}`: unsupported scheme `{scheme}`; {EXPECTED}"
        ));
    }
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
        _ => 80,
    };
    let host = authority.host();
    // `host` keeps an IPv6 literal's brackets, which `(&str, u16)` resolution does not accept.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare_host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve upstream host `{host}`: {err}"))?
        .next()
        .ok_or_else(|| format!("upstream host `{host}` resolved to no address"))?;
    Ok(Upstream {
        url: format!("http://{authority}"),
        addr,
    })
}

/// The name of the header carrying the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderName(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "an HTTP header name", |text| {
            http::HeaderName::from_bytes(text.as_bytes())
                .map(Self)
                .map_err(|_| {
                    format!(
                        "`{text}` is not a valid HTTP header name (letters, digits and \
                         `!#$%&'*+-.^_|~` only, no spaces or `:`)"
                    )
                })
        })
    }
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

/// `verify.algorithm` (scheme `hmac`): `sha256` or `sha512`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Algorithm(pub HmacAlgorithm);

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`sha256` or `sha512`", |text| {
            match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
                "sha256" => Ok(Self(HmacAlgorithm::Sha256)),
                "sha512" => Ok(Self(HmacAlgorithm::Sha512)),
                "sha1" => Err(
                    "`sha1` is not supported: hookgate ships no SHA-1 implementation; \
                               use `sha256` or `sha512`"
                        .to_string(),
                ),
                _ => Err(format!(
                    "unknown algorithm `{text}`; expected `sha256` or `sha512`"
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
