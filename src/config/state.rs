//! The top-level `state` mapping: where dedup records and rate-limit buckets live.
//!
//! ```yaml
//! state:
//!   backend: redis                       # memory (default) | redis
//!   redis_url: ${HOOKGATE_REDIS_URL}     # redis://[user:password@]host[:port][/db]
//!   key_secret: ${HOOKGATE_STATE_KEY}    # the same on every replica, at least 32 characters
//!   timeout: 50ms                        # per call
//!   on_error: fail_closed                # fail_closed | fail_open
//!   key_prefix: hookgate
//!   tls:                                 # only with rediss://; every key optional
//!     ca: /etc/hookgate/redis-ca.pem     # default: the system's roots
//!     cert: /etc/hookgate/redis-client.pem   # client certificate, with `key`
//!     key: /etc/hookgate/redis-client.key
//! ```
//!
//! Read by hand, like `verify`: each value is checked inside its own visitor, so a bad URL or
//! secret is reported at its own line, and the keys that depend on `backend` (the Redis keys
//! are refused for `memory`; `redis_url` and `key_secret` are required for `redis`) are checked
//! once the whole mapping is read, so those errors point at the mapping's first line. No
//! message ever quotes the URL (it may hold a password) or the secret.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::model::{
    ClientIdentity, OnStateError, PemFile, RedisState, RedisTls, RedisUrl, Secret, StateConfig,
};
use super::pem;
use super::value::{parse_scalar, Timeout};

use super::file::defaults::{
    STATE_KEY_PREFIX as DEFAULT_KEY_PREFIX, STATE_TIMEOUT as DEFAULT_TIMEOUT,
};

/// Fewest characters in `state.key_secret`: 32 hex digits are 128 bits.
pub const MIN_KEY_SECRET_LEN: usize = 32;

/// The `state` mapping, validated: the model's [`StateConfig`].
#[derive(Debug)]
pub(crate) struct State(pub StateConfig);

/// The keys of a `state` mapping.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum StateKey {
    Backend,
    RedisUrl,
    Timeout,
    OnError,
    KeyPrefix,
    KeySecret,
    Tls,
    SnapshotPath,
}

const STATE_KEYS: &[&str] = &[
    "backend",
    "redis_url",
    "timeout",
    "on_error",
    "key_prefix",
    "key_secret",
    "tls",
    "snapshot_path",
];

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("State", STATE_KEYS, StateVisitor)
    }
}

struct StateVisitor;

