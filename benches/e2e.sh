#!/usr/bin/env bash
# End-to-end benchmark: hookgate against nginx and against itself, as ratios measured in one
# run, on loopback only. Usage:
#   benches/e2e.sh                 # 3 alternating rounds, 3 phases of 8 s per case
#   ROUNDS=5 DURATION=10 RATE=3000 CPU_RATE=20000 benches/e2e.sh
# Writes benches/results/<timestamp>/{results.jsonl,summary.md,latency.png}.
#
# Cases (every request of 4 and 5 has a unique delivery ID and a valid signature over a 1 KiB
# body, prepared before the timed part):
#   1 direct     load generator -> upstream (nginx answering 204)
#   2 nginx      nginx proxy_pass with upstream keepalive -> upstream
#   P pingora    reference: Pingora's stock proxy, nothing of hookgate (benches/pingora_proxy)
#   3 plain      hookgate, verification only (hookgate has no unverified forwarding path)
#   4 full       hookgate: verification, dedup, a tier too high to trigger, metrics
#   5 redis      case 4 with the Redis state backend (skipped if this build has none)
#   6 forged     case 4's gateway flooded with invalid signatures
# Per case and round: a closed-loop phase (req/s, and CPU per request: the server process's
# user+system time from /proc over the requests it served), an open-loop phase at RATE
# (latency percentiles), and an open-loop phase at CPU_RATE (user and system CPU per request
# under the same offered load for every case). The load generator shares the two cores, so
# CPU per request is the fair comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
RATE=${RATE:-2000}
CPU_RATE=${CPU_RATE:-20000}
CONNECTIONS=${CONNECTIONS:-32}
BODY=${BODY:-1024}
OUT=benches/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  # Gateways are started in command substitutions, so they are not this shell's jobs.
  kill "${PIDS[@]}" $(jobs -p) 2>/dev/null || true
  for f in "$WORK/up.pid" "$WORK/px.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need gnuplot || ! need redis-server; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx-light gnuplot-nox redis-server >/dev/null
fi
cargo build --release --bin hookgate --bin hookgate-load --example pingora-proxy >&2
HG=target/release/hookgate
LOAD=target/release/hookgate-load
PINGORA=target/release/examples/pingora-proxy

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); PX=$(port); PP=$(port); G3=$(port); A3=$(port); G4=$(port); A4=$(port); G5=$(port); A5=$(port); RP=$(port)

nginx_conf() { # name, body
  cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1-body;
  proxy_temp_path $WORK/$1-proxy;
  $2
}
CONF
  nginx -c "$WORK/$1.conf"
}
nginx_conf up "server { listen 127.0.0.1:$UP; keepalive_requests 100000; location / { return 204; } }"
nginx_conf px "upstream u { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$PX; keepalive_requests 100000; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

