//! The deployment files in deploy/, checked against the real binary:
//!
//! - the binary starts the way deploy/Dockerfile's ENTRYPOINT and CMD start it, with the
//!   config and secrets that deploy/kubernetes/sidecar.yaml mounts and passes in, becomes ready,
//!   passes the image's HEALTHCHECK command, verifies and forwards, logs JSON, and stops on the
//!   image's STOPSIGNAL;
//! - every hookgate config embedded in a Kubernetes manifest passes `hookgate check`, with no
//!   warning, given the environment its container gets;
//! - ports, paths and the user agree across the Dockerfile, the configs and the manifests.
//!
//! Only what cannot exist on this machine is substituted: the in-image paths of the binary and
//! the config become the test's, listen addresses become free loopback ports, cluster DNS names
//! of upstreams become 127.0.0.1 (a host name is resolved at load), and `listen_tls`'s cert and
//! key become a fresh self-signed pair.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;
use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MANIFESTS: [&str; 2] = [
    "deploy/kubernetes/sidecar.yaml",
    "deploy/kubernetes/edge.yaml",
];

// ---------------------------------------------------------------------------------------------
// The Dockerfile

/// The final stage of deploy/Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines
/// joined, comments and parser directives dropped.
fn final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment between continuation lines
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instr, args) = current.split_once(char::is_whitespace).unwrap();
                instructions.push((instr.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    instructions.split_off(last_from)
}

/// The arguments of the final stage's last `instr`.
fn instruction(instr: &str) -> String {
    final_stage()
        .into_iter()
        .rev()
        .find(|(i, _)| i == instr)
        .unwrap_or_else(|| panic!("deploy/Dockerfile's final stage has no {instr}"))
        .1
}

/// An exec-form (JSON array) argument list; the shell form would put `sh -c` in front, which
/// the image's users (Kubernetes probes, `docker run` args) don't expect.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("not an exec-form JSON array ({e}): {args}"))
}

/// ENTRYPOINT followed by CMD: the command line a container of the image runs.
fn image_command() -> Vec<String> {
    let mut argv = exec_form(&instruction("ENTRYPOINT"));
    argv.extend(exec_form(&instruction("CMD")));
    argv
}

/// The HEALTHCHECK's command (after its options).
fn healthcheck_command() -> Vec<String> {
    let args = instruction("HEALTHCHECK");
    let (_, cmd) = args
        .split_once("CMD ")
        .expect("HEALTHCHECK [options] CMD [...]");
    exec_form(cmd.trim())
}

/// `ENV` of the final stage, as name/value pairs (the `NAME=value` form).
fn image_env() -> Vec<(String, String)> {
    final_stage()
        .into_iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("ENV NAME=value");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The value after `flag` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let i = argv
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {argv:?}"));
    &argv[i + 1]
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("not host:port: {addr}"))
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes manifests

fn manifest(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The hookgate container of a manifest's pod: the one that runs the image's own command.
struct Pod<'a> {
    docs: &'a [Value],
    deployment: &'a Value,
    container: &'a Value,
}

impl<'a> Pod<'a> {
    fn of(docs: &'a [Value]) -> Self {
        let (deployment, container) = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .find_map(|d| {
                d["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == "hookgate")
                    .map(|c| (d, c))
            })
            .expect("a Deployment with a `hookgate` container");
        Self {
            docs,
            deployment,
            container,
        }
    }

    fn pod_spec(&self) -> &'a Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    /// The container's environment as Kubernetes builds it: literal values (with `$(NAME)`
    /// references to earlier entries expanded) and Secret keys (the Secret's `stringData`).
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for entry in self.container["env"].as_sequence().unwrap() {
            let name = s(&entry["name"]).to_string();
            let value = if let Some(v) = entry["value"].as_str() {
                let mut v = v.to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            } else {
                let key_ref = &entry["valueFrom"]["secretKeyRef"];
                let secret = object(self.docs, "Secret", s(&key_ref["name"]));
                s(&secret["stringData"][s(&key_ref["key"])]).to_string()
            };
            env.push((name, value));
        }
        env
    }

    /// The volume mount at `path`, and the volume it mounts.
    fn mount(&self, path: &str) -> (&'a Value, &'a Value) {
        let mount = self.container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        (mount, self.volume(mount))
    }

    fn volume(&self, mount: &Value) -> &'a Value {
        self.pod_spec()["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume")
    }

