#!/usr/bin/env bash
# Bounded soak: a release gateway under a steady mix of valid, forged, duplicate and oversized
# webhooks for a fixed time, with its open file descriptors and resident memory sampled at the
# start, every SAMPLE seconds and at the end. Fails when either grew beyond its bound.
#
#   benches/soak.sh                                  # 60 s at 300 requests/s
#   DURATION=600 RATE=500 benches/soak.sh
#   PROFILE=debug DURATION=10 benches/soak.sh          # try the script on a debug build
#
# The mix (MIX, weights valid,forged,duplicate,oversized; default 70,10,10,10) comes from
# hookgate-load --mix. The upstream is `hookgate receiver`. The start sample is taken after a
# WARMUP-second run of the same load, so the gateway's threads, buffers and upstream pool have
# reached their working size; growth after that is what a leak would show.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60}
RATE=${RATE:-300}
CONNECTIONS=${CONNECTIONS:-8}
MIX=${MIX:-70,10,10,10}
WARMUP=${WARMUP:-5}
SAMPLE=${SAMPLE:-10}
# Bounds on growth from the start sample to the end sample.
FD_BOUND=${FD_BOUND:-16}           # descriptors: a leak of one per failed request is thousands
RSS_BOUND_KIB=${RSS_BOUND_KIB:-8192} # 8 MiB: a leak of 1 KiB per request would be ~18 MiB

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PROFILE=${PROFILE:-release} # `PROFILE=debug` to try the script itself quickly
if [ "$PROFILE" = release ]; then
  cargo build --release --bin hookgate --bin hookgate-load >&2
  HG=target/release/hookgate; LOAD=target/release/hookgate-load
else
  cargo build --bin hookgate --bin hookgate-load >&2
  HG=target/debug/hookgate; LOAD=target/debug/hookgate-load
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); ADMIN=$(port)

"$HG" receiver --listen "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/soak.yaml" <<EOF
listen: 127.0.0.1:$GW
admin_listen: 127.0.0.1:$ADMIN
threads: 2
routes:
  - name: soak
    path: /webhooks/soak
    upstream: http://127.0.0.1:$UP
    max_body_bytes: 4096
    verify:
      secrets: [whsec_soak]
    dedup: {}
EOF
RUST_LOG=warn "$HG" run --config "$WORK/soak.yaml" 2>"$WORK/gateway.log" &
GATEWAY=$!
PIDS+=("$GATEWAY")

# Ready when /readyz answers 200 (polled, with a deadline).
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$GATEWAY" 2>/dev/null || { cat "$WORK/gateway.log"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null

fds() { ls "/proc/$GATEWAY/fd" | wc -l; }
# The gateway's pooled connections to the upstream (part of the descriptors above).
pooled() { ss -tnpH state established "( dport = :$UP )" 2>/dev/null | grep -c "pid=$GATEWAY," || true; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$GATEWAY/status"; }
load() { # seconds
  "$LOAD" --addr "127.0.0.1:$GW" --path /webhooks/soak --secret whsec_soak --rate "$RATE" \
    --connections "$CONNECTIONS" --duration "$1" --body-size 1024 --oversized-size 8192 \
    --mix "$MIX"
}

echo "warm-up: ${WARMUP}s at $RATE/s" >&2
load "$WARMUP" >/dev/null

printf '%8s %6s %8s %10s\n' "t (s)" "fds" "pooled" "RSS (KiB)"
FD0=$(fds); RSS0=$(rss)
printf '%8s %6s %8s %10s\n' 0 "$FD0" "$(pooled)" "$RSS0"
load "$DURATION" >"$WORK/load.json" &
LOADER=$!
PIDS+=("$LOADER")
START=$(date +%s)
while kill -0 "$LOADER" 2>/dev/null; do
  sleep "$SAMPLE" & wait $! # sampling interval
  kill -0 "$LOADER" 2>/dev/null || break
  printf '%8s %6s %8s %10s\n' "$(( $(date +%s) - START ))" "$(fds)" "$(pooled)" "$(rss)"
done
wait "$LOADER"
# The load generator's connections close a moment after its last answer: give the gateway up
# to 10 s to get back to its starting count (a leak never does; the bound then decides).
for _ in $(seq 1 100); do
  [ "$(fds)" -le "$FD0" ] && break
  sleep 0.1
done
FD1=$(fds); RSS1=$(rss)
printf '%8s %6s %8s %10s\n' end "$FD1" "$(pooled)" "$RSS1"
echo "load: $(cat "$WORK/load.json")"
echo "gateway metrics:"
curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep '^hookgate_requests_total' | grep -v ' 0$'

status=0
if [ "$FD1" -gt $(( FD0 + FD_BOUND )) ]; then
  echo "FAIL: open descriptors grew from $FD0 to $FD1 (bound +$FD_BOUND)"; status=1
fi
if [ "$RSS1" -gt $(( RSS0 + RSS_BOUND_KIB )) ]; then
  echo "FAIL: RSS grew from $RSS0 KiB to $RSS1 KiB (bound +$RSS_BOUND_KIB KiB)"; status=1
fi
[ "$status" -eq 0 ] && echo "OK: fds $FD0 -> $FD1 (bound +$FD_BOUND), RSS $RSS0 -> $RSS1 KiB (bound +$RSS_BOUND_KIB KiB)"
exit "$status"
