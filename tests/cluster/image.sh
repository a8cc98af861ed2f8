#!/usr/bin/env bash
# The pvc-clone-guard container image, built here without a registry or a Docker engine:
# the release binary and exactly the shared libraries it links (as `ldd` lists them), in an
# image made from scratch with umoci. User 65532:65532, entrypoint ["/pvc-clone-guard"],
# cmd ["serve"], ports 8443 and 8080 and the labels, as in the Dockerfile.
#
# Usage:
#   image.sh build OUT.tar          the image as an OCI archive (tag 0.1.0)
#   image.sh import NODE_DIR        build, then import into the containerd of a node
#                                   (tests/cluster/node.sh) in namespace k8s.io, as
#                                   pvc-clone-guard:0.1.0 (docker.io/library/pvc-clone-guard:0.1.0,
#                                   which is how the kubelet names `image: pvc-clone-guard:0.1.0`)
#
# Environment: PVC_CLONE_GUARD_BIN  the binary (default: target/release, built if missing)
#              IMAGE_TAG            the tag (default 0.1.0)
#
# How it relates to the Dockerfile: the Dockerfile builds the same binary with
# `cargo build --release --locked` on rust:1.95-bookworm and copies it onto
# gcr.io/distroless/cc-debian12:nonroot, whose glibc and libgcc_s are Debian 12's. Here
# the binary is this machine's release build (Debian 12 too) and the libraries are the
# ones it resolves to on this machine, copied to the paths the dynamic loader asks for;
# neither base image can be fetched here. The same: binary path, entrypoint, cmd, user,
# ports, labels, glibc from Debian 12. Not the same: distroless also carries
# /etc/passwd (nonroot), CA certificates, tzdata and /tmp, which the server does not use
# (it names its user by number, reads the API server's CA from the mounted service-account
# token, logs in UTC and writes no files), so an image with only the binary and its
# libraries proves it needs nothing else.
set -euo pipefail

TAG="${IMAGE_TAG:-0.1.0}"
LOG_TAG=image
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The files the binary needs at run time: the loader (ELF interpreter) and every library
# `ldd` resolves, each as "PATH-IN-IMAGE" (the path the loader opens).
libraries() {
  ldd "$1" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }'
}

build() {
  local out=$1 bin work layout lib
  bin="$(release_binary --fresh)"
  [ -x "$bin" ] || die "$bin is not an executable"
  work="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-image.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  layout="$work/layout"
  # One layer: the binary, and each library (the file itself, not a symlink to it, with
  # its mode) at the path the loader opens; directories 0755.
  local root="$work/rootfs"
  mkdir -p "$root"
  install -m 0755 "$bin" "$root/pvc-clone-guard"
  while read -r lib; do
    log "  $lib ($(basename "$(readlink -f "$lib")"))"
    mkdir -p "$root$(dirname "$lib")"
    cp --dereference --preserve=mode "$lib" "$root$lib"
  done < <(libraries "$bin")
  find "$root" -type d -exec chmod 0755 {} +
  umoci init --layout "$layout"
  umoci new --image "$layout:$TAG"
  umoci insert --image "$layout:$TAG" "$root" /
  umoci config --image "$layout:$TAG" \
    --author pvc-clone-guard \
    --config.user 65532:65532 \
    --config.entrypoint /pvc-clone-guard \
    --config.cmd serve \
    --config.exposedports 8443/tcp --config.exposedports 8080/tcp \
    --config.label org.opencontainers.image.title=pvc-clone-guard \
    --config.label "org.opencontainers.image.description=Validating admission webhook that refuses invalid CSI volume clones"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$out" .
  log "image pvc-clone-guard:$TAG: $(du -h "$out" | cut -f1) ($out)"
}

cmd_import() {
  local dir
  dir="$(cd "$1" && pwd)"
  [ -S "$dir/containerd/containerd.sock" ] || die "$dir has no containerd socket (run tests/cluster/node.sh up $dir)"
  mkdir -p "$dir/images"
  build "$dir/images/pvc-clone-guard.tar"
  ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io images import \
    --base-name docker.io/library/pvc-clone-guard "$dir/images/pvc-clone-guard.tar" >/dev/null
  ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io images ls -q |
    grep -xF "docker.io/library/pvc-clone-guard:$TAG" >/dev/null || die "not imported as docker.io/library/pvc-clone-guard:$TAG"
  log "imported as docker.io/library/pvc-clone-guard:$TAG into $dir's containerd (k8s.io)"
}

case "${1:-}" in
  build) [ $# -eq 2 ] || die "usage: image.sh build OUT.tar"; build "$(realpath -m "$2")" ;;
  import) [ $# -eq 2 ] || die "usage: image.sh import NODE_DIR"; cmd_import "$2" ;;
  *)
    sed -n '/^# Usage:/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
