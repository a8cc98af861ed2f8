#!/usr/bin/env bash
# Smoke test of local-cluster.sh itself (not of pvc-clone-guard): brings a cluster up in a
# temporary directory, checks everything the end-to-end tests rely on, and tears it down.
# Prints one line per check and a closing "N passed, N failed"; exits non-zero on failure.
# Usage: tests/cluster/smoke.sh [DIR]   (default: a fresh mktemp directory, removed after)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
L="$SCRIPT_DIR/local-cluster.sh"
# shellcheck source=tests/cluster/lib.sh
. "$SCRIPT_DIR/lib.sh"
DIR="${1:-$(mktemp -d "${TMPDIR:-/tmp}/local-cluster-smoke.XXXXXX")}"
KEEP_DIR=$([ $# -ge 1 ] && echo 1 || echo 0)
passed=0
failed=0

check() { # check NAME CMD...: CMD must succeed
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}
check_fails() { # check_fails NAME PATTERN CMD...: CMD must fail with PATTERN in its output
  local name=$1 pattern=$2 out
  shift 2
  if out="$("$@" 2>&1)"; then
    echo "FAIL $name (succeeded)"
    failed=$((failed + 1))
  elif grep -q -- "$pattern" <<<"$out"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name: $out"
    failed=$((failed + 1))
  fi
}

cleanup() {
  "$L" down "$DIR" >/dev/null 2>&1 || true
  [ "$KEEP_DIR" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT

"$L" up "$DIR"
export KUBECONFIG="$DIR/admin.kubeconfig"
k() { kubectl "$@"; }

check "cluster.env is sourceable" bash -c ". '$DIR/cluster.env' && [ -n \"\$APISERVER_URL\" ]"
check "admin can list namespaces" k get ns default
check "rbac bootstrap roles exist" k get clusterrole cluster-admin
check_fails "webhook user is forbidden to list pvcs" Forbidden \
  kubectl --kubeconfig "$DIR/webhook.kubeconfig" get pvc -A

check "namespace helper" "$L" namespace "$DIR" demo
source_yaml demo ebs pv-src src | k apply -f - >/dev/null
check "bind helper" "$L" bind "$DIR" demo src pv-src
check "pvc is Bound with capacity" test "$(k get pvc src -n demo -o jsonpath='{.status.phase} {.spec.volumeName} {.status.capacity.storage}')" = "Bound pv-src 10Gi"
check "pv is Bound to the pvc" test "$(k get pv pv-src -o jsonpath='{.status.phase} {.spec.claimRef.name}')" = "Bound src"
# claim NAME [SOURCE]: a 10Gi claim of class ebs in demo, a clone of SOURCE if given.
claim() {
  printf 'apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: %s, namespace: demo}\n' "$1"
  printf 'spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: ebs\n  resources: {requests: {storage: 10Gi}}\n'
  [ -z "${2:-}" ] || printf '  dataSource: {kind: PersistentVolumeClaim, name: %s}\n' "$2"
}
claim other | k create -f - >/dev/null
check_fails "bind refuses a pv claimed by another pvc" "already claimed" "$L" bind "$DIR" demo other pv-src
check "clone pvc with dataSource is accepted" bash -c "kubectl create -f - <<<'$(claim clone src)'"
check "pod using the pvc is accepted" bash -c "kubectl create -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: user, namespace: demo}
spec:
  containers: [{name: c, image: busybox}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: src}}]
EOF"

check "stop-apiserver" "$L" stop-apiserver "$DIR"
check_fails "apiserver is unreachable while stopped" "refused" k get ns --request-timeout=2s
check "start-apiserver" "$L" start-apiserver "$DIR"
check "data survived the restart" test "$(k get pvc src -n demo -o jsonpath='{.status.phase}')" = Bound

etcd_pid="$(cat "$DIR/etcd.pid")"
api_pid="$(cat "$DIR/kube-apiserver.pid")"
check "down" "$L" down "$DIR"
check "no process left" bash -c "! [ -e /proc/$etcd_pid ] && ! [ -e /proc/$api_pid ]"
check "down is idempotent" "$L" down "$DIR"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
