//! The internal configuration model: what the rest of hookgate sees.
//!
//! The YAML file (`config::file`) is parsed into serde structs, validated, then *lowered* into
//! these types. Every value here is already checked and resolved (defaults applied, `${ENV}`
//! expanded, per-route overrides merged), so the proxy never re-validates anything.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

pub use crate::dedup::{DedupPolicy, IdSource, MissingId, ReplayWindow};
pub use crate::events::{EventRoute, EventsConfig};
pub use crate::ratelimit::{LimitKey, RateLimit, Tiers};

/// The whole gateway configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the proxy listens for webhooks over plain HTTP (`listen`). `None` only when
    /// `listen_tls` is set and `listen` is not: there is always at least one listener.
    pub listen: Option<SocketAddr>,
    /// Where the proxy listens for webhooks over TLS (`listen_tls`); `None`: no TLS listener.
    pub listen_tls: Option<ListenTls>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// Worker threads of the proxy service.
    pub threads: NonZeroUsize,
    /// Deadline for connecting to an upstream and receiving its response header.
    pub upstream_timeout: Duration,
    /// Total time a request head may take, from its first byte to its end.
    pub header_timeout: Duration,
    /// How long a connection may stay open waiting for a request (its first, or the next one
    /// on a kept-alive connection).
    pub idle_timeout: Duration,
    /// How long the requests in progress get to finish after SIGTERM (or SIGQUIT's hand-over)
    /// closes the listeners.
    pub drain_timeout: Duration,
    /// Routes in file order; their paths never overlap.
    pub routes: Vec<Route>,
    /// Requests per minute of every named tier: the spec's three, overridden or extended by
    /// the file's `tiers`.
    pub tiers: Tiers,
    /// Per-client-IP limit (requests per minute) on requests not yet verified, checked before
    /// the body is read. `None`: no such limit.
    pub unverified_per_ip: Option<NonZeroU32>,
    /// Where dedup records and rate-limit buckets live (`state`); memory by default.
    pub state: StateConfig,
}

impl Config {
    /// Every proxy listener's address: the plain one first, then the TLS one (at least one).
    pub fn proxy_addrs(&self) -> Vec<SocketAddr> {
        self.listen
            .into_iter()
            .chain(self.listen_tls.as_ref().map(|tls| tls.addr))
            .collect()
    }
}

/// The TLS listener (`listen_tls`): its address, lowest version and identity.
#[derive(Debug, Clone)]
pub struct ListenTls {
    /// Where the TLS listener binds; never the same as `listen`.
    pub addr: SocketAddr,
    /// The lowest TLS version accepted (default 1.2). HTTP/2 and HTTP/1.1 are offered by ALPN.
    pub min_version: crate::tls::TlsVersion,
    /// The certificate chain and its key, read and checked when the file was loaded. Handed to
    /// the listener's [`crate::tls::CertStore`] at start, and again on a reload.
    pub cert: std::sync::Arc<crate::tls::ServerCert>,
}

/// Where the state of the stateful checks (dedup records, rate-limit buckets) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    /// In this process's memory (the default): each gateway deduplicates and limits alone.
    Memory {
        /// Where the delivered IDs are saved at shutdown and upgrade, and read at start
        /// (`state.snapshot_path`); `None`: a restart forgets them.
        snapshot_path: Option<std::path::PathBuf>,
    },
    /// In a Redis server that every replica shares.
    Redis(RedisState),
}

impl Default for StateConfig {
    fn default() -> Self {
        Self::Memory {
            snapshot_path: None,
        }
    }
}

impl StateConfig {
    /// The name used in the config file (`state.backend`).
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// `state.snapshot_path`, with the memory backend.
    pub fn snapshot_path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Memory { snapshot_path } => snapshot_path.as_deref(),
            Self::Redis(_) => None,
        }
    }
}

