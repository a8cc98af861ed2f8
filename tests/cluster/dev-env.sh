#!/usr/bin/env bash
# The local control plane with pvc-clone-guard registered, as the end-to-end tests and the
# demo use it:
#   1. etcd + kube-apiserver (local-cluster.sh),
#   2. the webhook's certificates from the project's own `pvc-clone-guard certs`,
#   3. the ClusterRole shipped in manifests/base bound to the webhook's own user, so the
#      RBAC we ship is exactly what the webhook runs with,
#   4. `pvc-clone-guard serve` on loopback with that identity,
#   5. the ValidatingWebhookConfiguration shipped in manifests/base, with every webhook's
#      clientConfig replaced by `url: https://127.0.0.1:PORT/validate` and the CA bundle
#      (no cluster network here, so no Service).
#
# Usage:
#   dev-env.sh up DIR [CONFIG]     CONFIG: rule configuration (default tests/cluster/e2e-config.yaml)
#   dev-env.sh down DIR            stop the webhook, then the control plane (by recorded pid)
#   dev-env.sh stop-webhook DIR    SIGTERM the webhook and wait for it to exit
#   dev-env.sh start-webhook DIR   start it again with the same flags, wait until ready
#     (WEBHOOK_KUBECONFIG=FILE: another kubeconfig for the webhook, e.g. through a proxy;
#      WEBHOOK_EXTRA_ARGS="--flag=value ...": flags added to the recorded ones)
#
# After `up`, DIR/webhook.env holds WEBHOOK_URL, WEBHOOK_ADMIN_URL, WEBHOOK_CA, WEBHOOK_NAME
# next to DIR/cluster.env (KUBECONFIG etc.).
#
# Environment: PVC_CLONE_GUARD_BIN  the binary to run (default: target/release, built if missing)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
WEBHOOK_NAME=validate.pvc-clone-guard.io
READY_TIMEOUT=${DEV_ENV_TIMEOUT:-30}

LOG_TAG=dev-env
# shellcheck source=tests/cluster/lib.sh
. "$SCRIPT_DIR/lib.sh"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

