#!/usr/bin/env bash
# Installs what the local control plane needs, idempotently:
#   etcd (Debian etcd-server), wrk, openssl, jq, python3-yaml, prometheus (promtool and the
#   server, for the alert tests), the node's runtime (containerd, runc, the CNI plugins,
#   conntrack, iptables, umoci), and the five Kubernetes 1.20.2 binaries (kube-apiserver,
#   kubelet, kube-proxy, kube-controller-manager, kube-scheduler) built in one `make` from
#   Debian's `kubernetes` source package. The build takes about 10-13 minutes on 2 cores, so
#   the binaries are cached outside the repository, keyed by version:
#   ${PVC_CLONE_GUARD_CACHE:-~/.cache/pvc-clone-guard}/kube-<version>/{kube-apiserver,kubelet,...}
#   together with the static pause binary of the same tree (build/pause/linux/pause.c).
# Prints nothing but progress; safe to run again.
set -euo pipefail

LOG_TAG=install
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BINARIES="kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler"
# Records which binaries and source fixes the cache was built with; a cache without the
# current list (e.g. one built before a fix or a binary was added) is rebuilt.
BUILD_STAMP="$KUBE_DIR/build-stamp"
BUILD_FIXES="reflect2-1.0.2 pause $BINARIES"

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# apt_install [--no-install-recommends] PACKAGE...
apt_install() {
  local missing=() options=()
  if [ "${1:-}" = --no-install-recommends ]; then
    options+=("$1")
    shift
  fi
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    sudo_if_needed apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
}

apt_install etcd-server wrk openssl jq curl ca-certificates python3-yaml
# promtool and the Prometheus server for the alert tests (tests/alerts/run.sh and the
# end-to-end Prometheus, which runs on loopback with its own config); the node exporter it
# recommends is not needed.
apt_install --no-install-recommends prometheus

if [ ! -x /usr/bin/kubectl ] && ! command -v kubectl >/dev/null 2>&1; then
  apt_install kubernetes-client
fi

# The node: containerd (CRI) with runc, bridge/host-local/portmap CNI plugins, conntrack and
# iptables for kube-proxy, nft to remove the iptables tables a node created (teardown), umoci
# to pack images from scratch (no registry, no Docker engine).
apt_install --no-install-recommends containerd runc containernetworking-plugins conntrack iptables nftables umoci

if [ "$(cat "$BUILD_STAMP" 2>/dev/null)" = "$BUILD_FIXES" ]; then
  log "Kubernetes $KUBE_VERSION binaries cached in $KUBE_DIR"
  exit 0
fi

# Debian's `kubernetes` source package needs a deb-src entry. None is written by hand:
# it is derived from the machine's own Debian entry for the bookworm suite (the same
# URIs and keyring), so the build follows whatever mirror this machine is configured with.
SRC_LIST=/etc/apt/sources.list.d/pvc-clone-guard-debian-src.sources
bookworm_source_entry() {
  # Prints "URIS|SIGNED_BY" of the first `deb` entry whose suites include bookworm,
  # from deb822 files (*.sources) or one-line lists (*.list, sources.list).
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && uris != "") {
          print uris "|" signed; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; signed = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
      /^Signed-By:/ { sub(/^Signed-By:[ \t]*/, ""); signed = $0 }
      END { if (!found) flush() }
    ' "$f" | head -n1 | grep . && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '
      $1 == "deb" {
        signed = ""; i = 2
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            if ($i ~ /signed-by=/) { signed = $i; sub(/.*signed-by=/, "", signed); sub(/\]$/, "", signed) }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        if ($(i + 1) == "bookworm") { print $i "|" signed; exit }
      }
    ' "$f" | head -n1 | grep . && return 0
  done
  return 1
}
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -rqs '^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  entry="$(bookworm_source_entry)" || {
    log "no Debian bookworm 'deb' entry found in /etc/apt/sources.list(.d); add a deb-src entry for bookworm by hand"
    exit 1
  }
  uris="${entry%%|*}"
  signed_by="${entry#*|}"
  log "adding a deb-src entry for bookworm from this machine's own entry ($uris)"
  {
    echo "Types: deb-src"
    echo "URIs: $uris"
    echo "Suites: bookworm"
    echo "Components: main"
    [ -n "$signed_by" ] && echo "Signed-By: $signed_by"
  } | sudo_if_needed tee "$SRC_LIST" >/dev/null
  apt_updated=0
fi
apt_install golang-go rsync dpkg-dev make golang-github-modern-go-reflect2-dev
if [ $apt_updated -eq 0 ]; then sudo_if_needed apt-get update -qq; fi

BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")"
trap 'rm -rf "$BUILD_DIR"' EXIT
log "fetching Debian's kubernetes source into $BUILD_DIR"
(cd "$BUILD_DIR" && apt-get source -qq kubernetes >/dev/null 2>&1)
SRC_DIR="$(find "$BUILD_DIR" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)"
[ -n "$SRC_DIR" ] || { log "apt-get source kubernetes produced no tree"; exit 1; }

# Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which reads Go's
# internal map-iterator layout; Go 1.18 changed that layout, so a 1.20 apiserver built
# with Debian's Go 1.19 crashes ("fatal error: fault" in mapiternext via json-iterator)
# on the first JSON response that contains a map (e.g. any object with labels). reflect2
# v1.0.2 is the upstream fix and is API-compatible; Debian ships it as source, so swap
# it into the vendor tree (only the non-test .go files: no nested go.mod in vendor/).
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
REFLECT2_VENDOR="$SRC_DIR/vendor/github.com/modern-go/reflect2"
[ -f "$REFLECT2_SRC/go_above_118.go" ] || { log "reflect2 >= 1.0.2 not found at $REFLECT2_SRC"; exit 1; }
[ -d "$REFLECT2_VENDOR" ] || { log "no vendored reflect2 at $REFLECT2_VENDOR"; exit 1; }
log "replacing vendored reflect2 with Debian's 1.0.2 (Go >= 1.18 fix)"
rm -f "$REFLECT2_VENDOR"/*.go
find "$REFLECT2_SRC" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$REFLECT2_VENDOR"/ \;

what=""
for b in $BINARIES; do what="$what cmd/$b"; done
log "building$what (10-13 minutes on 2 cores)"
(cd "$SRC_DIR" && make WHAT="${what# }" >"$BUILD_DIR/build.log" 2>&1) || {
  tail -n 40 "$BUILD_DIR/build.log" >&2
  exit 1
}
mkdir -p "$KUBE_DIR"
for b in $BINARIES; do install -m 0755 "$SRC_DIR/_output/bin/$b" "$KUBE_DIR/$b"; done
# The pause container's only binary, from the same tree, static so that the image needs
# nothing else (tests/cluster/node.sh packs it into an image from scratch).
gcc -Os -static -o "$KUBE_DIR/pause" "$SRC_DIR/build/pause/linux/pause.c"
echo "$BUILD_FIXES" >"$BUILD_STAMP"
log "Kubernetes $KUBE_VERSION binaries cached in $KUBE_DIR"
