//! The TLS keys of the file: the top-level `listen_tls` mapping and a route's `upstream_tls`.
//!
//! ```yaml
//! listen_tls:
//!   addr: 0.0.0.0:8443
//!   cert: /etc/hookgate/tls/cert.pem     # PEM chain, leaf first
//!   key: /etc/hookgate/tls/key.pem       # unencrypted PEM private key
//!   min_version: "1.2"                   # 1.2 (default) | 1.3
//! routes:
//!   - upstream: https://app.internal:8443
//!     upstream_tls: { ca: /etc/hookgate/ca.pem, sni: app.internal, verify: true }
//! ```
//!
//! Files are read and checked where they are named, like schemas: a `cert` or `key` that cannot
//! be read or is not PEM is reported at its own line, naming the file; a key that does not belong
//! to the certificate at the `listen_tls` mapping's first line, naming both files. Relative paths
//! are taken from the working directory. No message quotes key material.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::context::{self, RouteKey};
use super::model::{ListenTls, Upstream, UpstreamTls};
use super::value::{parse_scalar, ListenAddr};
use crate::tls::{CaBundle, CertChain, PrivateKey, ServerCert, TlsVersion};

/// The `listen_tls` mapping, with its certificate and key loaded and paired.
#[derive(Debug)]
pub(crate) struct ListenTlsFile(pub ListenTls);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ListenTlsKey {
    Addr,
    Cert,
    Key,
    MinVersion,
}

const LISTEN_TLS_KEYS: &[&str] = &["addr", "cert", "key", "min_version"];

impl<'de> Deserialize<'de> for ListenTlsFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("ListenTls", LISTEN_TLS_KEYS, ListenTlsVisitor)
    }
}

struct ListenTlsVisitor;

impl<'de> Visitor<'de> for ListenTlsVisitor {
    type Value = ListenTlsFile;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `listen_tls` mapping with `addr`, `cert` and `key`")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ListenTlsFile, A::Error> {
        let mut addr: Option<ListenAddr> = None;
        let mut cert: Option<CertFile> = None;
        let mut key: Option<KeyFile> = None;
        let mut min_version: Option<MinVersion> = None;
        while let Some(k) = map.next_key::<ListenTlsKey>()? {
            match k {
                ListenTlsKey::Addr => once(&mut addr, "addr", map.next_value()?)?,
                ListenTlsKey::Cert => once(&mut cert, "cert", map.next_value()?)?,
                ListenTlsKey::Key => once(&mut key, "key", map.next_value()?)?,
                ListenTlsKey::MinVersion => {
                    once(&mut min_version, "min_version", map.next_value()?)?
                }
            }
        }
        let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
        let cert = cert.ok_or_else(|| de::Error::missing_field("cert"))?;
        let key = key.ok_or_else(|| de::Error::missing_field("key"))?;
        let cert = ServerCert::new(cert.0, key.0).map_err(de::Error::custom)?;
        Ok(ListenTlsFile(ListenTls {
            addr: addr.0,
            min_version: min_version.map_or(TlsVersion::default(), |v| v.0),
            cert: Arc::new(cert),
        }))
    }
}

/// `listen_tls.cert`: a PEM certificate chain, read and parsed here.
struct CertFile(CertChain);

impl<'de> Deserialize<'de> for CertFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(
            deserializer,
            "the path of a PEM certificate chain",
            |text| {
                let path = non_empty_path(&text)?;
                CertChain::load(&path).map(Self).map_err(|e| e.to_string())
            },
        )
    }
}

/// `listen_tls.key`: a PEM private key, read and parsed here.
struct KeyFile(PrivateKey);

impl<'de> Deserialize<'de> for KeyFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "the path of a PEM private key", |text| {
            let path = non_empty_path(&text)?;
            PrivateKey::load(&path).map(Self).map_err(|e| e.to_string())
        })
    }
}

/// `listen_tls.min_version`: `1.2` or `1.3` (quoted or not; `TLSv1.2` and `TLSv1.3`, as
/// OpenSSL writes them, are accepted too).
struct MinVersion(TlsVersion);

impl<'de> Deserialize<'de> for MinVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`1.2` or `1.3`", |text| {
            match text.trim().to_ascii_lowercase().as_str() {
                "1.2" | "tlsv1.2" => Ok(Self(TlsVersion::Tls12)),
                "1.3" | "tlsv1.3" => Ok(Self(TlsVersion::Tls13)),
                _ => Err(format!(
                    "unknown TLS version `{text}`; expected `1.2` (TLS 1.2 and 1.3) or `1.3` \
                     (TLS 1.3 only); older versions are not offered"
                )),
            }
        })
    }
}

/// A route's `upstream_tls` mapping as written: every key optional.
#[derive(Debug, Default)]
pub(crate) struct UpstreamTlsFile {
    pub ca: Option<CaBundle>,
    pub sni: Option<String>,
    pub verify: Option<bool>,
}

impl UpstreamTlsFile {
    /// The settings of an https upstream whose URL host is `host_sni` (empty for an IP
    /// address): `sni` defaults to that host, `verify` to true, and `ca` to the system roots.
    pub fn apply(self, host_sni: &str) -> UpstreamTls {
        UpstreamTls {
            sni: self.sni.unwrap_or_else(|| host_sni.to_string()),
            verify: self.verify.unwrap_or(true),
            ca: self.ca,
        }
    }
}