kubectl_admin() { kubectl --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

# Only a pid we recorded, and only if it still runs pvc-clone-guard.
webhook_pid() {
  local pid
  pid=$(cat "$DIR/webhook.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -q pvc-clone-guard "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

wait_webhook_ready() {
  local admin_url=$1 deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS "$admin_url/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! webhook_pid >/dev/null; then
      tail -n 30 "$DIR/webhook.log" >&2 || true
      die "pvc-clone-guard did not become ready within ${READY_TIMEOUT}s"
    fi
    sleep 0.1
  done
}

start_webhook() {
  # shellcheck disable=SC1091
  source "$DIR/webhook.env"
  local args extra
  mapfile -t args <"$DIR/webhook.args"
  read -r -a extra <<<"${WEBHOOK_EXTRA_ARGS:-}"
  args+=("${extra[@]}")
  # The identity is the webhook's own user, bound only to the shipped ClusterRole.
  KUBECONFIG="${WEBHOOK_KUBECONFIG:-$DIR/webhook.kubeconfig}" RUST_LOG="${RUST_LOG:-info}" \
    setsid "$(release_binary)" "${args[@]}" >>"$DIR/webhook.log" 2>&1 </dev/null &
  echo $! >"$DIR/webhook.pid"
  local started=$SECONDS
  wait_webhook_ready "$WEBHOOK_ADMIN_URL"
  log "pvc-clone-guard ready at $WEBHOOK_URL (caches synced in $((SECONDS - started))s or less)"
}

stop_webhook() {
  local pid
  if pid=$(webhook_pid); then
    kill -TERM "$pid"
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$DIR/webhook.pid"
}

# Every webhook of the shipped configuration (claims, StatefulSets) gets the same url:
# the server tells the kinds apart by request.kind.
register_webhook() {
  local url=$1 ca=$2 overlay="$DIR/webhook-registration" count index bundle
  mkdir -p "$overlay"
  cp "$REPO/manifests/base/validatingwebhookconfiguration.yaml" "$overlay/"
  count=$(grep -c '^  - name: ' "$overlay/validatingwebhookconfiguration.yaml")
  [ "$count" -gt 0 ] || die "no webhooks in manifests/base/validatingwebhookconfiguration.yaml"
  bundle=$(base64 -w0 <"$ca")
  {
    cat <<EOF
resources:
  - validatingwebhookconfiguration.yaml
patches:
  - target:
      kind: ValidatingWebhookConfiguration
      name: pvc-clone-guard
    patch: |-
EOF
    for ((index = 0; index < count; index++)); do
      cat <<EOF
      - op: replace
        path: /webhooks/$index/clientConfig
        value:
          url: $url
          caBundle: $bundle
EOF
    done
  } >"$overlay/kustomization.yaml"
  kubectl_admin apply -k "$overlay" >/dev/null
  # Kubernetes 1.20 does not label namespaces with kubernetes.io/metadata.name (1.21+),
  # which the shipped namespaceSelector reads; label them as a newer API server would.
  kubectl_admin label namespace kube-system kubernetes.io/metadata.name=kube-system --overwrite >/dev/null
}

cmd_up() {
  local config=${1:-$SCRIPT_DIR/e2e-config.yaml}
  [ -f "$config" ] || die "no configuration file $config"
  "$SCRIPT_DIR/local-cluster.sh" up "$DIR"
  local bin
  bin=$(release_binary)

  log "issuing the webhook's certificate with 'pvc-clone-guard certs'"
  "$bin" certs --out-dir "$DIR/webhook-certs" --dns localhost --ip 127.0.0.1 >/dev/null

  log "binding the shipped ClusterRole to user pvc-clone-guard"
  kubectl_admin apply -f "$REPO/manifests/base/clusterrole.yaml" >/dev/null
  kubectl_admin create clusterrolebinding pvc-clone-guard-local \
    --clusterrole=pvc-clone-guard --user=pvc-clone-guard --dry-run=client -o yaml |
    kubectl_admin apply -f - >/dev/null

  local port admin_port
  port=$(free_port)
  admin_port=$(free_port)
  cat >"$DIR/webhook.env" <<EOF
WEBHOOK_NAME=$WEBHOOK_NAME
WEBHOOK_URL=https://127.0.0.1:$port/validate
WEBHOOK_ADMIN_URL=http://127.0.0.1:$admin_port
WEBHOOK_CA=$DIR/webhook-certs/ca.crt
WEBHOOK_CERT_DIR=$DIR/webhook-certs
WEBHOOK_LOG=$DIR/webhook.log
WEBHOOK_PID_FILE=$DIR/webhook.pid
EOF
  printf '%s\n' serve \
    --tls-cert "$DIR/webhook-certs/tls.crt" --tls-key "$DIR/webhook-certs/tls.key" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
    --config "$config" --log-format text --cert-reload-interval 1s >"$DIR/webhook.args"
  start_webhook

  log "registering $WEBHOOK_NAME from manifests/base with url https://127.0.0.1:$port/validate"
  register_webhook "https://127.0.0.1:$port/validate" "$DIR/webhook-certs/ca.crt"
  log "up: source $DIR/cluster.env and $DIR/webhook.env"
}

cmd_down() {
  stop_webhook
  "$SCRIPT_DIR/local-cluster.sh" down "$DIR"
}

main() {
  [ $# -ge 2 ] || die "usage: dev-env.sh up|down|stop-webhook|start-webhook DIR [CONFIG]"
  local cmd=$1
  mkdir -p "$2"
  DIR="$(cd "$2" && pwd)"
  shift 2
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    stop-webhook) stop_webhook ;;
    start-webhook) start_webhook ;;
    *) die "unknown command $cmd" ;;
  esac
}

main "$@"