/// The settings of the Redis state backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    pub url: RedisUrl,
    /// Deadline of every call to Redis (one round trip).
    pub timeout: Duration,
    /// What a request gets when Redis fails or is too slow.
    pub on_error: OnStateError,
    /// The first part of every key (`<prefix>:dedup:…`, `<prefix>:rate:…`).
    pub key_prefix: String,
    /// The secret every replica hashes delivery IDs and rate-limit keys with, so that they
    /// name the same things alike. Never sent to Redis.
    pub key_secret: Secret,
    /// Certificates for a `rediss://` URL; `None` with `rediss://` trusts the system's roots.
    pub tls: Option<Box<RedisTls>>,
}

/// `state.tls`: how a `rediss://` connection checks the server and proves the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA certificates that sign the server's certificate, instead of the system's roots.
    pub ca: Option<PemFile>,
    /// A client certificate chain and its private key, for Redis's `tls-auth-clients yes`.
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and the private key that matches it (checked at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PemFile,
    pub key: PemFile,
}

/// A PEM file read at load time. `Debug` shows its path and size, never its contents (it may
/// be a private key).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: std::path::PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PemFile({}, {} bytes)",
            self.path.display(),
            self.pem.len()
        )
    }
}

/// `state.on_error`: what a request gets when the shared state cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStateError {
    /// Answer 503 with `Retry-After` (nothing is forwarded unchecked); `/readyz` fails while
    /// Redis is unreachable.
    #[default]
    FailClosed,
    /// Decide from this process's memory instead (limits and dedup then hold per replica only).
    FailOpen,
}

impl OnStateError {
    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
        }
    }
}

/// A Redis server's URL, `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS.
/// `Display` and `Debug` show it without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    shown: String,
    tls: bool,
}

impl RedisUrl {
    /// Parses and checks a URL. Error messages never quote the URL, which may hold a password.
    /// The redis crate's `#insecure` fragment (no certificate check) is refused: a CA that
    /// signs the server's certificate goes in `state.tls.ca` instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        const EXPECTED: &str =
            "expected `redis://[user:password@]host[:port][/db]` or `rediss://…`";
        let scheme = text.split_once("://").map(|(scheme, _)| scheme);
        let tls = match scheme {
            Some(s) if s.eq_ignore_ascii_case("redis") => false,
            Some(s) if s.eq_ignore_ascii_case("rediss") => true,
            Some(_) => return Err(format!("unsupported scheme; {EXPECTED}")),
            None => return Err(format!("no scheme; {EXPECTED}")),
        };
        if text.contains('#') {
            return Err(
                "a fragment such as `#insecure` is not accepted: the server's certificate is \
                 always verified; give its CA in `state.tls.ca`"
                    .to_string(),
            );
        }
        let info = redis::IntoConnectionInfo::into_connection_info(text)
            .map_err(|_| format!("not a valid Redis URL; {EXPECTED}"))?;
        let (host, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) if !tls => (host, port),
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } if tls => (host, port),
            _ => return Err(format!("not a TCP Redis URL; {EXPECTED}")),
        };
        if host.is_empty() {
            return Err(format!("the URL has no host; {EXPECTED}"));
        }
        let settings = info.redis_settings();
        let user = match (settings.username(), settings.password()) {
            (None, None) => "",
            (Some(_), None) => "<user>@",
            (_, Some(_)) => "<credentials>@",
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let scheme = if tls { "rediss" } else { "redis" };
        Ok(Self {
            url: text.to_string(),
            shown: format!("{scheme}://{user}{host}:{port}/{}", settings.db()),
            tls,
        })
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The whole URL, credentials included: only for connecting.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.shown)
    }
}

/// One webhook endpoint: which requests it takes, how they are verified, where they go.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name; used as the `route` metric label.
    pub name: String,
    pub path: PathPattern,
    pub upstream: Upstream,
    /// Largest accepted body in bytes (the route's own value or the global default).
    pub max_body_bytes: u64,
    /// Total time allowed to receive the whole body.
    pub body_timeout: Duration,
    pub verify: VerifyConfig,
    /// Deduplication by delivery ID; `None`: every verified request is forwarded.
    pub dedup: Option<DedupPolicy>,
    /// Refuse payloads whose `timestamp` is outside this window; `None`: no check.
    pub replay: Option<ReplayWindow>,
    /// The sender's tier limit; `None`: not limited.
    pub rate_limit: Option<RateLimit>,
    /// Event allow-list, per-event upstreams and payload validation; `None`: events are not
    /// looked at.
    pub events: Option<EventsConfig>,
}

