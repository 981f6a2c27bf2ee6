//! What the proxy builds from one configuration: routes with their verifiers, upstreams and
//! metric handles, the router, the state over them and the forwarder. A reload builds a new
//! [`Runtime`] and swaps it in whole ([`Live`]); a request holds the one it started with until
//! it ends, so it finishes on the configuration it began on.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::Config;
use crate::dedup::{DedupPolicy, ReplayWindow};
use crate::events::{Admitted, EventsConfig};
use crate::forward::{Forwarder, Target};
use crate::metrics::{Metrics, RouteMetrics};
use crate::ratelimit::RateLimit;
use crate::route::Router;
use crate::state::State;
use crate::verify::{self, Verifier};

/// Per-process upstream connection pool size.
const UPSTREAM_POOL_SIZE: usize = 256;
/// How long a dedup claim outlives the upstream timeout before it expires by itself.
const CLAIM_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The serving runtime, swapped whole on reload. Readers call `load_full` once per request.
pub type Live = Arc<ArcSwap<Runtime>>;

/// One route as the proxy runs it: its settings and everything built from them.
pub struct RouteRuntime {
    /// Position in the configuration: how the state knows the route.
    pub index: usize,
    pub name: String,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
    pub verifier: Box<dyn Verifier>,
    pub replay: Option<ReplayWindow>,
    pub rate_limit: Option<RateLimit>,
    pub dedup: Option<DedupPolicy>,
    pub target: Target,
    /// The route's `events` block, with one upstream per entry of its `routes`.
    pub events: Option<(EventsConfig, Vec<Target>)>,
    /// The verifying scheme, for `X-Hookgate-Verified`.
    pub scheme: &'static str,
    pub metrics: RouteMetrics,
}

impl RouteRuntime {
    /// Where an admitted event goes: its `events.routes` upstream, else the route's.
    pub fn target_of(&self, event: &Admitted) -> &Target {
        match (&self.events, event.upstream) {
            (Some((_, targets)), Some(i)) => &targets[i],
            _ => &self.target,
        }
    }
}

/// Everything one configuration makes of the gateway.
pub struct Runtime {
    pub router: Router,
    pub routes: Vec<RouteRuntime>,
    pub state: Arc<State>,
    pub unverified_per_ip: Option<NonZeroU32>,
    pub claim_lease: Duration,
    pub forwarder: Forwarder,
}

impl Runtime {
    /// Builds every route's verifier, upstream targets and metric handles over `state`.
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        state: Arc<State>,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteRuntime {
                index: i,
                name: r.name.clone(),
                max_body_bytes: r.max_body_bytes,
                body_timeout: r.body_timeout,
                verifier: verify::build(&r.verify, clock.clone()),
                replay: r.replay,
                rate_limit: r.rate_limit.clone(),
                dedup: r.dedup.clone(),
                target: Target::new(&r.upstream, config.upstream_timeout),
                events: r.events.clone().map(|events| {
                    let targets = (events.routes.iter())
                        .map(|e| Target::new(&e.upstream, config.upstream_timeout))
                        .collect();
                    (events, targets)
                }),
                scheme: r.verify.scheme.name(),
                metrics: metrics.route(&r.name),
            })
            .collect();
        Self {
            router: Router::new(config.routes.iter().map(|r| &r.path)),
            routes,
            state,
            unverified_per_ip: config.unverified_per_ip,
            claim_lease: config.upstream_timeout + CLAIM_LEASE_MARGIN,
            forwarder: Forwarder::new(UPSTREAM_POOL_SIZE, config.upstream_timeout),
        }
    }
}
