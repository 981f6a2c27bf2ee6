//! The config file's schema: serde structs mirroring the YAML, one struct per mapping.
//!
//! Every struct denies unknown keys (a typo is an error, not a silently ignored setting) and
//! takes its defaults from the named functions below. Field types are the validated values of
//! [`super::value`], so a `Config` here is already valid; [`super::lower`] turns it into the
//! internal model. To add a key: add a field (with its default function), then lower it.

use std::fmt;
use std::num::NonZeroUsize;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::context::{self, RouteKey, SeenRoute};
use super::model::IdSource;
use super::value::{Algorithm, Encoding, SchemeName, SecretsSeed, SignaturePrefix, Template};
use super::value::{
    ByteLimit, HeaderName, ListenAddr, RouteName, RoutePath, RouteUpstream, Secrets, Threads,
    Timeout,
};
use super::value::{
    Capacity, IdSourceSeed, Missing, PerMinute, RateLimitKey, SourceKey, TierRef, TierTable,
};

/// Default values of optional keys (also documented in `config/hookgate.yaml`).
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// `listen`: the plain-HTTP proxy listener, when neither `listen` nor `listen_tls` is set.
    pub const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    /// `admin_listen`: `/metrics`, `/healthz`, `/readyz`.
    pub const ADMIN_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
    /// `threads`.
    pub const THREADS: usize = 2;
    /// `max_body_bytes` (1 MiB).
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    /// `upstream_timeout`.
    pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
    /// `body_timeout`.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
    /// `header_timeout`: nginx's `client_header_timeout` is 60 s; webhook senders send their
    /// whole head at once.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// `idle_timeout`: as long as Pingora waits for a connection's first request.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `drain_timeout`: with a 5 s `preStop` sleep, inside Kubernetes' default 30 s before SIGKILL.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
    /// `verify.header`.
    pub const VERIFY_HEADER: &str = "X-Webhook-Signature";
    /// `verify.tolerance`, for every scheme that signs a timestamp (Standard Webhooks, Stripe
    /// and Slack all use 5 minutes).
    pub const VERIFY_TOLERANCE: Duration = Duration::from_secs(5 * 60);
    /// `dedup.ttl` (24 hours).
    pub const DEDUP_TTL: Duration = crate::dedup::DEFAULT_TTL;
    /// `dedup.capacity`.
    pub const DEDUP_CAPACITY: std::num::NonZeroUsize = crate::dedup::DEFAULT_CAPACITY;
    /// `replay.max_skew`.
    pub const REPLAY_MAX_SKEW: Duration = Duration::from_secs(30);
    /// `state.timeout`: a local Redis answers in well under a millisecond.
    pub const STATE_TIMEOUT: Duration = Duration::from_millis(50);
    /// `state.key_prefix`.
    pub const STATE_KEY_PREFIX: &str = "hookgate";
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `None`: the default address, unless `listen_tls` is set (then no plain listener).
    #[serde(default)]
    pub listen: Option<ListenAddr>,
    #[serde(default)]
    pub listen_tls: Option<super::tls::ListenTlsFile>,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: ListenAddr,
    #[serde(default = "default_threads")]
    pub threads: Threads,
    /// Default body cap for routes that set none.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteLimit,
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout: Timeout,
    /// Default body deadline for routes that set none.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Timeout,
    /// Total time for a request head, from its first byte.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Timeout,
    /// How long a connection may wait for its next request.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Timeout,
    /// How long the requests in progress get to finish once the listeners close.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Timeout,
    pub routes: Routes,
    /// The built-in tiers, overridden or extended.
    #[serde(default)]
    pub tiers: TierTable,
    #[serde(default)]
    pub unverified_per_ip: Option<PerMinute>,
    /// `None` (or `state: {}`): the memory backend.
    #[serde(default, deserialize_with = "present")]
    pub state: Option<super::state::State>,
}

