//! Finding the route of a request path.

use std::collections::HashMap;

use crate::config::PathPattern;

/// Maps request paths to route indexes. Paths are validated not to overlap, so at most one
/// route matches: exact paths are found by hash, prefixes by a short scan.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, usize>,
    prefixes: Vec<(String, usize)>,
}

impl Router {
    /// A router over `patterns`; index `i` stands for the `i`-th pattern.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a PathPattern>) -> Self {
        let mut router = Self::default();
        for (i, pattern) in patterns.into_iter().enumerate() {
            match pattern {
                PathPattern::Exact(p) => {
                    router.exact.insert(p.clone(), i);
                }
                PathPattern::Prefix(p) => router.prefixes.push((p.clone(), i)),
            }
        }
        // Longest prefix first, in case overlapping prefixes are ever allowed.
        router
            .prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        router
    }

    /// The index of the route for `path` (without query), if any.
    pub fn find(&self, path: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(path) {
            return Some(*i);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, i)| *i)
    }
}

/// Refuses request paths whose meaning could change between the gateway and the upstream.
///
/// Routes match the raw path, and the raw path is forwarded. An upstream that normalizes dot
/// segments (RFC 3986 §5.2.4) or decodes `%2F` would route `/hooks/a/../b` to `/hooks/b`, so a
/// request verified with route `a`'s secret would land on route `b`'s endpoint. Such paths have
/// no use in webhook URLs, so they are refused rather than normalized.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("the path may not contain `.` or `..` segments");
    }
    let bytes = path.as_bytes();
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%' && matches!(&[w[1], w[2].to_ascii_lowercase()], b"2e" | b"2f" | b"5c")
    });
    if encoded_separator || path.contains('\\') {
        return Err("the path may not contain encoded dots, encoded slashes or backslashes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_their_route_are_refused() {
        for bad in [
            "/hooks/a/../b",
            "/hooks/a/..",
            "/hooks/./a",
            "/hooks/a/%2e%2e/b",
            "/hooks/a/%2E./b",
            "/hooks/a%2Fb",
            "/hooks/a%5cb",
            "/hooks/a\\..\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["/webhooks/dossiers", "/hooks/a.b/c..d", "/hooks/%20x", "/"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn finds_exact_and_prefix_routes() {
        let patterns = [
            PathPattern::parse("/webhooks/dossiers").unwrap(),
            PathPattern::parse("/hooks/*").unwrap(),
        ];
        let r = Router::new(&patterns);
        assert_eq!(r.find("/webhooks/dossiers"), Some(0));
        assert_eq!(r.find("/webhooks/dossiers/"), None);
        assert_eq!(r.find("/hooks/github"), Some(1));
        assert_eq!(r.find("/hooks"), None);
        assert_eq!(r.find("/"), None);
    }
}