impl<'de> Visitor<'de> for StateVisitor {
    type Value = State;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `state` mapping (`{}` for the memory backend)")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<State, A::Error> {
        let mut backend: Option<BackendName> = None;
        let mut redis_url: Option<RedisUrlValue> = None;
        let mut timeout: Option<Timeout> = None;
        let mut on_error: Option<OnErrorValue> = None;
        let mut key_prefix: Option<KeyPrefix> = None;
        let mut key_secret: Option<KeySecret> = None;
        let mut tls: Option<TlsValue> = None;
        let mut snapshot_path: Option<SnapshotPath> = None;
        while let Some(key) = map.next_key::<StateKey>()? {
            match key {
                StateKey::Backend => once(&mut backend, "backend", map.next_value()?)?,
                StateKey::RedisUrl => once(&mut redis_url, "redis_url", map.next_value()?)?,
                StateKey::Timeout => once(&mut timeout, "timeout", map.next_value()?)?,
                StateKey::OnError => once(&mut on_error, "on_error", map.next_value()?)?,
                StateKey::KeyPrefix => once(&mut key_prefix, "key_prefix", map.next_value()?)?,
                StateKey::KeySecret => once(&mut key_secret, "key_secret", map.next_value()?)?,
                StateKey::Tls => once(&mut tls, "tls", map.next_value()?)?,
                StateKey::SnapshotPath => {
                    once(&mut snapshot_path, "snapshot_path", map.next_value()?)?
                }
            }
        }
        match backend.unwrap_or(BackendName::Memory) {
            BackendName::Memory => {
                let redis_only = [
                    ("redis_url", redis_url.is_some()),
                    ("timeout", timeout.is_some()),
                    ("on_error", on_error.is_some()),
                    ("key_prefix", key_prefix.is_some()),
                    ("key_secret", key_secret.is_some()),
                    ("tls", tls.is_some()),
                ];
                if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
                    return Err(de::Error::custom(format!(
                        "`{key}` applies only to `backend: redis`; the memory backend keeps \
                         its state in this process"
                    )));
                }
                Ok(State(StateConfig::Memory {
                    snapshot_path: snapshot_path.map(|p| p.0),
                }))
            }
            BackendName::Redis => {
                let url = redis_url.ok_or_else(|| {
                    de::Error::custom(
                        "`backend: redis` needs `redis_url`, e.g. `redis://127.0.0.1:6379/0`",
                    )
                })?;
                let key_secret = key_secret.ok_or_else(|| {
                    de::Error::custom(format!(
                        "`backend: redis` needs `key_secret`: a secret of at least \
                         {MIN_KEY_SECRET_LEN} characters, the same on every replica, that \
                         delivery IDs and rate-limit keys are hashed with (e.g. \
                         `${{HOOKGATE_STATE_KEY}}`, set from `openssl rand -hex 32`)"
                    ))
                })?;
                if snapshot_path.is_some() {
                    return Err(de::Error::custom(
                        "`snapshot_path` applies only to `backend: memory`; Redis keeps the \
                         delivered IDs itself",
                    ));
                }
                if tls.is_some() && !url.0.is_tls() {
                    return Err(de::Error::custom(
                        "`tls` applies only to a `rediss://` URL; `redis://` connects in plain \
                         text",
                    ));
                }
                Ok(State(StateConfig::Redis(RedisState {
                    tls: tls.map(|t| Box::new(t.0)),
                    url: url.0,
                    timeout: timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
                    on_error: on_error.map_or(OnStateError::default(), |o| o.0),
                    key_prefix: key_prefix.map_or_else(|| DEFAULT_KEY_PREFIX.to_string(), |p| p.0),
                    key_secret: key_secret.0,
                })))
            }
        }
    }
}

/// Sets `slot` to `value`, or fails on a repeated key (which `scan` reports first, at the key).
fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

/// `state.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendName {
    Memory,
    Redis,
}

impl<'de> Deserialize<'de> for BackendName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "`memory` or `redis`", |text| {
            match text.trim().to_ascii_lowercase().as_str() {
                "memory" => Ok(Self::Memory),
                "redis" => Ok(Self::Redis),
                _ => Err(format!(
                    "unknown state backend `{text}`; expected `memory` or `redis`"
                )),
            }
        })
    }
}

/// `state.redis_url` ([`RedisUrl::parse`]); never quoted in an error.
#[derive(Debug)]
struct RedisUrlValue(RedisUrl);

impl<'de> Deserialize<'de> for RedisUrlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(
            deserializer,
            "a Redis URL such as `redis://127.0.0.1:6379/0`",
            |text| RedisUrl::parse(text.trim()).map(Self),
        )
    }
}

/// `state.on_error`.
#[derive(Debug)]
struct OnErrorValue(OnStateError);

impl<'de> Deserialize<'de> for OnErrorValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(
            deserializer,
            "`fail_closed` or `fail_open`",
            |text| match text.trim().to_ascii_lowercase().as_str() {
                "fail_closed" => Ok(Self(OnStateError::FailClosed)),
                "fail_open" => Ok(Self(OnStateError::FailOpen)),
                _ => Err(format!(
                    "unknown value `{text}`; expected `fail_closed` (answer 503) or \
                     `fail_open` (decide from this process's memory)"
                )),
            },
        )
    }
}

/// `state.key_prefix`: 1 to 64 ASCII letters, digits, `_`, `-`, `.` or `:` (no braces, which
/// Redis Cluster reads as hash tags, and no spaces).
#[derive(Debug)]
struct KeyPrefix(String);

