//! Lowering: the validated file schema becomes the internal model.
//!
//! Values were validated while they were deserialized (see [`super::value`]); what is left here
//! is resolving defaults and per-route overrides, so it cannot fail.

use super::file;
use super::model::{Config, Route, VerifyConfig};

pub(crate) fn lower(file: file::Config) -> Config {
    let file::Config {
        listen,
        admin_listen,
        threads,
        max_body_bytes,
        upstream_timeout,
        body_timeout,
        routes,
    } = file;
    let routes = routes
        .0
        .into_iter()
        .map(|route| Route {
            name: route.name.0,
            path: route.path.0,
            upstream: route.upstream.0,
            max_body_bytes: route.max_body_bytes.unwrap_or(max_body_bytes).0,
            body_timeout: route.body_timeout.unwrap_or(body_timeout).0,
            verify: VerifyConfig {
                header: route.verify.header.0,
                secrets: route.verify.secrets.0,
            },
        })
        .collect();
    Config {
        listen: listen.0,
        admin_listen: admin_listen.0,
        threads: threads.0,
        upstream_timeout: upstream_timeout.0,
        routes,
    }
}