    /// Where the file at `path` in the container comes from: the volume (the deepest mount
    /// that holds `path`), and the ConfigMap or Secret key behind it.
    fn file(&self, path: &str) -> File<'a> {
        let mount = self.container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|m| {
                let dir = s(&m["mountPath"]);
                path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
            })
            .max_by_key(|m| s(&m["mountPath"]).len())
            .unwrap_or_else(|| panic!("nothing mounted holds {path}"));
        let volume = self.volume(mount);
        let mount_path = s(&mount["mountPath"]);
        let rel = match mount.get("subPath") {
            Some(sub) => {
                assert_eq!(mount_path, path, "a subPath mount is one file");
                s(sub).to_string()
            }
            None => path[mount_path.len()..].trim_start_matches('/').to_string(),
        };
        // A volume's sources: itself (configMap, secret) or a projected volume's list.
        let sources: Vec<(&str, &Value)> = match volume.get("projected") {
            Some(p) => p["sources"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|src| {
                    ["configMap", "secret"]
                        .into_iter()
                        .filter_map(move |kind| src.get(kind).map(|v| (kind, v)))
                })
                .collect(),
            None => ["configMap", "secret"]
                .into_iter()
                .filter_map(|kind| volume.get(kind).map(|v| (kind, v)))
                .collect(),
        };
        for (kind, source) in sources {
            let name = source
                .get("name")
                .or_else(|| source.get("secretName"))
                .map(s)
                .expect("a source name");
            let key = match source.get("items").and_then(|i| i.as_sequence()) {
                Some(items) => items
                    .iter()
                    .find(|i| i["path"] == rel.as_str())
                    .map(|i| s(&i["key"]).to_string()),
                None => Some(rel.clone()),
            };
            if let Some(key) = key {
                return File {
                    kind,
                    name: name.to_string(),
                    key,
                    volume,
                    mount,
                };
            }
        }
        panic!("no source of {volume:?} provides {path}")
    }

    /// The hookgate config the pod mounts at `path`, from its ConfigMap.
    fn config_at(&self, path: &str) -> String {
        let file = self.file(path);
        assert_eq!(file.kind, "configMap", "{path}");
        let configmap = object(self.docs, "ConfigMap", &file.name);
        s(&configmap["data"][file.key.as_str()]).to_string()
    }

    fn container_port(&self, name: &str) -> u16 {
        let port = self.container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"));
        port["containerPort"].as_u64().unwrap() as u16
    }
}

/// A file in a container, as a volume provides it.
struct File<'a> {
    /// `configMap` or `secret`.
    kind: &'static str,
    name: String,
    key: String,
    volume: &'a Value,
    mount: &'a Value,
}

// ---------------------------------------------------------------------------------------------
// Making a config runnable on this machine

/// A config file, rewritten to run here, in a temporary directory.
struct Localized {
    path: PathBuf,
    listen: Option<u16>,
    admin: u16,
    _dir: tempfile::TempDir,
}

/// `config` with free loopback ports, `upstream` (or 127.0.0.1 in place of each non-IP upstream
/// host), and a self-signed pair in place of `listen_tls`'s files.
fn localize(config: &str, upstream: Option<&str>) -> Localized {
    let dir = tempfile::tempdir().unwrap();
    let mut value: Value = serde_yaml::from_str(config).unwrap();
    let map = value.as_mapping_mut().unwrap();
    let listen = free_port();
    let admin = free_port();
    map.insert("listen".into(), format!("127.0.0.1:{listen}").into());
    map.insert("admin_listen".into(), format!("127.0.0.1:{admin}").into());
    if let Some(tls) = map.get_mut("listen_tls").and_then(|v| v.as_mapping_mut()) {
        tls.insert("addr".into(), format!("127.0.0.1:{}", free_port()).into());
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        self_signed(&cert, &key);
        tls.insert("cert".into(), cert.to_str().unwrap().into());
        tls.insert("key".into(), key.to_str().unwrap().into());
    }
    for route in map
        .get_mut("routes")
        .and_then(|r| r.as_sequence_mut())
        .unwrap()
    {
        let url = s(&route["upstream"]).to_string();
        let local = match upstream {
            Some(u) => u.to_string(),
            None => {
                let (scheme, rest) = url.split_once("://").unwrap();
                let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap();
                if host.parse::<std::net::IpAddr>().is_ok() {
                    url.clone()
                } else {
                    format!("{scheme}://127.0.0.1:{port}")
                }
            }
        };
        route
            .as_mapping_mut()
            .unwrap()
            .insert("upstream".into(), local.into());
    }
    let path = dir.path().join("hookgate.yaml");
    std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
    Localized {
        path,
        listen: Some(listen),
        admin,
        _dir: dir,
    }
}

