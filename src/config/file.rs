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

use super::context::{self, SeenRoute};
use super::value::{
    ByteLimit, HeaderName, ListenAddr, RouteName, RoutePath, Secrets, Threads, Timeout, UpstreamUrl,
};

/// Default values of optional keys (also documented in `config/hookgate.yaml`).
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// `listen`: the proxy listener.
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
    /// `verify.header`.
    pub const VERIFY_HEADER: &str = "X-Webhook-Signature";
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default = "default_listen")]
    pub listen: ListenAddr,
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
    pub routes: Routes,
    // Planned top-level keys: `tiers`, `unverified_per_ip`, `state`.
}

/// One entry of `routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub name: RouteName,
    pub path: RoutePath,
    pub upstream: UpstreamUrl,
    /// Overrides the top-level `max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<ByteLimit>,
    /// Overrides the top-level `body_timeout`.
    #[serde(default)]
    pub body_timeout: Option<Timeout>,
    pub verify: Verify,
    // Planned route keys: `dedup`, `tier`, `rate_limit_key`, `events`, `replay`.
}

/// A route's `verify` mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Verify {
    #[serde(default = "default_verify_header")]
    pub header: HeaderName,
    pub secrets: Secrets,
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

fn default_listen() -> ListenAddr {
    ListenAddr(defaults::LISTEN)
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