/// How a route matches request paths (the query string is never part of the match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `/webhooks/dossiers`: this path only.
    Exact(String),
    /// `/hooks/*`: any path that starts with `/hooks/` (held here with its trailing slash).
    Prefix(String),
}

impl PathPattern {
    /// Parses the config syntax: a path starting with `/`; a trailing `/*` makes it a prefix.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("path {s:?} must start with '/'"));
        }
        if s.contains(['?', '#']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "path {s:?} may not contain a query, a fragment or whitespace"
            ));
        }
        match s.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
                Ok(Self::Prefix(prefix.to_string()))
            }
            Some(_) => Err(format!(
                "path {s:?}: '*' is only allowed as a final '/*' (prefix match)"
            )),
            None if s.contains('*') => Err(format!(
                "path {s:?}: '*' is only allowed as a final '/*' (prefix match)"
            )),
            None => Ok(Self::Exact(s.to_string())),
        }
    }

    /// Whether `path` (without query) belongs to this pattern.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    /// Whether some path would match both patterns (then routing would be ambiguous).
    pub fn overlaps(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(e), p @ Self::Prefix(_)) | (p @ Self::Prefix(_), Self::Exact(e)) => {
                p.matches(e)
            }
            (Self::Prefix(a), Self::Prefix(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// An upstream (`http://` or `https://`), resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL as configured (scheme and authority only), for display.
    pub url: String,
    /// Resolved socket address to connect to.
    pub addr: SocketAddr,
    /// `Some` for an `https://` upstream: how its certificate is checked. `None`: plain HTTP.
    pub tls: Option<UpstreamTls>,
}

/// How hookgate talks TLS to an `https://` upstream (the route's `upstream_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The host name sent as SNI and, with `verify`, checked against the certificate. Default:
    /// the URL's host. Never empty when `verify` is true (an IP-address URL needs `sni`).
    pub sni: String,
    /// Whether the certificate must chain to a trusted root and name `sni` (default true).
    /// False skips every check of the certificate.
    pub verify: bool,
    /// The roots to trust instead of the system's (`ca`); `None`: the system's roots.
    pub ca: Option<crate::tls::CaBundle>,
}

/// Signature verification settings of one route.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// How senders sign requests (default: the spec's [`Scheme::HmacSha256`]).
    pub scheme: Scheme,
    /// Header carrying the signature: configured for `hmac-sha256` (default
    /// `X-Webhook-Signature`) and `hmac`; the provider's own header for the other schemes
    /// ([`Scheme::fixed_header`]).
    pub header: http::HeaderName,
    /// Accepted secrets in order; at least one. Any one valid signature passes.
    pub secrets: Vec<Secret>,
    /// How far a signed timestamp may be from now, in either direction (the boundary is
    /// inclusive). `Some` exactly when the scheme signs a timestamp ([`Scheme::signs_timestamp`]).
    pub tolerance: Option<Duration>,
}

/// A signature scheme: how a sender signs a request (`verify.scheme`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// The spec's scheme: `X-Webhook-Signature` = base64 HMAC-SHA256 of the raw body.
    HmacSha256,
    /// Standard Webhooks (and Svix): `webhook-id`/`webhook-timestamp`/`webhook-signature`.
    StandardWebhooks,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` of the raw body.
    GitHub,
    /// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>` of `{t}.{body}`.
    Stripe,
    /// Shopify: `X-Shopify-Hmac-Sha256` = base64 of the raw body.
    Shopify,
    /// Slack: `X-Slack-Signature: v0=<hex>` of `v0:{timestamp}:{body}`.
    Slack,
    /// Any other HMAC sender, described by its settings.
    Hmac(HmacScheme),
}

