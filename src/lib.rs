//! hookgate: a webhook verification gateway on Pingora.
//!
//! A request's path through the gateway is in [`proxy`]; each step lives in its own module.

pub mod admin;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dedup;
pub mod drain;
pub mod events;
pub mod forward;
pub mod framing;
pub mod handover;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod receiver;
pub mod reload;
pub mod respond;
pub mod route;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod verify;
