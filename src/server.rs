//! Assembles the Pingora server: the proxy service (plain and TLS listeners), the admin service
//! and the state maintenance job.

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
use crate::tls::CertStore;

/// Pingora's own settings, derived from ours (River's approach: users never see Pingora's YAML).
fn server_conf(config: &Config) -> ServerConf {
    // Named after the first proxy listener: unique per gateway on a machine.
    let port = config.proxy_addrs()[0].port();
    ServerConf {
        threads: config.threads.get(),
        // A process per listen port gets its own upgrade socket, so several gateways (tests,
        // sidecars) can share a machine.
        upgrade_sock: std::env::temp_dir()
            .join(format!("hookgate-upgrade-{}.sock", port))
            .to_string_lossy()
            .into_owned(),
        pid_file: std::env::temp_dir()
            .join(format!("hookgate-{}.pid", port))
            .to_string_lossy()
            .into_owned(),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    }
}

/// A built gateway: the Pingora server, and what a config reload updates in it.
pub struct Built {
    /// Ready to run (`run_forever`).
    pub server: Server,
    /// The TLS listener's certificate, when `listen_tls` is set. A reload hands it the newly
    /// loaded `Config::listen_tls` certificate with [`CertStore::replace`]; the next handshake
    /// uses it.
    pub cert_store: Option<Arc<CertStore>>,
}

/// Builds the server for `config`, ready to run. Fails only if OpenSSL refuses the TLS
/// listener's settings.
pub fn build(config: &Config) -> pingora::Result<Built> {
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
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "hookgate proxy",
    );
    if let Some(listen) = config.listen {
        proxy.add_tcp(&listen.to_string());
    }
    let cert_store = match &config.listen_tls {
        Some(tls) => {
            let store = Arc::new(CertStore::new(tls.cert.clone()));
            let settings = crate::tls::listener_settings(store.clone(), tls.min_version)?;
            proxy.add_tls_with_settings(&tls.addr.to_string(), None, settings);
            Some(store)
        }
        None => None,
    };

    let tls_addr = config.listen_tls.as_ref().map(|tls| tls.addr);
    let readiness = Arc::new(Readiness::new(config.listen, tls_addr, state));
    let mut admin = Service::new("hookgate admin".to_string(), Admin::new(metrics, readiness));
    admin.threads = Some(1);
    admin.add_tcp(&config.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(maintenance);
    Ok(Built { server, cert_store })
}

/// Runs the gateway until a signal stops it (SIGTERM graceful, SIGINT fast, SIGQUIT upgrade).
pub fn run(config: &Config) -> ! {
    match build(config) {
        Ok(built) => built.server.run_forever(),
        Err(e) => {
            eprintln!("hookgate: cannot start: {e}");
            std::process::exit(1)
        }
    }
}