impl<'de> Deserialize<'de> for KeyPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a key prefix such as `hookgate`", |text| {
            let valid = (1..=64).contains(&text.len())
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
            if valid {
                Ok(Self(text))
            } else {
                Err(format!(
                    "key prefix `{text}` must be 1 to 64 ASCII letters, digits, `_`, `-`, `.` \
                     or `:`"
                ))
            }
        })
    }
}

/// `state.key_secret`: at least [`MIN_KEY_SECRET_LEN`] characters; never quoted.
#[derive(Debug)]
struct KeySecret(Secret);

impl<'de> Deserialize<'de> for KeySecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a secret string", |secret| {
            if secret.len() < MIN_KEY_SECRET_LEN {
                return Err(format!(
                    "the key secret must have at least {MIN_KEY_SECRET_LEN} characters (e.g. \
                     from `openssl rand -hex 32`; is its environment variable set?)"
                ));
            }
            Ok(Self(Secret::new(secret)))
        })
    }
}

/// `state.tls`: `ca`, and `cert` with `key`, each a PEM file read and checked at its line; a
/// `cert` without `key` (or the reverse), or a key that isn't the certificate's, is an error at
/// the mapping.
#[derive(Debug)]
struct TlsValue(RedisTls);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TlsKey {
    Ca,
    Cert,
    Key,
}

const TLS_KEYS: &[&str] = &["ca", "cert", "key"];

impl<'de> Deserialize<'de> for TlsValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Tls", TLS_KEYS, TlsVisitor)
    }
}

struct TlsVisitor;

impl<'de> Visitor<'de> for TlsVisitor {
    type Value = TlsValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `tls` mapping with `ca`, `cert` and `key` (each optional)")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<TlsValue, A::Error> {
        let mut ca: Option<PemValue> = None;
        let mut cert: Option<PemValue> = None;
        let mut key: Option<PemValue> = None;
        while let Some(name) = map.next_key::<TlsKey>()? {
            match name {
                TlsKey::Ca => once(&mut ca, "ca", map.next_value_seed(PemKind::Certificates)?)?,
                TlsKey::Cert => once(
                    &mut cert,
                    "cert",
                    map.next_value_seed(PemKind::Certificates)?,
                )?,
                TlsKey::Key => once(&mut key, "key", map.next_value_seed(PemKind::PrivateKey)?)?,
            }
        }
        let client = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                pem::check_pair(&cert.0, &key.0).map_err(de::Error::custom)?;
                Some(ClientIdentity {
                    cert: cert.0,
                    key: key.0,
                })
            }
            _ => {
                return Err(de::Error::custom(
                    "a client certificate needs both `cert` and `key`",
                ))
            }
        };
        Ok(TlsValue(RedisTls {
            ca: ca.map(|c| c.0),
            client,
        }))
    }
}

/// A PEM file path, read and checked as [`PemKind`] says.
struct PemValue(PemFile);

#[derive(Clone, Copy)]
enum PemKind {
    Certificates,
    PrivateKey,
}

impl<'de> de::DeserializeSeed<'de> for PemKind {
    type Value = PemValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PemValue, D::Error> {
        parse_scalar(deserializer, "the path of a PEM file", |path| {
            match self {
                PemKind::Certificates => pem::read_certificates(&path),
                PemKind::PrivateKey => pem::read_private_key(&path),
            }
            .map(PemValue)
        })
    }
}

/// `state.snapshot_path`: a non-empty file path (the file itself need not exist yet).
#[derive(Debug)]
struct SnapshotPath(std::path::PathBuf);

impl<'de> Deserialize<'de> for SnapshotPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a file path", |text| {
            let path = text.trim();
            if path.is_empty() || path.ends_with('/') {
                return Err("`snapshot_path` must be a file path".to_string());
            }
            Ok(Self(path.into()))
        })
    }
}