/// Why an upstream URL and its `upstream_tls` block don't fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// `upstream_tls` on a plain `http://` upstream.
    TlsOnPlainHttp(String),
    /// An `https://` upstream at an IP address, verified, without `sni`.
    IpWithoutSni(String),
}

impl Misfit {
    pub fn message(self) -> String {
        match self {
            Self::TlsOnPlainHttp(m) | Self::IpWithoutSni(m) => m,
        }
    }
}

/// Combines an upstream URL with its `upstream_tls` block: the TLS settings of an `https://`
/// upstream (defaults for whatever the block leaves out), or why they don't fit together.
pub(crate) fn combine(
    mut upstream: Upstream,
    tls: Option<UpstreamTlsFile>,
) -> Result<Upstream, Misfit> {
    match (upstream.tls.take(), tls) {
        (None, None) => Ok(upstream),
        (None, Some(_)) => Err(Misfit::TlsOnPlainHttp(format!(
            "`upstream_tls` applies only to an `https://` upstream, and `{}` is plain HTTP",
            upstream.url
        ))),
        (Some(defaults), block) => {
            let tls = block.unwrap_or_default().apply(&defaults.sni);
            if tls.verify && tls.sni.is_empty() {
                return Err(Misfit::IpWithoutSni(format!(
                    "`{}`: the upstream's certificate is verified against a host name, and an \
                     IP address is none: set `upstream_tls.sni` to the name its certificate is \
                     issued for",
                    upstream.url
                )));
            }
            upstream.tls = Some(tls);
            Ok(upstream)
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum UpstreamTlsKey {
    Ca,
    Sni,
    Verify,
}

const UPSTREAM_TLS_KEYS: &[&str] = &["ca", "sni", "verify"];

/// A route's own `upstream_tls`, which also raises the errors lowering finds about it
/// (`context::deferred_error`: the key on a route whose upstream is `http://`).
#[derive(Debug)]
pub(crate) struct RouteUpstreamTls(pub UpstreamTlsFile);

impl<'de> Deserialize<'de> for RouteUpstreamTls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = UpstreamTlsVisitor { route_level: true };
        (deserializer.deserialize_struct("UpstreamTls", UPSTREAM_TLS_KEYS, visitor)).map(Self)
    }
}

/// The `upstream_tls` of an `events.routes` entry (its checks are the entry's own).
impl<'de> Deserialize<'de> for UpstreamTlsFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = UpstreamTlsVisitor { route_level: false };
        deserializer.deserialize_struct("UpstreamTls", UPSTREAM_TLS_KEYS, visitor)
    }
}

struct UpstreamTlsVisitor {
    /// Whether this is a route's own `upstream_tls` (then it raises deferred errors).
    route_level: bool,
}

impl<'de> Visitor<'de> for UpstreamTlsVisitor {
    type Value = UpstreamTlsFile;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an `upstream_tls` mapping (`ca`, `sni`, `verify`)")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<UpstreamTlsFile, A::Error> {
        let mut ca: Option<CaFile> = None;
        let mut sni: Option<SniName> = None;
        let mut verify: Option<bool> = None;
        while let Some(k) = map.next_key::<UpstreamTlsKey>()? {
            match k {
                UpstreamTlsKey::Ca => once(&mut ca, "ca", map.next_value()?)?,
                UpstreamTlsKey::Sni => once(&mut sni, "sni", map.next_value()?)?,
                UpstreamTlsKey::Verify => once(&mut verify, "verify", map.next_value()?)?,
            }
        }
        if ca.is_some() && verify == Some(false) {
            return Err(de::Error::custom(
                "`ca` is unused with `verify: false` (the certificate is not checked at all): \
                 remove one of them",
            ));
        }
        if self.route_level {
            if let Some(message) = context::deferred_error(RouteKey::UpstreamTls) {
                return Err(de::Error::custom(message));
            }
        }
        Ok(UpstreamTlsFile {
            ca: ca.map(|c| c.0),
            sni: sni.map(|s| s.0),
            verify,
        })
    }
}

/// `upstream_tls.ca`: PEM CA certificates, read and parsed here.
struct CaFile(CaBundle);

impl<'de> Deserialize<'de> for CaFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "the path of a PEM CA bundle", |text| {
            let path = non_empty_path(&text)?;
            CaBundle::load(&path).map(Self).map_err(|e| e.to_string())
        })
    }
}

/// `upstream_tls.sni`: the host name sent in the TLS handshake and checked against the
/// upstream's certificate. A DNS name, not an IP address (RFC 6066 §3).
struct SniName(String);

impl<'de> Deserialize<'de> for SniName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a host name such as `app.internal`", |text| {
            let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
            check_sni(&name).map(|()| Self(name))
        })
    }
}

/// Whether `name` can be sent as SNI: a DNS name of letters, digits, `-`, `_` and dots.
pub(crate) fn check_sni(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "`{name}` is an IP address; SNI carries a host name (the one the upstream's \
             certificate is issued for)"
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a host name (letters, digits, `-` and `_`, in dot-separated labels)"
        ))
    }
}

fn non_empty_path(text: &str) -> Result<PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the path is empty".to_string());
    }
    Ok(PathBuf::from(text))
}

/// Sets `slot` to `value`, or fails on a repeated key (which `scan` reports first, at the key).
fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}