impl Scheme {
    /// The name used in the config file (`verify.scheme`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::StandardWebhooks => "standard-webhooks",
            Self::GitHub => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::Hmac(_) => "hmac",
        }
    }

    /// The signature header a provider always uses; `None` when the route configures it
    /// (`hmac-sha256`, `hmac`).
    pub fn fixed_header(&self) -> Option<http::HeaderName> {
        let name = match self {
            Self::HmacSha256 | Self::Hmac(_) => return None,
            Self::StandardWebhooks => "webhook-signature",
            Self::GitHub => "x-hub-signature-256",
            Self::Stripe => "stripe-signature",
            Self::Shopify => "x-shopify-hmac-sha256",
            Self::Slack => "x-slack-signature",
        };
        Some(http::HeaderName::from_static(name))
    }

    /// Whether the scheme signs a timestamp, which is then checked against the tolerance.
    pub fn signs_timestamp(&self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe | Self::Slack => true,
            Self::Hmac(hmac) => hmac.timestamp_header.is_some(),
            Self::HmacSha256 | Self::GitHub | Self::Shopify => false,
        }
    }
}

/// The settings of the generic `hmac` scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    pub algorithm: HmacAlgorithm,
    /// How the MAC is written in the header.
    pub encoding: SignatureEncoding,
    /// Text before the encoded MAC in the header value (`sha256=`); may be empty.
    pub prefix: String,
    /// What is signed.
    pub signed_content: SignedContent,
    /// Header carrying the Unix timestamp (seconds) that `{timestamp}` stands for. When set,
    /// the timestamp is checked against the tolerance, and `signed_content` contains
    /// `{timestamp}`.
    pub timestamp_header: Option<http::HeaderName>,
}

/// The hash function of an HMAC. SHA-1 is not offered (hookgate ships no SHA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha256,
    Sha512,
    /// Only when a route names it explicitly; never a default.
    Sha1,
}

impl HmacAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Sha1 => "sha1",
        }
    }
}

/// How a MAC is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Lowercase hexadecimal (uppercase is accepted too).
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl SignatureEncoding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// What a generic `hmac` sender signs: literal text and placeholders, concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContent(Vec<ContentPart>);

/// One piece of a [`SignedContent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    /// Text taken as is (its UTF-8 bytes).
    Literal(String),
    /// `{body}`: the raw body.
    Body,
    /// `{timestamp}`: the timestamp header's value, as received.
    Timestamp,
    /// `{header:Name}`: that header's value, as received.
    Header(http::HeaderName),
}

impl SignedContent {
    /// `{body}`: the raw body alone (the default).
    pub fn body_only() -> Self {
        Self(vec![ContentPart::Body])
    }

    /// Parses a template such as `{timestamp}.{body}` or `{header:X-Id}:{body}`. `{{` and `}}`
    /// write literal braces. The template must contain `{body}`: a signature that doesn't
    /// cover the body would let anyone change it.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
                literal.push_str(&tail[..1]);
                rest = after;
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "signed content `{template}`: unmatched `}}` (write `}}}}` for a literal brace)"
                ));
            }
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "signed content `{template}`: unterminated `{{` (write `{{{{` for a literal brace)"
                ));
            };
            let placeholder = &tail[1..end];
            let part = match placeholder {
                "body" => ContentPart::Body,
                "timestamp" => ContentPart::Timestamp,
                _ => match placeholder.strip_prefix("header:") {
                    Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                        .map(ContentPart::Header)
                        .map_err(|_| {
                            format!(
                                "signed content `{template}`: `{name}` is not a valid HTTP \
                                 header name"
                            )
                        })?,
                    None => {
                        return Err(format!(
                            "signed content `{template}`: unknown placeholder `{{{placeholder}}}`; \
                             expected `{{body}}`, `{{timestamp}}` or `{{header:Name}}`"
                        ))
                    }
                },
            };
            if !literal.is_empty() {
                parts.push(ContentPart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(ContentPart::Literal(literal));
        }
        if !parts.contains(&ContentPart::Body) {
            return Err(format!(
                "signed content `{template}` must contain `{{body}}`: a signature that does not \
                 cover the body would let anyone change it"
            ));
        }
        Ok(Self(parts))
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[ContentPart] {
        &self.0
    }

    /// Whether `{timestamp}` appears.
    pub fn uses_timestamp(&self) -> bool {
        self.0.contains(&ContentPart::Timestamp)
    }
}