/// One entry of `routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub name: RouteName,
    pub path: RoutePath,
    pub upstream: RouteUpstream,
    /// Only for an `https://` upstream; `None`: the defaults (verified against the system's
    /// roots, the URL's host as SNI).
    #[serde(default)]
    pub upstream_tls: Option<super::tls::RouteUpstreamTls>,
    /// Overrides the top-level `max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<ByteLimit>,
    /// Overrides the top-level `body_timeout`.
    #[serde(default)]
    pub body_timeout: Option<Timeout>,
    pub verify: Verify,
    /// `None`: no deduplication. An empty `dedup:` is `dedup: {}` (every default).
    #[serde(default, deserialize_with = "present")]
    pub dedup: Option<Dedup>,
    /// `None`: no replay window. An empty `replay:` lacks `max_age`.
    #[serde(default, deserialize_with = "present")]
    pub replay: Option<Replay>,
    /// `None`: not rate-limited.
    #[serde(default)]
    pub tier: Option<TierRef>,
    /// Only with `tier`; `None`: `route`.
    #[serde(default)]
    pub rate_limit_key: Option<RateLimitKey>,
    /// `None`: events are not looked at. An empty `events:` is `events: {}`.
    #[serde(default, deserialize_with = "present")]
    pub events: Option<super::events::Events>,
}

/// For a key whose empty value (`key:` and nothing else) means an empty mapping rather than
/// "left out" (serde's `Option` would read it as `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A route's `replay` mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Replay {
    pub max_age: Timeout,
    #[serde(default = "default_replay_max_skew")]
    pub max_skew: Timeout,
}

/// A route's `dedup` mapping, every key optional.
///
/// Read by hand so that setting two ID sources (`header`, `json`, `body_hash`) is reported at
/// the second one's line (see [`IdSourceSeed`]). When none is set, the source is the route's
/// scheme's default, which lowering resolves (`verify` may come after `dedup`); a scheme without
/// one is then reported at this mapping through [`context::deferred_error`].
#[derive(Debug)]
pub(crate) struct Dedup {
    /// `None`: the scheme's default.
    pub source: Option<IdSource>,
    pub ttl: Timeout,
    pub capacity: Capacity,
    pub missing: Missing,
}

/// The keys of a `dedup` mapping.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DedupKey {
    Header,
    Json,
    BodyHash,
    Ttl,
    Capacity,
    Missing,
}

const DEDUP_KEYS: &[&str] = &["header", "json", "body_hash", "ttl", "capacity", "missing"];

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Dedup", DEDUP_KEYS, DedupVisitor)
    }
}

struct DedupVisitor;

impl<'de> Visitor<'de> for DedupVisitor {
    type Value = Dedup;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `dedup` mapping (`{}` for every default)")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Dedup, A::Error> {
        let mut source: Option<(SourceKey, IdSource)> = None;
        let mut ttl = None;
        let mut capacity = None;
        let mut missing = None;
        while let Some(key) = map.next_key::<DedupKey>()? {
            let source_key = match key {
                DedupKey::Header => SourceKey::Header,
                DedupKey::Json => SourceKey::Json,
                DedupKey::BodyHash => SourceKey::BodyHash,
                DedupKey::Ttl => {
                    once(&mut ttl, "ttl", map.next_value()?)?;
                    continue;
                }
                DedupKey::Capacity => {
                    once(&mut capacity, "capacity", map.next_value()?)?;
                    continue;
                }
                DedupKey::Missing => {
                    once(&mut missing, "missing", map.next_value()?)?;
                    continue;
                }
            };
            let seed = IdSourceSeed {
                key: source_key,
                earlier: source.as_ref().map(|(earlier, _)| *earlier),
            };
            source = Some((source_key, map.next_value_seed(seed)?));
        }
        if let Some(message) = context::deferred_error(RouteKey::Dedup) {
            return Err(de::Error::custom(message));
        }
        Ok(Dedup {
            source: source.map(|(_, source)| source),
            ttl: ttl.unwrap_or(Timeout(defaults::DEDUP_TTL)),
            capacity: capacity.unwrap_or(Capacity(defaults::DEDUP_CAPACITY)),
            missing: missing.unwrap_or(Missing(Default::default())),
        })
    }
}

/// Sets `slot` to `value`, or fails on a repeated key. (`scan` reports repeated keys first, at
/// the key; this is the same check serde's derived structs make.)
fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