/// A self-signed certificate and key for 127.0.0.1, valid for a year (`hookgate check` warns
/// about one that expires within 30 days); openssl is part of Debian's base system.
fn self_signed(cert: &Path, key: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl (to make listen_tls's certificate)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `hookgate check` on `config` with exactly `env`.
fn check(config: &Path, env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config"])
        .arg(config)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn every_embedded_config_passes_hookgate_check_without_warnings() {
    for file in MANIFESTS {
        let docs = manifest(file);
        let pod = Pod::of(&docs);
        let config_path = flag_value(&image_command(), "--config").to_string();
        let config = pod.config_at(&config_path);
        let local = localize(&config, None);
        let env = pod.env();
        let out = check(&local.path, &env);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{file}: hookgate check failed:\n{stderr}\nconfig:\n{config}"
        );
        assert!(
            stderr.is_empty(),
            "{file}: hookgate check warned:\n{stderr}"
        );
        let routes: Value = serde_yaml::from_str(&config).unwrap();
        for route in routes["routes"].as_sequence().unwrap() {
            assert!(
                stdout.contains(&format!("route {}", s(&route["name"]))),
                "{file}: {stdout}"
            );
        }
        for (_, secret) in &env {
            assert!(
                !secret.starts_with("whsec_") || !stdout.contains(secret.as_str()),
                "{file}: check printed a secret"
            );
        }
    }
}

#[test]
fn ports_paths_and_user_agree_across_dockerfile_configs_and_manifests() {
    let command = image_command();
    let config_path = flag_value(&command, "--config");
    let exposed: Vec<u16> = instruction("EXPOSE")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    let health_admin = port_of(flag_value(&healthcheck_command(), "--admin"));
    let user: u64 = instruction("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, so runAsNonRoot can check it");
    assert_ne!(user, 0);

    for file in MANIFESTS {
        let docs = manifest(file);
        let pod = Pod::of(&docs);
        let config: Value = serde_yaml::from_str(&pod.config_at(config_path)).unwrap();
        let admin = port_of(s(&config["admin_listen"]));
        // The container runs the image's own command, which reads the mounted config.
        assert!(
            pod.container.get("command").is_none() && pod.container.get("args").is_none(),
            "{file}: the hookgate container must run the image's ENTRYPOINT and CMD"
        );
        assert_eq!(
            pod.container["securityContext"]["runAsUser"].as_u64(),
            Some(user),
            "{file}: runAsUser"
        );
        assert!(
            s(&config["admin_listen"]).starts_with("0.0.0.0:"),
            "{file}: probes and scrapes come from outside the pod"
        );
        // Admin port: config, HEALTHCHECK, EXPOSE, the container port, the probes, the scrape.
        assert_eq!(
            health_admin, admin,
            "{file}: HEALTHCHECK --admin vs admin_listen"
        );
        assert!(
            exposed.contains(&admin),
            "{file}: EXPOSE {exposed:?} lacks {admin}"
        );
        assert_eq!(pod.container_port("admin"), admin, "{file}: admin port");
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &pod.container[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{file}: {probe}");
            assert_eq!(s(&get["port"]), "admin", "{file}: {probe}");
        }
        let annotations = &pod.deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(s(&annotations["prometheus.io/scrape"]), "true", "{file}");
        assert_eq!(
            s(&annotations["prometheus.io/port"]),
            admin.to_string(),
            "{file}"
        );
        assert_eq!(s(&annotations["prometheus.io/path"]), "/metrics", "{file}");
        // The Service sends senders to the listener that faces them: TLS where there is one.
        let service = docs
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && d["spec"]["selector"] == pod.deployment["spec"]["selector"]["matchLabels"]
            })
            .expect("a Service selecting the hookgate pods");
        let target = s(&service["spec"]["ports"][0]["targetPort"]);
        let facing = match config.get("listen_tls") {
            Some(tls) => s(&tls["addr"]),
            None => s(&config["listen"]),
        };
        assert!(facing.starts_with("0.0.0.0:"), "{file}: {facing}");
        assert_eq!(
            pod.container_port(target),
            port_of(facing),
            "{file}: Service"
        );
        assert!(exposed.contains(&port_of(facing)), "{file}: EXPOSE");
        // listen_tls's files come from the TLS Secret, readable by the container's user.
        if let Some(tls) = config.get("listen_tls") {
            for (field, secret_key) in [("cert", "tls.crt"), ("key", "tls.key")] {
                let path = s(&tls[field]);
                let source = pod.file(path);
                assert_eq!(
                    (source.kind, source.key.as_str()),
                    ("secret", secret_key),
                    "{file}: listen_tls.{field} {path}"
                );
                let spec = source
                    .volume
                    .get("projected")
                    .unwrap_or(&source.volume["secret"]);
                let mode = spec["defaultMode"].as_u64().unwrap_or(0o644);
                let group = pod.container["securityContext"]["runAsGroup"].as_u64();
                let fs_group = pod.pod_spec()["securityContext"]["fsGroup"].as_u64();
                assert!(
                    mode & 0o004 != 0
                        || (mode & 0o040 != 0 && fs_group.is_some() && fs_group == group),
                    "{file}: {path} (mode {mode:o}) is not readable by the container's user"
                );
            }
        }
        // Config updates reach the container only through a directory mount, not a subPath.
        let config_file = pod.file(config_path);
        assert!(
            config_file.mount.get("subPath").is_none(),
            "{file}: a subPath mount never sees ConfigMap updates, so reloads would not happen"
        );
        // A snapshot_path is on a writable volume.
        if let Some(snapshot) = config["state"].get("snapshot_path") {
            let dir = Path::new(s(snapshot)).parent().unwrap().to_str().unwrap();
            let (mount, volume) = pod.mount(dir);
            assert!(
                volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some(),
                "{file}: {dir}"
            );
            assert_ne!(mount["readOnly"].as_bool(), Some(true), "{file}: {dir}");
        }
        // Every `${NAME}` without a fallback is in the container's environment.
        let text = pod.config_at(config_path);
        let env: BTreeMap<String, String> = pod.env().into_iter().collect();
        for reference in text.split("${").skip(1) {
            let name = reference.split('}').next().unwrap();
            if !name.contains(":-") {
                assert!(env.contains_key(name), "{file}: ${{{name}}} is not set");
            }
        }
        // Pingora's pid file and upgrade socket need a writable /tmp on a read-only root.
        assert_eq!(
            pod.container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        assert!(
            pod.mount("/tmp").1.get("emptyDir").is_some(),
            "{file}: /tmp"
        );
    }
}

#[tokio::test]
async fn the_image_command_runs_the_sidecar_config_like_a_container() {
    let docs = manifest("deploy/kubernetes/sidecar.yaml");
    let pod = Pod::of(&docs);
    let command = image_command();
    let config_path = flag_value(&command, "--config").to_string();
    let upstream = Upstream::start().await;
    let local = localize(&pod.config_at(&config_path), Some(&upstream.url()));

    // The in-image paths become this machine's; everything else is the image's argv.
    let substitute = |arg: &String| -> String {
        if arg == &command[0] {
            env!("CARGO_BIN_EXE_hookgate").to_string()
        } else if arg == &config_path {
            local.path.to_str().unwrap().to_string()
        } else {
            arg.clone()
        }
    };
    let argv: Vec<String> = command.iter().map(substitute).collect();
    assert!(
        argv[0].ends_with("hookgate") && argv[1] == "run",
        "{command:?}"
    );
    // The container's environment: the image's ENV, then the pod's (Kubernetes order).
    let env: Vec<(String, String)> = image_env().into_iter().chain(pod.env()).collect();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let logged =
        |logs: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();

    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", local.admin).parse().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hookgate exited at start ({status}):\n{}", logged(&logs));
        }
        if matches!(get(admin, "/readyz").await, Ok(r) if r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < end,
            "not ready in time:\n{}",
            logged(&logs)
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    }

    // The image's HEALTHCHECK command, pointed at this run's admin port.
    let health: Vec<String> = healthcheck_command()
        .iter()
        .map(|a| {
            if a == &command[0] {
                env!("CARGO_BIN_EXE_hookgate").to_string()
            } else if a.starts_with("127.0.0.1:") {
                admin.to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = Command::new(&health[0])
        .args(&health[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "HEALTHCHECK {health:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Verified with the Secret's value, forwarded; a wrong signature never reaches the app.
    let secret = pod
        .env()
        .into_iter()
        .find(|(k, _)| k == "DOSSIER_SECRET")
        .unwrap()
        .1;
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{}", local.listen.unwrap())
        .parse()
        .unwrap();
    let body = br#"{"event":"dossier.created","data":{"id":1}}"#;
    let good = post(
        proxy,
        "/webhooks/dossiers",
        &[
            ("X-Webhook-Signature", &sign(&secret, body)),
            ("X-Webhook-Delivery-Id", "deploy-1"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(
        good.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&good.body)
    );
    let bad = post(
        proxy,
        "/webhooks/dossiers",
        &[
            ("X-Webhook-Signature", &sign("whsec_wrong", body)),
            ("X-Webhook-Delivery-Id", "deploy-2"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 401);
    assert_eq!(upstream.requests().len(), 1);

    // The image's STOPSIGNAL ends it gracefully.
    let signal = instruction("STOPSIGNAL");
    let killed = Command::new("kill")
        .arg(format!("-{}", signal.trim_start_matches("SIG")))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "did not stop on {signal}");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    };
    reader.join().unwrap();
    let text = logged(&logs);
    assert!(status.success(), "exit {status} after {signal}:\n{text}");

    // CMD asks for JSON logs: every line is a JSON object, and none holds the secret.
    assert!(!text.trim().is_empty(), "no logs");
    for line in text.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
    assert!(!text.contains(&secret), "a secret in the logs");
}
