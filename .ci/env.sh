# Sourced by .ci/test and deploy/dev.sh: installs what the build needs and
# points cargo at the shared build caches.
#
# RocksDB's bundled C++ build takes ~25 minutes on a 2-core machine. The first
# build's librocksdb.a is kept in a cache folder outside the clone, keyed by the
# librocksdb-sys version, and later builds link it (ROCKSDB_LIB_DIR) instead of
# compiling it again. The Cargo target directory is shared under /var/tmp too.

keel_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keel-target}"
KEEL_CACHE_DIR="${KEEL_CACHE_DIR:-/var/tmp/keel-cache}"
# A shell variable only: keeld reads every exported KEEL_* variable as
# configuration (KEEL_CACHE_DIR would be an unknown key to the tests' nodes).
export -n KEEL_CACHE_DIR

keel_apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing apt packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The librocksdb-sys version in Cargo.lock names the cache entry.
keel_rocksdb_version() {
  awk '/^name = "librocksdb-sys"/ { getline; gsub(/[" ]/, "", $0); sub(/version=/, "", $0); print; exit }' \
    "$keel_root/Cargo.lock"
}

keel_rocksdb_cache_dir() {
  echo "$KEEL_CACHE_DIR/librocksdb-sys-$(keel_rocksdb_version)"
}

# Builds RocksDB's C++ once, with keel-node's features (the only crate that
# uses it), and keeps librocksdb.a in the cache folder.
keel_build_rocksdb_cache() {
  local dir built
  dir="$(keel_rocksdb_cache_dir)"
  echo "==> no cached RocksDB yet: building it from source once (~20 min on 2 cores)"
  (cd "$keel_root" && cargo build --locked -p keel-node --lib)
  built="$(ls -t "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)"
  [ -n "$built" ] || { echo "env.sh: the RocksDB build left no librocksdb.a" >&2; return 1; }
  mkdir -p "$dir"
  cp "$built" "$dir/librocksdb.a.tmp" && mv "$dir/librocksdb.a.tmp" "$dir/librocksdb.a"
  echo "==> cached $built in $dir"
}

# Every cargo command links the cached librocksdb.a (ROCKSDB_LIB_DIR), built
# first if missing. The variable is set before any other build: `cargo build`
# and `cargo clippy` do not share librocksdb-sys's build-script run, so
# without it each would compile the C++ again (~20 min each on 2 cores).
keel_build_deps() {
  keel_apt_install clang libclang-dev
  local dir
  dir="$(keel_rocksdb_cache_dir)"
  [ -f "$dir/librocksdb.a" ] || keel_build_rocksdb_cache
  export ROCKSDB_LIB_DIR="$dir" ROCKSDB_STATIC=1
  echo "==> linking cached RocksDB from $dir"
}
