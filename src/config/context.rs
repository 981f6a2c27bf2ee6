//! State that value deserializers need while one file is parsed.
//!
//! serde's `Deserialize` takes no context argument, yet validation has to happen *during*
//! deserialization: only errors raised there get serde_yaml's line, column and key path. So
//! [`scoped`] installs a [`ParseContext`] in a thread-local for the duration of one parse:
//! - an owned snapshot of the environment variables the file refers to (the caller's lookup is
//!   a borrowed `&dyn Fn`, which cannot be stored in a thread-local), used by `${NAME}` expansion;
//! - the routes deserialized so far, so a route's `name` and `path` can be checked against the
//!   earlier ones right where they are read (duplicate names, overlapping paths);
//! - the errors that lowering found ([`Deferred`]), when the file is read a second time to place
//!   them: the value each concerns raises it while it is deserialized ([`deferred_error`]), so
//!   the first one in file order is reported.
//!
//! Outside [`scoped`], the environment is empty, no routes are known and nothing is deferred.

use std::cell::RefCell;
use std::collections::HashMap;

use super::env::{self, ExpandError};
use super::model::PathPattern;

#[derive(Debug, Default)]
pub(crate) struct ParseContext {
    /// Variable name -> value (`None`: unset), for every name the file refers to.
    pub env: HashMap<String, Option<String>>,
    /// Routes already read, in file order.
    pub routes: Vec<SeenRoute>,
    /// The errors to raise at their keys (second reading only).
    pub deferred: Vec<Deferred>,
}

/// An error that needs the whole file to be found, which lowering finds (an unknown `tier`:
/// the top-level `tiers` may come after `routes`; `rate_limit_key` without `tier`; a `dedup`
/// block without an ID source on a scheme that defines none, where `verify` may come after
/// `dedup`).
///
/// serde_yaml gives a position only to errors raised while it deserializes a value, so
/// `config::parse` then reads the file again with this installed, and the value it names raises
/// it ([`deferred_error`]): the error gets that value's line and key path like any other. With
/// several, the one read first is reported, as a first reading would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deferred {
    /// Index of the route in `routes`.
    pub route: usize,
    pub key: RouteKey,
    pub message: String,
}

impl Deferred {
    /// The key path the error concerns (`routes[1].tier`).
    pub fn key_path(&self) -> String {
        format!("routes[{}].{}", self.route, self.key.as_str())
    }
}

/// A route key whose value may raise a [`Deferred`] error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKey {
    /// The `tier` value.
    Tier,
    /// The `rate_limit_key` value.
    RateLimitKey,
    /// The `dedup` mapping (raised once the mapping is read: its first line).
    Dedup,
    /// The `upstream` value (an https upstream at an IP address without `sni`).
    Upstream,
    /// The `upstream_tls` mapping (set for an `http://` upstream; its first line).
    UpstreamTls,
}

impl RouteKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tier => "tier",
            Self::RateLimitKey => "rate_limit_key",
            Self::Dedup => "dedup",
            Self::Upstream => "upstream",
            Self::UpstreamTls => "upstream_tls",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SeenRoute {
    pub name: String,
    pub path: PathPattern,
}

thread_local! {
    static CURRENT: RefCell<Option<ParseContext>> = const { RefCell::new(None) };
}

/// Runs `f` with `context` installed (restoring whatever was installed before, even on panic).
pub(crate) fn scoped<R>(context: ParseContext, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ParseContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|current| *current.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|current| current.borrow_mut().replace(context));
    let _restore = Restore(previous);
    f()
}

/// Runs `f` on the installed context, or on an empty one outside [`scoped`].
fn with<R>(f: impl FnOnce(&mut ParseContext) -> R) -> R {
    CURRENT.with(|current| match current.borrow_mut().as_mut() {
        Some(context) => f(context),
        None => f(&mut ParseContext::default()),
    })
}

/// Expands `${NAME}` references in `value` from the installed environment snapshot.
pub(crate) fn expand(value: &str) -> Result<String, ExpandError> {
    if !value.contains('$') {
        return Ok(value.to_string());
    }
    with(|context| env::expand(value, |name| context.env.get(name).cloned().flatten()))
}

/// The earlier route (index and entry) that `check` says conflicts, if any.
pub(crate) fn find_seen_route(check: impl Fn(&SeenRoute) -> bool) -> Option<(usize, SeenRoute)> {
    with(|context| {
        context
            .routes
            .iter()
            .enumerate()
            .find(|(_, route)| check(route))
            .map(|(index, route)| (index, route.clone()))
    })
}

/// Records a fully read route so that later routes are checked against it.
pub(crate) fn push_seen_route(route: SeenRoute) {
    with(|context| context.routes.push(route));
}

/// The message of the [`Deferred`] error for `key` of the route being read, if there is one. The route being read is the one after those already recorded.
pub(crate) fn deferred_error(key: RouteKey) -> Option<String> {
    with(|context| {
        context
            .deferred
            .iter()
            .find(|deferred| deferred.key == key && deferred.route == context.routes.len())
            .map(|deferred| deferred.message.clone())
    })
}