impl fmt::Display for SignedContent {
    /// The template syntax [`SignedContent::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                ContentPart::Literal(text) => {
                    f.write_str(&text.replace('{', "{{").replace('}', "}}"))?
                }
                ContentPart::Body => f.write_str("{body}")?,
                ContentPart::Timestamp => f.write_str("{timestamp}")?,
                ContentPart::Header(name) => write!(f, "{{header:{name}}}")?,
            }
        }
        Ok(())
    }
}

/// The key of a Standard Webhooks secret: the base64 after an optional `whsec_` prefix (the
/// reference libraries accept it with or without the prefix). The error never quotes the secret.
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    match ENGINE.decode(encoded.trim()) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("a Standard Webhooks secret needs key material after `whsec_`".to_string()),
        Err(_) => Err(
            "a Standard Webhooks secret must be `whsec_` followed by base64 (as the sender's \
             dashboard shows it); this one is not valid base64"
                .to_string(),
        ),
    }
}

/// A signing secret. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key bytes: the UTF-8 bytes of the whole string, `whsec_` prefix included, exactly as
    /// the spec's Python (`secret.encode('utf-8')`) and Node examples use it.
    pub fn key_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_parse_match_and_overlap() {
        let exact = PathPattern::parse("/webhooks/dossiers").unwrap();
        let prefix = PathPattern::parse("/hooks/*").unwrap();
        assert_eq!(prefix, PathPattern::Prefix("/hooks/".into()));
        assert!(exact.matches("/webhooks/dossiers"));
        assert!(!exact.matches("/webhooks/dossiers/x"));
        assert!(prefix.matches("/hooks/a/b"));
        assert!(prefix.matches("/hooks/"));
        assert!(!prefix.matches("/hooks"));
        assert!(!prefix.matches("/hooksx"));

        assert!(exact.overlaps(&exact.clone()));
        assert!(prefix.overlaps(&PathPattern::parse("/hooks/a").unwrap()));
        assert!(prefix.overlaps(&PathPattern::parse("/hooks/a/*").unwrap()));
        assert!(!prefix.overlaps(&PathPattern::parse("/hooks").unwrap()));
        assert!(!prefix.overlaps(&PathPattern::parse("/other/*").unwrap()));

        for bad in ["hooks", "/a*", "/a/*/b", "/a?x=1", "/a b"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn redis_urls_parse_and_never_show_a_password() {
        let url = RedisUrl::parse("redis://:hunter2@cache.internal:6380/2").unwrap();
        assert_eq!(url.as_str(), "redis://:hunter2@cache.internal:6380/2");
        assert_eq!(
            url.to_string(),
            "redis://<credentials>@cache.internal:6380/2"
        );
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = RedisUrl::parse("redis://127.0.0.1").unwrap();
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379/0");
        let url = RedisUrl::parse("rediss://user:hunter2@cache:6380/1").unwrap();
        assert!(url.is_tls());
        assert_eq!(url.to_string(), "rediss://<credentials>@cache:6380/1");
        assert!(!RedisUrl::parse("redis://cache").unwrap().is_tls());
        for bad in [
            "rediss://:hunter2@cache:6380/#insecure",
            "redis://:hunter2@cache:6380/#x",
            "http://hunter2@cache",
            "cache:6379",
            "redis://",
            "redis://:hunter2@cache/notadb",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        assert!(RedisUrl::parse("rediss://cache/#insecure")
            .unwrap_err()
            .contains("always verified"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("whsec_topsecret");
        assert!(!format!("{s:?}").contains("topsecret"));
        assert_eq!(s.key_bytes(), b"whsec_topsecret");
    }
}
