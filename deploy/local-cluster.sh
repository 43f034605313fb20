#!/usr/bin/env bash
# A local Keel cluster on loopback, from a release build.
#
#   deploy/local-cluster.sh up [-n 3|5]   # build, generate a root key and configs, start the nodes
#   deploy/local-cluster.sh status        # every member's view (keelctl cluster status)
#   deploy/local-cluster.sh down          # stop the nodes (data is kept; `down --purge` removes it)
#
# Node i (1-based) listens on 127.0.0.1:74i0 (gRPC), 74i1 (peer), 74i2 (ops);
# odd nodes are in region eu-west, even nodes in us-east. Everything lives under
# ./keel-cluster (override with KEEL_CLUSTER_DIR).
#
# The client and peer ports use TLS: `up` makes a cluster CA (tls/), a
# certificate per node (SAN 127.0.0.1) and a client certificate for keelctl
# (tls/admin.*); peers authenticate each other with mTLS and the client port
# requires a client certificate. The ops port is plaintext HTTP on loopback.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../.ci/env.sh"
dir="${KEEL_CLUSTER_DIR:-$PWD/keel-cluster}"
bin="$CARGO_TARGET_DIR/release"

port() { echo $((7400 + 10 * $1 + $2)); }
region() { if (( $1 % 2 )); then echo eu-west; else echo us-east; fi; }

up() {
  local n=3
  while getopts "n:" opt; do case "$opt" in n) n="$OPTARG" ;; *) exit 2 ;; esac; done
  case "$n" in 3|5) ;; *) echo "local-cluster: -n must be 3 or 5" >&2; exit 2 ;; esac
  keel_build_deps
  (cd "$keel_root" && cargo build --release --locked -p keel-node -p keelctl)
  mkdir -p "$dir"
  [ -f "$dir/root.key" ] || "$bin/keelctl" keys generate --out "$dir/root" >/dev/null
  [ -f "$dir/tls/ca.crt" ] || "$bin/keelctl" certs init --dir "$dir/tls" --common-name "keel local-cluster CA" >/dev/null
  [ -f "$dir/tls/admin.crt" ] \
    || "$bin/keelctl" certs issue --ca "$dir/tls" admin --usage client --san admin --out "$dir/tls" >/dev/null
  # The API-token key every member installs at bootstrap, and an admin token
  # (sub "admin": client certificates are required, so it must be admin.crt's
  # identity), re-issued on every `up` (a token lives at most 24 h).
  [ -f "$dir/api.key" ] || "$bin/keelctl" keys generate --out "$dir/api" >/dev/null
  "$bin/keelctl" token issue --key "$dir/api.key" --sub admin --permission '*' --ttl 24h --out "$dir/admin.token" >/dev/null
  local members=""
  for i in $(seq 1 "$n"); do
    members+="
[[cluster.initial_members]]
id = $i
client_addr = \"127.0.0.1:$(port "$i" 0)\"
peer_addr = \"127.0.0.1:$(port "$i" 1)\"
region = \"$(region "$i")\"
zone = \"$(region "$i")-$i\"
"
  done
  for i in $(seq 1 "$n"); do
    mkdir -p "$dir/node-$i"
    [ -f "$dir/node-$i/node-$i.crt" ] \
      || "$bin/keelctl" certs issue --ca "$dir/tls" "node-$i" --san 127.0.0.1 --out "$dir/node-$i" >/dev/null
    cat > "$dir/node-$i/keel.toml" <<TOML
data_dir = "$dir/node-$i/data"
[node]
id = $i
region = "$(region "$i")"
zone = "$(region "$i")-$i"
[listen]
client = "127.0.0.1:$(port "$i" 0)"
peer = "127.0.0.1:$(port "$i" 1)"
ops = "127.0.0.1:$(port "$i" 2)"
[tls]
ca_file = "$dir/tls/ca.crt"
cert_file = "$dir/node-$i/node-$i.crt"
key_file = "$dir/node-$i/node-$i.key"
require_client_certs = true
[trust]
root_public_keys = ["$dir/root.pub"]
api_token_public_keys = ["$dir/api.pub"]
$members
TOML
    if [ -f "$dir/node-$i/pid" ] && kill -0 "$(cat "$dir/node-$i/pid")" 2>/dev/null; then
      echo "node $i already running (pid $(cat "$dir/node-$i/pid"))"
      continue
    fi
    # keeld reads KEEL_* variables as configuration: drop keelctl's.
    nohup env -u KEEL_ENDPOINTS -u KEEL_CA_FILE -u KEEL_CERT_FILE -u KEEL_KEY_FILE -u KEEL_REGION -u KEEL_TOKEN \
      "$bin/keeld" --config "$dir/node-$i/keel.toml" >"$dir/node-$i/stdout.log" 2>"$dir/node-$i/keeld.log" &
    echo $! >"$dir/node-$i/pid"
    echo "node $i started (pid $!, gRPC 127.0.0.1:$(port "$i" 0), ops http://127.0.0.1:$(port "$i" 2))"
  done
  echo "$n" >"$dir/size"
  # Wait (bounded) until every node is ready.
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 300); do
      curl -fsS "http://127.0.0.1:$(port "$i" 2)/readyz" >/dev/null 2>&1 && break
      sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$(port "$i" 2)/readyz" >/dev/null 2>&1 \
      || { echo "node $i is not ready; see $dir/node-$i/keeld.log" >&2; exit 1; }
  done
  echo "cluster ready. Try:"
  echo "  export KEEL_ENDPOINTS=$(endpoints "$n")"
  echo "  export KEEL_CA_FILE=$dir/tls/ca.crt KEEL_CERT_FILE=$dir/tls/admin.crt KEEL_KEY_FILE=$dir/tls/admin.key"
  echo "  export KEEL_TOKEN=\$(cat $dir/admin.token)"
  echo "  $bin/keelctl cluster status"
  echo "  root key for signing: $dir/root.key; API-token key for more tokens: $dir/api.key"
}

endpoints() {
  local list=""
  for i in $(seq 1 "$1"); do list+="${list:+,}https://127.0.0.1:$(port "$i" 0)"; done
  echo "$list"
}

status() {
  local n
  n="$(cat "$dir/size" 2>/dev/null || echo 3)"
  for i in $(seq 1 "$n"); do
    echo "== node $i"
    "$bin/keelctl" --endpoints "https://127.0.0.1:$(port "$i" 0)" --ca-file "$dir/tls/ca.crt" \
      --cert-file "$dir/tls/admin.crt" --key-file "$dir/tls/admin.key" --token "$dir/admin.token" \
      --timeout-ms 2000 cluster status 2>&1 | head -n 12 || true
  done
}

down() {
  local purge="${1:-}"
  for pidfile in "$dir"/node-*/pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "stopped"
  if [ "$purge" = "--purge" ]; then rm -rf "$dir"; echo "removed $dir"; fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up) up "$@" ;;
  status) status ;;
  down) down "$@" ;;
  *) echo "usage: $0 up [-n 3|5] | status | down [--purge]" >&2; exit 2 ;;
esac
