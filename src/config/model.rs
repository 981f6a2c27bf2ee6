//! The internal configuration model: what the rest of hookgate sees.
//!
//! The YAML file (`config::file`) is parsed into serde structs, validated, then *lowered* into
//! these types. Every value here is already checked and resolved (defaults applied, `${ENV}`
//! expanded, per-route overrides merged), so the proxy never re-validates anything.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

/// The whole gateway configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the proxy listens for webhooks.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// Worker threads of the proxy service.
    pub threads: NonZeroUsize,
    /// Deadline for connecting to an upstream and receiving its response header.
    pub upstream_timeout: Duration,
    /// Routes in file order; their paths never overlap.
    pub routes: Vec<Route>,
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

/// A plain-HTTP upstream, resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL as configured (scheme and authority only), for display.
    pub url: String,
    /// Resolved socket address to connect to.
    pub addr: SocketAddr,
}

/// Signature verification settings of one route.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Header carrying the signature (default `X-Webhook-Signature`).
    pub header: http::HeaderName,
    /// Accepted secrets in order; at least one. Any one valid signature passes.
    pub secrets: Vec<Secret>,
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
    fn secret_debug_is_redacted() {
        let s = Secret::new("whsec_topsecret");
        assert!(!format!("{s:?}").contains("topsecret"));
        assert_eq!(s.key_bytes(), b"whsec_topsecret");
    }
}
