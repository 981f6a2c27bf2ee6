//! Configuration: the YAML file schema, its validation, and the internal model it lowers into.
//!
//! `load`/`parse` read the file into the serde structs of `file` (whose value types validate
//! and expand `${NAME}` as they are deserialized, so every error carries its line and key),
//! then `lower` it into the [`model`] the rest of hookgate uses. `config/hookgate.yaml`
//! documents every key.
//!
//! Where an error points (all positions come from serde_yaml's own marks, none from searching
//! the text):
//! - a bad value (address, duration, count, path, upstream, header name, secret, unset
//!   `${NAME}`), a duplicate route name or an overlapping path: the value itself, because it is
//!   checked inside its visitor while serde_yaml still holds its position (`value`);
//! - an unknown key: the key (serde's field identifier is deserialized at the key); a repeated
//!   key: the repeated key (`scan`);
//! - an empty `routes` or `secrets` list: the list;
//! - a missing key: the first line of the mapping that lacks it;
//! - a certificate, key or CA file that can't be read or parsed: its `cert`, `key` or `ca`
//!   value, naming the file; a key that doesn't belong to the certificate: the `listen_tls`
//!   mapping's first line, naming both files (`tls`);
//! - a YAML syntax error: where libyaml detected it;
//! - what only the whole file tells (an unknown `tier`, `rate_limit_key` without `tier`, a
//!   `dedup` block without an ID source on a scheme that defines none, `upstream_tls` on an
//!   `http://` upstream, an `https://` upstream at an IP address without `sni`): lowering finds
//!   it, then the file is read again with that error planted at its key (`context::Deferred`),
//!   so it points at the `tier`, `rate_limit_key` or `upstream` value, or at the `dedup` or
//!   `upstream_tls` mapping's first line;
//! - `listen_tls.addr` equal to `listen`: no position (both are plain values of the document).

mod context;
mod env;
mod error;
mod events;
mod file;
mod lower;
pub mod model;
mod pem;
mod scan;
mod state;
mod tls;
mod value;
mod warn;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

pub use error::ConfigError;
pub use file::defaults;
pub use model::{
    Config, ListenTls, PathPattern, Route, Secret, Upstream, UpstreamTls, VerifyConfig,
};
pub use warn::warnings;

/// Loads the config file at `path`, expanding `${NAME}` from the process environment.
///
/// Errors name the file as `path` was given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::file(&origin, format!("cannot read the config file: {err}")))?;
    parse(&text, &origin, &|name| std::env::var(name).ok())
}

/// Parses config `text`; `origin` names it in errors, `env` looks up `${NAME}` variables
/// (`None`: unset).
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let snapshot = env_snapshot(text, origin, env)?;
    let file = read(text, origin, snapshot.clone(), Vec::new())?;
    let config = lower::lower(file).map_err(|deferred| place(text, origin, snapshot, deferred))?;
    if let (Some(plain), Some(tls)) = (config.listen, &config.listen_tls) {
        if plain == tls.addr {
            return Err(ConfigError {
                key: Some("listen_tls.addr".to_string()),
                ..ConfigError::file(
                    origin,
                    format!("`{plain}` is also `listen`: the two listeners need different ports"),
                )
            });
        }
    }
    Ok(config)
}

/// Deserializes `text` with `env` (and, on a second reading, the `deferred` errors to raise).
fn read(
    text: &str,
    origin: &str,
    env: HashMap<String, Option<String>>,
    deferred: Vec<context::Deferred>,
) -> Result<file::Config, ConfigError> {
    let context = context::ParseContext {
        env,
        routes: Vec::new(),
        deferred,
    };
    context::scoped(context, || serde_yaml::from_str::<file::Config>(text))
        .map_err(|err| ConfigError::from_yaml(origin, &err))
}

/// The first in file order of the (non-empty) errors lowering found, with the position of its
/// key: the file is read again and the value each error concerns raises it (see
/// `context::Deferred`).
fn place(
    text: &str,
    origin: &str,
    env: HashMap<String, Option<String>>,
    deferred: Vec<context::Deferred>,
) -> ConfigError {
    let fallback = deferred.first().map(|first| ConfigError {
        key: Some(first.key_path()),
        ..ConfigError::file(origin, first.message.clone())
    });
    match read(text, origin, env, deferred) {
        Err(err) => err,
        // Not expected: the same text and environment were read without error, and each key an
        // error concerns was present. Still report one, without a position.
        Ok(_) => fallback.unwrap_or_else(|| ConfigError::file(origin, "invalid configuration")),
    }
}

/// Checks for duplicate keys and looks up every variable a string value of `text` refers to.
fn env_snapshot(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Option<String>>, ConfigError> {
    let names = scan::scan(text).map_err(|err| ConfigError::from_yaml(origin, &err))?;
    Ok(names
        .into_iter()
        .map(|name| {
            let value = env(&name);
            (name, value)
        })
        .collect())
}