gateway_conf() { # file, port, admin, extra route keys, extra top-level keys
  cat > "$WORK/$1" <<CONF
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
threads: 1
tiers:
  bench: 100000000
$5
routes:
  - name: bench
    path: /webhooks/*
    upstream: http://127.0.0.1:$UP
    verify:
      secrets: [whsec_bench]
$4
CONF
}
gateway_conf plain.yaml "$G3" "$A3" "" ""
gateway_conf full.yaml "$G4" "$A4" "    tier: bench
    dedup: {}" ""
gateway_conf redis.yaml "$G5" "$A5" "    tier: bench
    dedup: {}" "state:
  backend: redis
  redis_url: redis://127.0.0.1:$RP/0
  key_secret: bench-shared-key-bench-shared-key"

start_gateway() { # config file -> pid
  RUST_LOG=warn "$HG" run --config "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  echo $!
}
wait_ready() { # admin port
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05 # poll interval while the gateway starts
  done
  echo "gateway on admin port $1 never became ready" >&2; return 1
}
P3=$(start_gateway plain.yaml); P4=$(start_gateway full.yaml); PIDS+=("$P3" "$P4")
wait_ready "$A3"; wait_ready "$A4"
RUST_LOG=warn "$PINGORA" "127.0.0.1:$PP" "127.0.0.1:$UP" >"$WORK/pingora.log" 2>&1 &
PPW=$!; PIDS+=("$PPW")
wait_answering() { # port: any HTTP answer (the reference proxy has no readiness endpoint)
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.05 # poll interval while the proxy starts
  done
  echo "the reference proxy on port $1 never answered" >&2; return 1
}
wait_answering "$PP"
P5=""
if "$HG" check --config "$WORK/redis.yaml" >/dev/null 2>&1; then
  redis-server --port "$RP" --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
  for _ in $(seq 1 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.05; done
  P5=$(start_gateway redis.yaml); PIDS+=("$P5"); wait_ready "$A5"
else
  echo "case 5 skipped: this build has no Redis state backend" >&2
fi
UPW=$(pgrep -P "$(cat "$WORK/up.pid")" | head -1)
PXW=$(pgrep -P "$(cat "$WORK/px.pid")" | head -1)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
user_sys() { awk '{print $14, $15}' "/proc/$1/stat"; }
run_case() { # round, case, addr, server pid, extra loadgen args...
  local round=$1 name=$2 addr=$3 pid=$4; shift 4
  local t0 t1 thr lat fixed u0 s0 u1 s1
  t0=$(cpu_ticks "$pid")
  thr=$("$LOAD" --addr "$addr" --connections "$CONNECTIONS" --duration "$DURATION" --rate 0 --body-size "$BODY" "$@")
  t1=$(cpu_ticks "$pid")
  lat=$("$LOAD" --addr "$addr" --connections "$CONNECTIONS" --duration "$DURATION" --rate "$RATE" --body-size "$BODY" "$@")
  # The same offered load for every case, high enough for the clock ticks of /proc to resolve:
  # its CPU, split into user and system time, compares the servers without the closed loop's
  # feedback (a faster server leaves the load generator more CPU, and so gets more requests).
  read -r u0 s0 < <(user_sys "$pid")
  fixed=$("$LOAD" --addr "$addr" --connections "$CONNECTIONS" --duration "$DURATION" --rate "$CPU_RATE" --body-size "$BODY" "$@")
  read -r u1 s1 < <(user_sys "$pid")
  echo "{\"round\":$round,\"case\":\"$name\",\"cpu_ticks\":$((t1 - t0)),\"fixed_user_ticks\":$((u1 - u0)),\"fixed_sys_ticks\":$((s1 - s0)),\"clk_tck\":$(getconf CLK_TCK),\"throughput\":$thr,\"latency\":$lat,\"fixed\":$fixed}" >>"$OUT/results.jsonl"
  echo "round $round $name: $(echo "$thr" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["rps"], "req/s")')" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  run_case "$round" direct "127.0.0.1:$UP" "$UPW"
  run_case "$round" nginx "127.0.0.1:$PX" "$PXW"
  run_case "$round" pingora "127.0.0.1:$PP" "$PPW"
  run_case "$round" plain "127.0.0.1:$G3" "$P3"
  run_case "$round" full "127.0.0.1:$G4" "$P4"
  [ -n "$P5" ] && run_case "$round" redis "127.0.0.1:$G5" "$P5"
  run_case "$round" forged "127.0.0.1:$G4" "$P4" --invalid
done

python3 - "$OUT" "$RATE" "$DURATION" "$ROUNDS" "$CPU_RATE" <<'PY'
import json, sys, statistics, platform, os, datetime
out, rate, duration, rounds, cpu_rate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
cases = [c for c in ["direct", "nginx", "pingora", "plain", "full", "redis", "forged"] if any(r["case"] == c for r in rows)]
agg = {}
for c in cases:
    rs = [r for r in rows if r["case"] == c]
    rps = [r["throughput"]["rps"] for r in rs]
    cpu = [r["cpu_ticks"] / r["clk_tck"] * 1e6 / max(r["throughput"]["requests"], 1) for r in rs]
    agg[c] = dict(rps=statistics.median(rps), rps_min=min(rps), rps_max=max(rps), cpu=statistics.median(cpu),
                  p50=statistics.median(r["latency"]["p50_us"] for r in rs),
                  p99=statistics.median(r["latency"]["p99_us"] for r in rs),
                  p999=statistics.median(r["latency"]["p999_us"] for r in rs),
                  fixed_user=statistics.median(r["fixed_user_ticks"] / r["clk_tck"] * 1e6 / max(r["fixed"]["requests"], 1) for r in rs),
                  fixed_sys=statistics.median(r["fixed_sys_ticks"] / r["clk_tck"] * 1e6 / max(r["fixed"]["requests"], 1) for r in rs),
                  statuses=rs[-1]["throughput"]["statuses"])
def ratio(a, b, key):
    return agg[a][key] / agg[b][key] if a in agg and b in agg and agg[b][key] else float("nan")
lines = []
lines.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, {platform.platform()}); "
             f"{rounds} alternating rounds of {duration} s per case; open-loop latency at {rate} req/s.\n")
def table(header, rows):
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    lines.append("")
table(["case", "req/s (median, min–max)", "CPU µs/request", "p50 µs", "p99 µs", "p99.9 µs", "statuses (last round)"],
      [[c, f"{a['rps']:.0f} ({a['rps_min']:.0f}–{a['rps_max']:.0f})", f"{a['cpu']:.1f}", f"{a['p50']:.0f}",
        f"{a['p99']:.0f}", f"{a['p999']:.0f}", str(a['statuses'])] for c, a in ((c, agg[c]) for c in cases)])
lines.append(f"CPU per request at a fixed {cpu_rate} req/s, open loop (the same offered load for every case):\n")
total = lambda c: agg[c]["fixed_user"] + agg[c]["fixed_sys"]
table(["case", "user µs/request", "system µs/request", "total"],
      [[c, f"{agg[c]['fixed_user']:.1f}", f"{agg[c]['fixed_sys']:.1f}", f"{total(c):.1f}"] for c in cases])
rows = []
for name, a, b, target in [("(4)/(2) full vs nginx", "full", "nginx", "≥ 1.10"),
                           ("(4)/(3) full vs plain", "full", "plain", "≥ 0.95"),
                           ("reference: stock Pingora proxy vs nginx", "pingora", "nginx", ""),
                           ("reference: full vs stock Pingora proxy", "full", "pingora", ""),
                           ("(5)/(4) redis vs memory", "redis", "full", "≥ 0.70"),
                           ("(6)/(4) forged vs full", "forged", "full", "≥ 2.0")]:
    both = a in agg and b in agg
    inv = agg[b]["cpu"] / agg[a]["cpu"] if both else float("nan")
    fixed_inv = total(b) / total(a) if both and total(a) else float("nan")
    rows.append([name, f"{ratio(a, b, 'rps'):.2f}", f"{inv:.2f}", f"{fixed_inv:.2f}", target])
table(["ratio", "by req/s", "by CPU per request (inverse)", f"by CPU at {cpu_rate} req/s (inverse)", "target"], rows)
if "direct" in agg and "full" in agg:
    lines.append(f"p99 added over direct at {rate} req/s: {agg['full']['p99'] - agg['direct']['p99']:.0f} µs (target ≤ 100 µs)")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
with open(f"{out}/latency.dat", "w") as f:
    for i, c in enumerate(cases):
        a = agg[c]
        f.write(f"{i} {c} {a['p50']} {a['p99']} {a['p999']}\n")
print("\n".join(lines))
PY
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$OUT/latency.png"
set title "Latency at $RATE req/s (open loop), median of $ROUNDS rounds"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "microseconds"
set logscale y
set key top left
plot "$OUT/latency.dat" using 3:xtic(2) title "p50", "" using 4 title "p99", "" using 5 title "p99.9"
GP
echo "results in $OUT" >&2
