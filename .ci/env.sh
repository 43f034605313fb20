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

# Use the cached librocksdb.a when there is one.
keel_use_rocksdb_cache() {
  local dir
  dir="$(keel_rocksdb_cache_dir)"
  if [ -f "$dir/librocksdb.a" ]; then
    export ROCKSDB_LIB_DIR="$dir" ROCKSDB_STATIC=1
    echo "==> linking cached RocksDB from $dir"
  else
    echo "==> no cached RocksDB yet: building it from source once (~25 min on 2 cores)"
  fi
}

# After a source build, keep librocksdb.a for the next build.
keel_save_rocksdb_cache() {
  local dir built
  dir="$(keel_rocksdb_cache_dir)"
  [ -f "$dir/librocksdb.a" ] && return 0
  built="$(ls -t "$CARGO_TARGET_DIR"/*/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)"
  if [ -n "$built" ]; then
    mkdir -p "$dir"
    cp "$built" "$dir/librocksdb.a.tmp" && mv "$dir/librocksdb.a.tmp" "$dir/librocksdb.a"
    echo "==> cached $built in $dir"
  fi
}

keel_build_deps() {
  keel_apt_install clang libclang-dev
  keel_use_rocksdb_cache
}