/// A route's `verify` mapping.
///
/// Read by hand rather than derived, for two reasons. A Standard Webhooks secret must be base64,
/// and it is checked inside its own visitor (so the error names its line) whenever `scheme` came
/// before `secrets`, as in every example. And some keys depend on others (`header` only for
/// `hmac-sha256` and `hmac`, the `hmac` options only for `hmac`, `tolerance` only for schemes
/// that sign a timestamp): those errors are raised once the whole mapping is read, so they
/// point at the mapping's first line. Unknown, repeated and missing keys behave as in the
/// derived structs.
#[derive(Debug)]
pub(crate) struct Verify {
    /// Default `hmac-sha256`.
    pub scheme: SchemeName,
    /// The signature header: defaulted for `hmac-sha256`, required for `hmac`, `None` for the
    /// provider schemes (which always use their own).
    pub header: Option<HeaderName>,
    pub secrets: Secrets,
    /// `None`: the default, for schemes that sign a timestamp.
    pub tolerance: Option<Timeout>,
    /// The `hmac` scheme's options; `None` elsewhere or when left out (defaults apply).
    pub algorithm: Option<Algorithm>,
    pub encoding: Option<Encoding>,
    pub prefix: Option<SignaturePrefix>,
    pub signed_content: Option<Template>,
    pub timestamp_header: Option<HeaderName>,
}

/// The keys of a `verify` mapping.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum VerifyKey {
    Scheme,
    Header,
    Secrets,
    Tolerance,
    Algorithm,
    Encoding,
    Prefix,
    SignedContent,
    TimestampHeader,
}

const VERIFY_KEYS: &[&str] = &[
    "scheme",
    "header",
    "secrets",
    "tolerance",
    "algorithm",
    "encoding",
    "prefix",
    "signed_content",
    "timestamp_header",
];

impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Verify", VERIFY_KEYS, VerifyVisitor)
    }
}

struct VerifyVisitor;

impl<'de> Visitor<'de> for VerifyVisitor {
    type Value = Verify;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `verify` mapping with `secrets`")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Verify, A::Error> {
        let mut scheme: Option<SchemeName> = None;
        let mut header = None;
        let mut secrets = None;
        // Whether the secrets were read after `scheme`, hence already checked against it.
        let mut secrets_checked = false;
        let mut tolerance = None;
        let mut algorithm = None;
        let mut encoding = None;
        let mut prefix = None;
        let mut signed_content = None;
        let mut timestamp_header = None;
        while let Some(key) = map.next_key::<VerifyKey>()? {
            match key {
                VerifyKey::Scheme => once(&mut scheme, "scheme", map.next_value()?)?,
                VerifyKey::Header => once(&mut header, "header", map.next_value()?)?,
                VerifyKey::Secrets => {
                    let check = scheme.and_then(SchemeName::secret_check);
                    secrets_checked = scheme.is_some();
                    once(
                        &mut secrets,
                        "secrets",
                        map.next_value_seed(SecretsSeed(check))?,
                    )?
                }
                VerifyKey::Tolerance => once(&mut tolerance, "tolerance", map.next_value()?)?,
                VerifyKey::Algorithm => once(&mut algorithm, "algorithm", map.next_value()?)?,
                VerifyKey::Encoding => once(&mut encoding, "encoding", map.next_value()?)?,
                VerifyKey::Prefix => once(&mut prefix, "prefix", map.next_value()?)?,
                VerifyKey::SignedContent => {
                    once(&mut signed_content, "signed_content", map.next_value()?)?
                }
                VerifyKey::TimestampHeader => {
                    once(&mut timestamp_header, "timestamp_header", map.next_value()?)?
                }
            }
        }
        let scheme = scheme.unwrap_or(SchemeName::HmacSha256);
        let secrets: Secrets = secrets.ok_or_else(|| de::Error::missing_field("secrets"))?;
        if let (false, Some(check)) = (secrets_checked, scheme.secret_check()) {
            for (index, secret) in secrets.0.iter().enumerate() {
                let text = std::str::from_utf8(secret.key_bytes()).unwrap_or_default();
                check(text).map_err(|e| de::Error::custom(format!("secrets[{index}]: {e}")))?;
            }
        }
        let name = scheme.as_str();
        let is_hmac = scheme == SchemeName::Hmac;
        let hmac_options = [
            ("algorithm", algorithm.is_some()),
            ("encoding", encoding.is_some()),
            ("prefix", prefix.is_some()),
            ("signed_content", signed_content.is_some()),
            ("timestamp_header", timestamp_header.is_some()),
        ];
        if let (false, Some((key, _))) = (is_hmac, hmac_options.iter().find(|(_, set)| *set)) {
            return Err(de::Error::custom(format!(
                "`{key}` is an option of scheme `hmac` only; scheme `{name}` defines its own"
            )));
        }
        let header = match (scheme, header) {
            (SchemeName::HmacSha256, header) => Some(header.unwrap_or_else(default_verify_header)),
            (SchemeName::Hmac, None) => {
                return Err(de::Error::custom(
                    "scheme `hmac` needs `header`: the header that carries the signature",
                ))
            }
            (SchemeName::Hmac, header) => header,
            (_, Some(_)) => {
                return Err(de::Error::custom(format!(
                    "`header` cannot be set for scheme `{name}`, which always uses the \
                     provider's own headers"
                )))
            }
            (_, None) => None,
        };
        if is_hmac {
            let uses_timestamp = signed_content
                .as_ref()
                .is_some_and(|t: &Template| t.0.uses_timestamp());
            match (uses_timestamp, timestamp_header.is_some()) {
                (true, false) => {
                    return Err(de::Error::custom(
                        "`signed_content` uses `{timestamp}` but no `timestamp_header` says \
                         where to read it",
                    ))
                }
                (false, true) => {
                    return Err(de::Error::custom(
                        "`timestamp_header` is set but `signed_content` does not contain \
                         `{timestamp}`: an unsigned timestamp proves nothing, so it is not checked",
                    ))
                }
                _ => {}
            }
        }
        let signs_timestamp = match scheme {
            SchemeName::StandardWebhooks | SchemeName::Stripe | SchemeName::Slack => true,
            SchemeName::Hmac => timestamp_header.is_some(),
            SchemeName::HmacSha256 | SchemeName::GitHub | SchemeName::Shopify => false,
        };
        if tolerance.is_some() && !signs_timestamp {
            return Err(de::Error::custom(format!(
                "`tolerance` applies only to schemes that sign a timestamp (standard-webhooks, \
                 stripe, slack, or hmac with `timestamp_header`); scheme `{name}` signs none"
            )));
        }
        Ok(Verify {
            scheme,
            header,
            secrets,
            tolerance,
            algorithm,
            encoding,
            prefix,
            signed_content,
            timestamp_header,
        })
    }
}

