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
//! - a YAML syntax error: where libyaml detected it.

mod context;
mod env;
mod error;
mod file;
mod lower;
pub mod model;
mod scan;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

pub use error::ConfigError;
pub use file::defaults;
pub use model::{Config, PathPattern, Route, Secret, Upstream, VerifyConfig};

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
    let context = context::ParseContext {
        env: snapshot,
        routes: Vec::new(),
    };
    let file = context::scoped(context, || serde_yaml::from_str::<file::Config>(text))
        .map_err(|err| ConfigError::from_yaml(origin, &err))?;
    Ok(lower::lower(file))
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
