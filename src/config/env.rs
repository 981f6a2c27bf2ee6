//! `${NAME}` expansion of string values, so secrets can stay out of the config file.
//!
//! Syntax (applied to each parsed string value, never to the file's text, so an expanded value
//! cannot change the YAML structure):
//! - `${NAME}`: the variable's value; an error if it is unset. Set but empty gives `""`.
//! - `${NAME:-fallback}`: the fallback (taken literally, up to the next `}`) when `NAME` is
//!   unset or empty.
//! - `$${`: a literal `${`. Any other `$` is kept as is.
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`. Expansion is a single pass: a value that itself contains
//! `${...}` is not expanded again.

/// Why a string could not be expanded. Messages never contain the string itself (it may be a
/// secret), only the variable's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "environment variable `{0}` is not set (write `${{{0}:-fallback}}` to give it a default)"
    )]
    Unset(String),
    #[error("unterminated `${{`: expected a closing `}}` (write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error(
        "invalid variable name in `${{...}}`: use letters, digits and `_`, not starting with a \
         digit (write `$${{` for a literal `${{`)"
    )]
    InvalidName,
}

/// Expands `input`, looking variables up with `lookup` (`None`: unset).
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    // Fast path: nothing to expand (the common case for everything but secrets).
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body_and_rest) = after.strip_prefix('{') {
            let end = body_and_rest.find('}').ok_or(ExpandError::Unterminated)?;
            let body = &body_and_rest[..end];
            let (name, fallback) = match body.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (body, None),
            };
            if !is_valid_name(name) {
                return Err(ExpandError::InvalidName);
            }
            match (lookup(name), fallback) {
                (Some(value), Some(fallback)) if value.is_empty() => out.push_str(fallback),
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => return Err(ExpandError::Unset(name.to_string())),
            }
            rest = &body_and_rest[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable names `input` refers to, in order (stops at the first syntax error, which
/// [`expand`] will report).
pub fn referenced_names(input: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    let _ = expand(input, |name| {
        names.borrow_mut().push(name.to_string());
        Some(String::new())
    });
    names.into_inner()
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("whsec_abc".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${SECRET}".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_fallbacks_and_escapes() {
        assert_eq!(expand("plain", env).unwrap(), "plain");
        assert_eq!(expand("${SECRET}", env).unwrap(), "whsec_abc");
        assert_eq!(expand("a-${SECRET}-b", env).unwrap(), "a-whsec_abc-b");
        assert_eq!(
            expand("${SECRET}${SECRET}", env).unwrap(),
            "whsec_abcwhsec_abc"
        );
        assert_eq!(expand("${EMPTY}", env).unwrap(), "");
        assert_eq!(expand("${EMPTY:-dev}", env).unwrap(), "dev");
        assert_eq!(expand("${UNSET:-dev}", env).unwrap(), "dev");
        assert_eq!(expand("${UNSET:-}", env).unwrap(), "");
        assert_eq!(expand("${SECRET:-dev}", env).unwrap(), "whsec_abc");
        assert_eq!(expand("${UNSET:-a:-b c}", env).unwrap(), "a:-b c");
        assert_eq!(expand("$${SECRET}", env).unwrap(), "${SECRET}");
        assert_eq!(expand("cost: $5 $$ $", env).unwrap(), "cost: $5 $$ $");
        // Single pass: an expanded value is not expanded again.
        assert_eq!(expand("${NESTED}", env).unwrap(), "${SECRET}");
    }

    #[test]
    fn reports_unset_and_malformed_references() {
        assert_eq!(
            expand("x${UNSET}", env),
            Err(ExpandError::Unset("UNSET".into()))
        );
        assert!(expand("${UNSET}", env)
            .unwrap_err()
            .to_string()
            .contains("`UNSET` is not set"));
        assert_eq!(expand("${SECRET", env), Err(ExpandError::Unterminated));
        assert_eq!(expand("${}", env), Err(ExpandError::InvalidName));
        assert_eq!(expand("${1X}", env), Err(ExpandError::InvalidName));
        assert_eq!(expand("${A-B}", env), Err(ExpandError::InvalidName));
    }

    #[test]
    fn lists_referenced_names() {
        assert_eq!(
            referenced_names("${A}x${B:-y}$${C}${D"),
            vec!["A".to_string(), "B".to_string()]
        );
    }
}