/// The non-empty `routes` list. Each route's name and path are checked against the routes
/// before it while they are read (see [`super::context`]), so a duplicate or an overlap is
/// reported at the offending route's own `name:` or `path:` line.
#[derive(Debug)]
pub(crate) struct Routes(pub Vec<Route>);

impl<'de> Deserialize<'de> for Routes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RoutesVisitor;
        impl<'de> Visitor<'de> for RoutesVisitor {
            type Value = Vec<Route>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty list of routes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut routes = Vec::new();
                while let Some(route) = seq.next_element::<Route>()? {
                    context::push_seen_route(SeenRoute {
                        name: route.name.0.clone(),
                        path: route.path.0.clone(),
                    });
                    routes.push(route);
                }
                if routes.is_empty() {
                    return Err(de::Error::custom("at least one route is required"));
                }
                Ok(routes)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("at least one route is required"))
            }
        }
        deserializer.deserialize_seq(RoutesVisitor).map(Self)
    }
}

fn default_admin_listen() -> ListenAddr {
    ListenAddr(defaults::ADMIN_LISTEN)
}

fn default_threads() -> Threads {
    Threads(NonZeroUsize::new(defaults::THREADS).expect("the default is non-zero"))
}

fn default_max_body_bytes() -> ByteLimit {
    ByteLimit(defaults::MAX_BODY_BYTES)
}

fn default_upstream_timeout() -> Timeout {
    Timeout(defaults::UPSTREAM_TIMEOUT)
}

fn default_body_timeout() -> Timeout {
    Timeout(defaults::BODY_TIMEOUT)
}

fn default_header_timeout() -> Timeout {
    Timeout(defaults::HEADER_TIMEOUT)
}

fn default_idle_timeout() -> Timeout {
    Timeout(defaults::IDLE_TIMEOUT)
}

fn default_drain_timeout() -> Timeout {
    Timeout(defaults::DRAIN_TIMEOUT)
}

fn default_replay_max_skew() -> Timeout {
    Timeout(defaults::REPLAY_MAX_SKEW)
}

fn default_verify_header() -> HeaderName {
    HeaderName(http::HeaderName::from_static("x-webhook-signature"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    #[test]
    fn defaults_agree() {
        assert_eq!(
            default_verify_header().0.as_str(),
            defaults::VERIFY_HEADER.to_ascii_lowercase()
        );
        assert_eq!(
            defaults::LISTEN,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
        );
        assert_eq!(defaults::BODY_TIMEOUT, Duration::from_secs(10));
    }
}
