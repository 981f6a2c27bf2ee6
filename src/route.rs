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

#[cfg(test)]
mod tests {
    use super::*;

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
