//! The one error type of config loading: where (file, line, column, key) and what.

use std::fmt;

/// Why a config file could not be loaded.
///
/// Displays as `<file>:<line>:<column>: <key>: <message>`; the parts that are unknown are left
/// out (`<file>: <message>` for an unreadable file). `key` is a dotted path into the document,
/// such as `routes[1].verify.secrets`. The message never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file name as given to [`super::load`] (or the `origin` given to [`super::parse`]).
    pub file: String,
    /// 1-based line of the offending key or value.
    pub line: Option<usize>,
    /// 1-based column of the offending key or value.
    pub column: Option<usize>,
    /// Dotted path of the offending key (`routes[0].verify.secrets[1]`).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, ...).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    /// Converts a serde_yaml error, splitting its text into key path and message.
    ///
    /// serde_yaml exposes the line and column (`location()`) but the key path only inside its
    /// `Display` text: `<path>: <message> at line L column C` (the path is left out at the
    /// document root, the position when it is the very start). serde_yaml 0.9 is deprecated
    /// and frozen, so this format is stable; `tests` pins it.
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error) -> Self {
        let location = err.location();
        let mut text = err.to_string();
        if let Some(location) = &location {
            // Syntax errors (libyaml) put it before a context clause, hence not just a suffix.
            let at = format!(" at line {} column {}", location.line(), location.column());
            text = text.replacen(&at, "", 1);
        }
        let (mut key, mut message) = match text.split_once(": ") {
            Some((path, message)) if is_key_path(path) => (Some(path.to_string()), message),
            _ => (None, text.as_str()),
        };
        // Name the unknown, missing or repeated key itself rather than the mapping that holds it.
        for prefix in ["unknown field `", "missing field `", "duplicate key `"] {
            if let Some(field) = message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
            {
                key = Some(match key {
                    Some(parent) => format!("{parent}.{field}"),
                    None => field.to_string(),
                });
            }
        }
        if message.is_empty() {
            message = "invalid value";
        }
        Self {
            file: file.to_string(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            key,
            message: message.to_string(),
        }
    }
}

/// Whether `text` looks like a serde_yaml key path (`routes[0].verify.secrets`), as opposed to
/// the start of a message such as `invalid type: ...`.
fn is_key_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '?'))
}
