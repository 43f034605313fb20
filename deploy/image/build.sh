#!/usr/bin/env bash
# Builds the container image keel:local from binaries built on this machine —
# no base image, no registry, no pulls.
#
#   deploy/image/build.sh                       # release build of keeld + keelctl, then the image
#   KEELD_BIN=... KEELCTL_BIN=... deploy/image/build.sh   # use these binaries instead of building
#   KEEL_IMAGE=keel:test deploy/image/build.sh  # another tag (default keel:local)
#
# The image is `FROM scratch` plus a rootfs assembled here: the two binaries,
# exactly the shared libraries `ldd` lists for them (and the dynamic loader),
# a minimal /etc (passwd/group with the unprivileged user `keel`, uid 10001,
# nsswitch.conf so name lookups go to files then DNS) and /var/lib/keel owned
# by that user. Running it again with the same binaries gives the same image
# (docker's build cache). The last line printed is the image id.
# Kubernetes nodes without a registry: load it with `kind load docker-image`,
# `minikube image load` or `docker save | ctr -n k8s.io images import -` and
# run it with imagePullPolicy Never (deploy/README.md, helm/keel/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${KEEL_IMAGE:-keel:local}"
keel_uid=10001

if [ -z "${KEELD_BIN:-}" ] || [ -z "${KEELCTL_BIN:-}" ]; then
  source "$root/.ci/env.sh"
  keel_build_deps
  (cd "$root" && cargo build --release --locked -p keel-node -p keelctl)
  KEELD_BIN="${KEELD_BIN:-$CARGO_TARGET_DIR/release/keeld}"
  KEELCTL_BIN="${KEELCTL_BIN:-$CARGO_TARGET_DIR/release/keelctl}"
fi
for bin in "$KEELD_BIN" "$KEELCTL_BIN"; do
  [ -x "$bin" ] || { echo "build.sh: $bin is not an executable file" >&2; exit 1; }
done

context="$(mktemp -d "${TMPDIR:-/tmp}/keel-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$context/data"
cp "$KEELD_BIN" "$rootfs/usr/local/bin/keeld"
cp "$KEELCTL_BIN" "$rootfs/usr/local/bin/keelctl"
chmod 0755 "$rootfs/usr/local/bin/keeld" "$rootfs/usr/local/bin/keelctl"

# Every library ldd resolves (`name => /path (addr)`) and the loader (`/path (addr)`),
# copied to the same path with symlinks resolved. linux-vdso has no file.
for bin in "$KEELD_BIN" "$KEELCTL_BIN"; do
  if ! ldd "$bin" >/dev/null 2>&1; then
    echo "build.sh: $bin is statically linked or not an ELF for this machine; copying no libraries for it"
    continue
  fi
  ldd "$bin" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
if ldd "$KEELD_BIN" 2>&1 | grep -q "not found"; then
  echo "build.sh: keeld needs a library ldd cannot find:" >&2
  ldd "$KEELD_BIN" | grep "not found" >&2
  exit 1
fi

cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
keel:x:$keel_uid:$keel_uid:Keel:/var/lib/keel:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
keel:x:$keel_uid:
GROUP
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$keel_uid:$keel_uid data/ /var/lib/keel/
USER $keel_uid:$keel_uid
WORKDIR /var/lib/keel
VOLUME ["/var/lib/keel"]
# client gRPC, peer (Raft), ops HTTP
EXPOSE 7400 7401 7402
ENV RUST_LOG=info,openraft=warn
ENTRYPOINT ["/usr/local/bin/keeld"]
CMD ["--config", "/etc/keel/keel.toml"]
DOCKERFILE

# The legacy builder needs no buildx plugin and never pulls for FROM scratch.
DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$context" >/dev/null
docker image inspect --format '{{.Id}}' "$tag"
