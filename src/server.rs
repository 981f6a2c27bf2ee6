//! Assembles the Pingora server: the proxy service, the admin service and the state
//! maintenance job.

use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::state::{Maintenance, State};

/// Pingora's own settings, derived from ours (River's approach: users never see Pingora's YAML).
fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads.get(),
        // A process per listen port gets its own upgrade socket, so several gateways (tests,
        // sidecars) can share a machine.
        upgrade_sock: std::env::temp_dir()
            .join(format!("hookgate-upgrade-{}.sock", config.listen.port()))
            .to_string_lossy()
            .into_owned(),
        pid_file: std::env::temp_dir()
            .join(format!("hookgate-{}.pid", config.listen.port()))
            .to_string_lossy()
            .into_owned(),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    }
}

/// Builds the server for `config`, ready to run.
pub fn build(config: &Config) -> Server {
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(config));
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let clock = crate::clock::system();
    // Memory or Redis per `config.state`; Redis is connected on first use, never here.
    let state = Arc::new(State::new(config, clock.clone(), &metrics));
    let gateway = Gateway::new(config, &metrics, state.clone(), clock);
    let route_metrics = config
        .routes
        .iter()
        .map(|r| metrics.route(&r.name))
        .collect();
    let maintenance = background_service(
        "hookgate state maintenance",
        Maintenance::new(state.clone(), route_metrics),
    );
    let deadlines = crate::conn::Deadlines {
        header: config.header_timeout,
        idle: config.idle_timeout,
    };
    let unrouted = metrics.route(crate::metrics::NO_ROUTE);
    let mut proxy = crate::conn::proxy_service(
        &server.configuration,
        gateway,
        "hookgate proxy",
        deadlines,
        unrouted,
    );
    proxy.add_tcp(&config.listen.to_string());

    let readiness = Arc::new(Readiness::new(config.listen, state));
    let mut admin = Service::new("hookgate admin".to_string(), Admin::new(metrics, readiness));
    admin.threads = Some(1);
    admin.add_tcp(&config.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(maintenance);
    server
}

/// Runs the gateway until a signal stops it (SIGTERM graceful, SIGINT fast, SIGQUIT upgrade).
pub fn run(config: &Config) -> ! {
    build(config).run_forever()
}
