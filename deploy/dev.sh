#!/usr/bin/env bash
# Runs Keel's embedded default: one node, data in ./keel-data, plaintext on
# loopback (gRPC 7400, peer 7401, ops HTTP 7402), no Redis. Installs the build
# prerequisites first (apt: clang, libclang-dev). Extra args go to keeld.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/env.sh"
keel_build_deps
cd "$keel_root"
cargo build --locked -p keel-node -p keelctl
echo "==> keelctl is at $CARGO_TARGET_DIR/debug/keelctl"
exec "$CARGO_TARGET_DIR/debug/keeld" --dev "$@"
