#!/usr/bin/env bash
# hookgate's one entry point for a fresh machine (Debian with the Rust toolchain):
#   scripts/dev.sh run    install build prerequisites, build, run the gateway on config/hookgate.yaml
#   scripts/dev.sh test   install build prerequisites, run the whole test suite
#   scripts/dev.sh build  install build prerequisites (not redis-server), build the release binary
#   scripts/dev.sh deps   install the build prerequisites only (not redis-server)
#                         (deploy/Dockerfile's build stage runs `deps`, then `build`)
# Extra arguments after `run` go to `hookgate run` (e.g. --config other.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

# Prerequisites cargo cannot fetch: cmake (pingora's zlib-ng build script); perl with its core
# modules and make (pingora-openssl builds OpenSSL from source, through openssl-src); and
# redis-server, which the tests start on free ports of their own (tests/common/redis.rs) to
# check the Redis state backend; the gateway itself needs no local Redis. With
# OPENSSL_NO_VENDOR=1 the build links the system's OpenSSL instead (e.g. a FIPS-validated one;
# README, "TLS"), which needs its headers and pkg-config.
# `--no-redis`: only what the build needs (the tests' redis-server and openssl left out).
install_prerequisites() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  command -v make >/dev/null 2>&1 || missing+=(make)
  perl -MFindBin -MIPC::Cmd -e 1 >/dev/null 2>&1 || missing+=(perl)
  if [ "${1:-}" != --no-redis ]; then
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    # tests/deploy.rs makes a self-signed certificate for the edge manifest's listen_tls.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  fi
  if [ -n "${OPENSSL_NO_VENDOR:-}" ] && [ "${OPENSSL_NO_VENDOR}" != 0 ]; then
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]} (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    install_prerequisites
    cargo build --release --bin hookgate
    exec ./target/release/hookgate run --config config/hookgate.yaml "$@"
    ;;
  test)
    install_prerequisites
    cargo test "$@"
    ;;
  deps)
    install_prerequisites --no-redis
    ;;
  build)
    install_prerequisites --no-redis
    cargo build --release --locked --bin hookgate "$@"
    ;;
  *)
    echo "usage: scripts/dev.sh run|test|build|deps" >&2
    exit 2
    ;;
esac
