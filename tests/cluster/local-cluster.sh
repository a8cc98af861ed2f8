#!/usr/bin/env bash
# A real, minimal Kubernetes control plane on loopback: etcd + kube-apiserver 1.20.2 and
# nothing else (no controller-manager, no scheduler, no kubelet). It is meant for the
# end-to-end tests and the demo of pvc-clone-guard, which only need admission and RBAC.
#
# Usage:
#   local-cluster.sh up DIR               install (cached), generate certs/tokens, start
#                                         etcd + kube-apiserver on free ports, wait until
#                                         ready, write DIR/cluster.env and kubeconfigs
#   local-cluster.sh down DIR             stop what `up` started in DIR (by recorded pid)
#   local-cluster.sh stop-apiserver DIR   stop only kube-apiserver (fault injection)
#   local-cluster.sh start-apiserver DIR  start it again with the exact same command line
#   local-cluster.sh status DIR           print which processes of DIR are running
#   local-cluster.sh bind DIR NAMESPACE PVC PV
#                                         do what the PV controller would: bind PVC<->PV
#                                         and set both statuses to Bound
#   local-cluster.sh namespace DIR NAME   create a Namespace with the `default`
#                                         ServiceAccount that the (absent) controllers
#                                         would make, automountServiceAccountToken: false
#   local-cluster.sh status-patch DIR PATH JSON
#                                         merge-patch a status subresource as the admin
#                                         (kubectl 1.20 has no --subresource)
#
# Files in DIR after `up`:
#   cluster.env           KEY=VALUE lines, shell-sourceable (see write_cluster_env)
#   admin.kubeconfig      user "admin" (group system:masters), CA-verified TLS
#   webhook.kubeconfig    user "pvc-clone-guard" (no groups but system:authenticated)
#   ca.crt ca.key         the CA that signed the apiserver's serving cert
#   apiserver-certs/      --cert-dir: apiserver.crt (leaf + CA) and apiserver.key
#   sa.key sa.pub         service-account signing key pair
#   tokens.csv            --token-auth-file
#   etcd/                 etcd data (survives stop-apiserver/start-apiserver and down/up)
#   etcd.log kube-apiserver.log etcd.pid kube-apiserver.pid
#   etcd.args kube-apiserver.args   the exact command lines, one argument per line
#   audit-policy.yaml     the audit policy: PVC creates at level Metadata, nothing else
#   audit.log             the audit log (JSON lines), with admission webhooks' audit
#                         annotations (e.g. validate.pvc-clone-guard.io/verdict)
#
# Environment:
#   LOCAL_CLUSTER_TIMEOUT   seconds to wait for readiness (default 60)
#   LOCAL_CLUSTER_NODE_IP   the address of a real node (tests/cluster/node.sh sets it): the
#                           API server binds and advertises it instead of 127.0.0.1, keeps
#                           the `kubernetes` Endpoints (pods reach it at 10.0.0.1:443),
#                           authorizes kubelets (Node,RBAC), has a client certificate for
#                           kubelets, and tokens.csv gets the node's components
#   PVC_CLONE_GUARD_CACHE   where install.sh caches kube-apiserver (see install.sh)
#   LOCAL_CLUSTER_SKIP_INSTALL=1  do not run install.sh (binaries must already be there)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=local-cluster
# shellcheck source=tests/cluster/lib.sh
. "$SCRIPT_DIR/lib.sh"
APISERVER_BIN="$KUBE_DIR/kube-apiserver"
ETCD_BIN="${ETCD_BIN:-etcd}"
KUBECTL="${KUBECTL:-kubectl}"
TIMEOUT="${LOCAL_CLUSTER_TIMEOUT:-60}"
NODE_IP="${LOCAL_CLUSTER_NODE_IP:-}"
API_HOST="${NODE_IP:-127.0.0.1}"

usage() {
  sed -n '/^# Usage:/,/^# Files in DIR/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# Absolute path of DIR, so every file we write (pid files, kubeconfigs, cluster.env,
# stored command lines) stays valid whatever the caller's working directory is. Only
# `up` creates the directory; the other commands want an
# existing one. DIR must not contain a newline (command lines are stored one per line).
abs_dir() {
  [ -d "$1" ] || die "$1 does not exist (run 'up' first)"
  (cd "$1" && pwd)
}
make_abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# --- ports ------------------------------------------------------------------------------

# Prints N distinct free TCP ports on 127.0.0.1. They are drawn at random from below the
# kernel's ephemeral range (ip_local_port_range), so no outgoing connection (e.g. the
# apiserver's own client connections to etcd, or a test's) can be holding one as its
# source port when etcd/kube-apiserver bind it, including when the same port is bound
# again by start-apiserver or a re-`up`. Each is checked by binding it; there is a small
# window before the daemons bind them, and a lost race fails `up` with a clear log.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_low = int(f.read().split()[0])
except OSError:
    eph_low = 32768
lo, hi = 10000, eph_low - 1
socks = []
def grab(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return False
    socks.append(s)
    return True
if hi - lo > 1000:
    for port in random.sample(range(lo, hi + 1), 200):
        if len(socks) == n:
            break
        grab(port)
while len(socks) < n:  # odd port range: let the kernel choose
    grab(0)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# Whether PORT can be listened on again. SO_REUSEADDR as Go's listeners (etcd,
# kube-apiserver) use it, so connections of a previous run in TIME_WAIT do not count.
port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# --- credentials ------------------------------------------------------------------------

# CA + serving cert made with openssl rather than kube-apiserver's self-generated one:
# we get a separate ca.crt with CA:TRUE that clients (kubectl, the Rust client, curl) can
# verify against, instead of insecure-skip-tls-verify. The files go into --cert-dir under
# the names kube-apiserver looks for (apiserver.crt/apiserver.key), so it uses them
# instead of generating its own. Generated once; kept across down/up.
gen_certs() {
  local dir=$1 certs="$1/apiserver-certs"
  mkdir -p "$certs"
  chmod 700 "$certs"
  if [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/ca.key" ]; then
    log "generating cluster CA"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/CN=pvc-clone-guard-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 600 "$dir/ca.key"
    rm -f "$certs/apiserver.crt" "$certs/apiserver.key"
  fi
  if [ ! -s "$certs/apiserver.crt" ] || [ ! -s "$certs/apiserver.key" ]; then
    log "generating kube-apiserver serving cert"
    # 10.0.0.1 is the first IP of --service-cluster-ip-range (the `kubernetes` service),
    # which pods dial on a real node; otherwise only 127.0.0.1 is ever dialled.
    issue_cert "$dir" "$certs/apiserver" "kube-apiserver" \
      "IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local${NODE_IP:+,IP:$NODE_IP}"
    # kube-apiserver serves the whole file as the chain: leaf first, then the CA.
    cat "$dir/ca.crt" >>"$certs/apiserver.crt"
  fi
}

# issue_cert DIR OUT_PREFIX CN SANS [USAGE [SUBJECT]]: OUT_PREFIX.crt/.key signed by
# DIR/ca.{crt,key}. USAGE: serverAuth (default) or clientAuth (then SANS may be empty).
issue_cert() {
  local dir=$1 out=$2 cn=$3 sans=$4 usage=${5:-serverAuth} subject=${6:-/CN=$3} ext
  ext="$(mktemp)"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$usage" ${sans:+"subjectAltName=$sans"} >"$ext"
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$out.key" -out "$out.csr" \
    -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$ext" "$dir/ca.srl"
  chmod 600 "$out.key"
}

gen_sa_keys() {
  local dir=$1
  if [ ! -s "$dir/sa.key" ] || [ ! -s "$dir/sa.pub" ]; then
    log "generating service-account key pair"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    chmod 600 "$dir/sa.key"
  fi
}

# --token-auth-file format: token,user,uid,"group1,group2". Random tokens, made once so
# kubeconfigs handed out earlier stay valid across down/up of the same DIR.
gen_tokens() {
  local dir=$1
  if [ ! -s "$dir/tokens.csv" ]; then
    log "generating tokens"
    : >"$dir/tokens.csv"
    chmod 600 "$dir/tokens.csv"
    {
      echo "$(openssl rand -hex 32),admin,admin,\"system:masters\""
      echo "$(openssl rand -hex 32),pvc-clone-guard,pvc-clone-guard"
    } >>"$dir/tokens.csv"
  fi
  # A real node's components, each with the identity the bootstrap RBAC (and the Node
  # authorizer, for the kubelet) expects.
  if [ -n "$NODE_IP" ] && ! grep -q ',system:kube-proxy,' "$dir/tokens.csv"; then
    {
      echo "$(openssl rand -hex 32),system:node:pcg-node,system:node:pcg-node,\"system:nodes\""
      echo "$(openssl rand -hex 32),system:kube-proxy,system:kube-proxy"
      echo "$(openssl rand -hex 32),system:kube-controller-manager,system:kube-controller-manager"
      echo "$(openssl rand -hex 32),system:kube-scheduler,system:kube-scheduler"
    } >>"$dir/tokens.csv"
  fi
}

# KEY=VALUE lines; values are %q-quoted (a no-op for ordinary paths/URLs) so the file can
# be sourced by a shell and also parsed naively by a test harness.
write_cluster_env() {
  local dir=$1
  {
    printf 'KUBECONFIG=%q\n' "$dir/admin.kubeconfig"
    printf 'PVC_CLONE_GUARD_WEBHOOK_KUBECONFIG=%q\n' "$dir/webhook.kubeconfig"
    printf 'APISERVER_URL=%q\n' "https://$API_HOST:$APISERVER_PORT"
    printf 'APISERVER_PORT=%q\n' "$APISERVER_PORT"
    printf 'ETCD_URL=%q\n' "http://127.0.0.1:$ETCD_CLIENT_PORT"
    printf 'ETCD_CLIENT_PORT=%q\n' "$ETCD_CLIENT_PORT"
    printf 'ETCD_PEER_PORT=%q\n' "$ETCD_PEER_PORT"
    printf 'CLUSTER_CA_FILE=%q\n' "$dir/ca.crt"
    printf 'ADMIN_TOKEN=%q\n' "$(token_of "$dir" admin)"
    printf 'WEBHOOK_TOKEN=%q\n' "$(token_of "$dir" pvc-clone-guard)"
    printf 'ETCD_PID_FILE=%q\n' "$dir/etcd.pid"
    printf 'APISERVER_PID_FILE=%q\n' "$dir/kube-apiserver.pid"
    printf 'ETCD_LOG=%q\n' "$dir/etcd.log"
    printf 'APISERVER_LOG=%q\n' "$dir/kube-apiserver.log"
    printf 'AUDIT_LOG=%q\n' "$dir/audit.log"
  } >"$dir/cluster.env.tmp"
  mv "$dir/cluster.env.tmp" "$dir/cluster.env"
}

# --- command lines ----------------------------------------------------------------------

write_etcd_args() {
  local dir=$1 c=$ETCD_CLIENT_PORT p=$ETCD_PEER_PORT
  # Single member. The initial-cluster flags must agree with the peer URL or etcd refuses
  # to start; the token is per DIR so two clusters can never mistake each other's peers.
  # zap logger: the default capnslog one prints a deprecation warning on every start.
  printf '%s\n' "$(command -v "$ETCD_BIN")" \
    --name=local \
    "--data-dir=$dir/etcd" \
    "--listen-client-urls=http://127.0.0.1:$c" \
    "--advertise-client-urls=http://127.0.0.1:$c" \
    "--listen-peer-urls=http://127.0.0.1:$p" \
    "--initial-advertise-peer-urls=http://127.0.0.1:$p" \
    "--initial-cluster=local=http://127.0.0.1:$p" \
    --initial-cluster-state=new \
    "--initial-cluster-token=local-cluster-$(basename "$dir")-$p" \
    --logger=zap \
    --log-outputs=stderr \
    >"$dir/etcd.args"
}

write_apiserver_args() {
  local dir=$1
  # Notes on flags beyond the obvious ones:
  #  --service-account-*: 1.20 refuses to start without issuer + signing key.
  #  --endpoint-reconciler-type=none: the default reconciler keeps trying to write the
  #    `kubernetes` Endpoints with 127.0.0.1, which validation rejects (loopback), and
  #    logs an error every 10 s. Nothing here needs that Endpoints object.
  #  --feature-gates=AnyVolumeDataSource=true: lets PVC spec.dataSource name arbitrary
  #    kinds (alpha in 1.20; 1.20 has no spec.dataSourceRef field at all).
  #  --audit-*: an audit log of PVC creates only (see write_audit_policy), where the
  #    webhook's audit annotations land; rotated at 10 MiB so it can never grow unbounded.
  local -a node_args=(--endpoint-reconciler-type=none --authorization-mode=RBAC)
  if [ -n "$NODE_IP" ]; then
    # A real node: the `kubernetes` Endpoints name the node's address (pods dial
    # 10.0.0.1:443), kubelets are authorized by the Node authorizer, and the API server
    # authenticates to the kubelets (logs, exec) with a client certificate in
    # system:masters; kubelets are reached at their InternalIP (no DNS here).
    node_args=(
      --authorization-mode=Node,RBAC
      "--kubelet-client-certificate=$dir/apiserver-kubelet-client.crt"
      "--kubelet-client-key=$dir/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP
    )
  fi
  printf '%s\n' "$APISERVER_BIN" \
    "--etcd-servers=http://127.0.0.1:$ETCD_CLIENT_PORT" \
    "--secure-port=$APISERVER_PORT" \
    "--bind-address=$API_HOST" \
    "--advertise-address=$API_HOST" \
    "--cert-dir=$dir/apiserver-certs" \
    "--token-auth-file=$dir/tokens.csv" \
    "--service-account-key-file=$dir/sa.pub" \
    "--service-account-signing-key-file=$dir/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.0.0.0/24 \
    "${node_args[@]}" \
    --feature-gates=AnyVolumeDataSource=true \
    "--audit-policy-file=$dir/audit-policy.yaml" \
    "--audit-log-path=$dir/audit.log" \
    --audit-log-maxsize=10 \
    --audit-log-maxbackup=1 \
    >"$dir/kube-apiserver.args"
}

# Metadata (who, what, verdict, annotations; no bodies) for creates of claims, which is
# where admission webhooks' audit annotations are recorded; nothing else, so the log
# stays small. Only the final stage: one event per request.
write_audit_policy() {
  cat >"$1/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create]
    resources:
      - group: ""
        resources: [persistentvolumeclaims]
  - level: None
EOF
}

# Ports come from the stored etcd/apiserver command lines when DIR was up before, so a
# re-`up` reuses them (and existing kubeconfigs keep working); otherwise free ones.
choose_ports() {
  local dir=$1
  if [ -s "$dir/etcd.args" ] && [ -s "$dir/kube-apiserver.args" ] && [ -d "$dir/etcd/member" ]; then
    ETCD_CLIENT_PORT="$(sed -n 's|^--listen-client-urls=http://127.0.0.1:||p' "$dir/etcd.args")"
    ETCD_PEER_PORT="$(sed -n 's|^--listen-peer-urls=http://127.0.0.1:||p' "$dir/etcd.args")"
    APISERVER_PORT="$(sed -n 's|^--secure-port=||p' "$dir/kube-apiserver.args")"
    local p
    for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
      port_free "$p" || die "port $p recorded in $dir is now in use; run 'down' and remove $dir to start afresh"
    done
    log "reusing existing data and ports in $dir"
  else
    read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT < <(free_ports 3)
  fi
}

# --- readiness --------------------------------------------------------------------------

# Ready means what the tests need, not just a listening socket: /readyz is ok (that
# includes the RBAC bootstrap-roles post-start hook), the cluster-admin ClusterRole is
# readable and the `default` Namespace exists (created by a separate bootstrap loop that
# can lag /readyz). Polled with curl because each kubectl run costs ~0.2 s here; one
# kubectl call at the end proves the written kubeconfig itself works.
wait_ready() {
  local dir=$1 url token deadline
  url="https://$API_HOST:$APISERVER_PORT"
  token="$(token_of "$dir" admin)"
  deadline=$((SECONDS + TIMEOUT))
  local -a curl=(curl -fsS --max-time 3 --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" -o /dev/null)
  while :; do
    if ! live_pid "$dir" etcd >/dev/null; then
      ready_failed "$dir" "etcd exited"
    fi
    if ! live_pid "$dir" kube-apiserver >/dev/null; then
      ready_failed "$dir" "kube-apiserver exited"
    fi
    if "${curl[@]}" "$url/readyz" 2>/dev/null &&
      "${curl[@]}" "$url/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin" 2>/dev/null &&
      "${curl[@]}" "$url/api/v1/namespaces/default" 2>/dev/null; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      ready_failed "$dir" "not ready after ${TIMEOUT}s"
    fi
    sleep 0.5
  done
  if ! "$KUBECTL" --kubeconfig "$dir/admin.kubeconfig" get --raw /readyz >/dev/null; then
    ready_failed "$dir" "kubectl with $dir/admin.kubeconfig cannot reach the apiserver"
  fi
}

ready_failed() {
  local dir=$1 why=$2 f
  log "cluster in $dir is not ready: $why"
  for f in etcd kube-apiserver; do
    if [ -f "$dir/$f.log" ]; then
      log "---- last lines of $dir/$f.log ----"
      tail -n 25 "$dir/$f.log" >&2
    fi
  done
  exit 1
}

# --- subcommands ------------------------------------------------------------------------

cmd_up() {
  local dir start
  start=$SECONDS
  dir="$(make_abs_dir "$1")"
  if [ "${LOCAL_CLUSTER_SKIP_INSTALL:-0}" != 1 ]; then
    bash "$SCRIPT_DIR/install.sh"
  fi
  [ -x "$APISERVER_BIN" ] || die "kube-apiserver not found at $APISERVER_BIN (run install.sh)"
  command -v "$ETCD_BIN" >/dev/null || die "etcd not found"
  command -v "$KUBECTL" >/dev/null || die "kubectl not found"
  if live_pid "$dir" etcd >/dev/null || live_pid "$dir" kube-apiserver >/dev/null; then
    die "a cluster is already running in $dir; run '$0 down $dir' first"
  fi

  gen_certs "$dir"
  gen_sa_keys "$dir"
  gen_tokens "$dir"
  if [ -n "$NODE_IP" ] && [ ! -s "$dir/apiserver-kubelet-client.crt" ]; then
    issue_cert "$dir" "$dir/apiserver-kubelet-client" kube-apiserver-kubelet-client "" clientAuth \
      "/O=system:masters/CN=kube-apiserver-kubelet-client"
  fi
  choose_ports "$dir"
  write_etcd_args "$dir"
  write_audit_policy "$dir"
  write_apiserver_args "$dir"

  local url="https://$API_HOST:$APISERVER_PORT"
  write_kubeconfig "$dir" "$dir/admin.kubeconfig" admin "$(token_of "$dir" admin)" "$url"
  write_kubeconfig "$dir" "$dir/webhook.kubeconfig" pvc-clone-guard "$(token_of "$dir" pvc-clone-guard)" "$url"
  write_cluster_env "$dir"

  # Stop whatever we started if anything below fails, so a failed `up` leaves no strays.
  local qdir
  qdir="$(printf %q "$dir")"
  # shellcheck disable=SC2064 # expand $dir now
  trap "stop_process $qdir kube-apiserver || true; stop_process $qdir etcd || true" EXIT
  start_process "$dir" etcd
  wait_etcd "$dir"
  start_process "$dir" kube-apiserver
  wait_ready "$dir"
  trap - EXIT

  log "cluster up in $((SECONDS - start))s"
  log "  apiserver  $url (pid $(live_pid "$dir" kube-apiserver))"
  log "  etcd       http://127.0.0.1:$ETCD_CLIENT_PORT (pid $(live_pid "$dir" etcd))"
  log "  env        . $dir/cluster.env"
  log "  kubectl    kubectl --kubeconfig $dir/admin.kubeconfig get ns"
  log "  stop       $0 down $dir"
}

# kube-apiserver retries etcd itself, but waiting here first gives a clear error if etcd
# is what failed (e.g. lost the race for its port).
wait_etcd() {
  local dir=$1 deadline=$((SECONDS + TIMEOUT))
  until curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null; do
    live_pid "$dir" etcd >/dev/null || ready_failed "$dir" "etcd exited"
    [ "$SECONDS" -lt "$deadline" ] || ready_failed "$dir" "etcd not healthy after ${TIMEOUT}s"
    sleep 0.2
  done
}

cmd_down() {
  local dir
  [ -d "$1" ] || {
    log "$1 does not exist; nothing to stop"
    return 0
  }
  dir="$(abs_dir "$1")"
  stop_process "$dir" kube-apiserver
  stop_process "$dir" etcd
  wait_reaped
  log "cluster in $dir is down"
}

load_ports() {
  local dir=$1
  [ -s "$dir/kube-apiserver.args" ] || die "$dir has no kube-apiserver.args; run 'up' first"
  APISERVER_PORT="$(sed -n 's|^--secure-port=||p' "$dir/kube-apiserver.args")"
  ETCD_CLIENT_PORT="$(sed -n 's|^--etcd-servers=http://127.0.0.1:||p' "$dir/kube-apiserver.args")"
}

cmd_stop_apiserver() {
  local dir
  dir="$(abs_dir "$1")"
  stop_process "$dir" kube-apiserver
  wait_reaped
}

cmd_start_apiserver() {
  local dir
  dir="$(abs_dir "$1")"
  load_ports "$dir"
  live_pid "$dir" etcd >/dev/null || die "etcd of $dir is not running; use 'up'"
  if live_pid "$dir" kube-apiserver >/dev/null; then
    log "kube-apiserver of $dir is already running"
  else
    start_process "$dir" kube-apiserver
  fi
  wait_ready "$dir"
  log "kube-apiserver ready at https://$API_HOST:$APISERVER_PORT"
}

cmd_status() {
  status_of "$(abs_dir "$1")" etcd kube-apiserver
}

# What the PV controller would do for a pre-bound pair, which this cluster lacks:
#  PV.spec.claimRef -> the PVC (with its uid), PVC.spec.volumeName -> the PV (allowed by
#  validation only while empty), then status.phase Bound on both, and the PVC's
#  status.capacity/accessModes copied from the PV. Status goes through the /status
#  subresource. `kubectl patch --subresource=status` does that with kubectl >= 1.24 (it
#  works against this 1.20 server), but a 1.20-1.23 kubectl (e.g. Debian's
#  kubernetes-client) lacks the flag, so the status writes go straight to the API.
cmd_bind() {
  local dir=$1 ns=$2 pvc=$3 pv=$4
  dir="$(abs_dir "$dir")"
  local -a k=("$KUBECTL" --kubeconfig "$dir/admin.kubeconfig")
  local pvc_json pv_json uid cap modes cur ref
  pvc_json="$("${k[@]}" get pvc "$pvc" -n "$ns" -o json)" || die "cannot read PVC $ns/$pvc"
  pv_json="$("${k[@]}" get pv "$pv" -o json)" || die "cannot read PV $pv"
  uid="$(jq -r '.metadata.uid' <<<"$pvc_json")"
  cap="$(jq -r '.spec.capacity.storage // empty' <<<"$pv_json")"
  modes="$(jq -c '.spec.accessModes // []' <<<"$pv_json")"
  [ -n "$cap" ] || die "PV $pv has no spec.capacity.storage"

  # Refuse (before changing anything) to steal either side from another binding.
  cur="$(jq -r '.spec.volumeName // ""' <<<"$pvc_json")"
  [ -z "$cur" ] || [ "$cur" = "$pv" ] || die "PVC $ns/$pvc already names volume $cur, not $pv"
  ref="$(jq -r '.spec.claimRef // {} | "\(.namespace // "")/\(.name // "")/\(.uid // "")"' <<<"$pv_json")"
  case "$ref" in
    // | "$ns/$pvc/" | "$ns/$pvc/$uid") ;;
    *) die "PV $pv is already claimed by ${ref%/*} (uid ${ref##*/}), not $ns/$pvc (uid $uid)" ;;
  esac

  "${k[@]}" patch pv "$pv" --type=merge -p "$(jq -cn --arg ns "$ns" --arg n "$pvc" --arg uid "$uid" \
    '{spec: {claimRef: {kind: "PersistentVolumeClaim", apiVersion: "v1", namespace: $ns, name: $n, uid: $uid}}}')" >/dev/null
  "${k[@]}" patch pvc "$pvc" -n "$ns" --type=merge -p "$(jq -cn --arg pv "$pv" \
    '{metadata: {annotations: {"pv.kubernetes.io/bind-completed": "yes"}}, spec: {volumeName: $pv}}')" >/dev/null
  status_patch "$dir" "/api/v1/persistentvolumes/$pv/status" '{"status":{"phase":"Bound"}}'
  status_patch "$dir" "/api/v1/namespaces/$ns/persistentvolumeclaims/$pvc/status" \
    "$(jq -cn --arg cap "$cap" --argjson modes "$modes" \
      '{status: {phase: "Bound", capacity: {storage: $cap}, accessModes: $modes}}')"
  log "bound $ns/$pvc <-> $pv ($cap)"
}

# No controller-manager here, so a new Namespace gets no `default` ServiceAccount and
# Pod creation fails ("serviceaccount default not found"). Even with the account, the
# 1.20 ServiceAccount admission plugin waits ~10 s for a token Secret that only the
# (absent) tokens controller would create, then fails with ServerTimeout; opting the
# account out of token automount avoids that, so Pods need no special fields.
cmd_namespace() {
  local dir ns=$2
  dir="$(abs_dir "$1")"
  local -a k=("$KUBECTL" --kubeconfig "$dir/admin.kubeconfig")
  "${k[@]}" get namespace "$ns" >/dev/null 2>&1 || "${k[@]}" create namespace "$ns" >/dev/null
  if ! "${k[@]}" get serviceaccount default -n "$ns" >/dev/null 2>&1; then
    "${k[@]}" create -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: $ns
automountServiceAccountToken: false
EOF
  fi
  log "namespace $ns ready (default ServiceAccount, no token automount)"
}

# Merge-patches a status subresource as admin; prints the server's error on failure.
status_patch() {
  local dir=$1 path=$2 body=$3 port host out
  port="$(sed -n 's|^--secure-port=||p' "$dir/kube-apiserver.args")"
  host="$(sed -n 's|^--bind-address=||p' "$dir/kube-apiserver.args")"
  if ! out="$(curl -sS --max-time 10 --cacert "$dir/ca.crt" -X PATCH \
    -H "Authorization: Bearer $(token_of "$dir" admin)" \
    -H "Content-Type: application/merge-patch+json" --data "$body" \
    -w '\n%{http_code}' "https://$host:$port$path")" || [ "${out##*$'\n'}" != 200 ]; then
    echo "${out%$'\n'*}" >&2
    die "PATCH $path failed (HTTP ${out##*$'\n'})"
  fi
}


main() {
  [ $# -ge 2 ] || usage
  local cmd=$1
  shift
  case "$cmd" in
    up) cmd_up "$1" ;;
    down) cmd_down "$1" ;;
    stop-apiserver) cmd_stop_apiserver "$1" ;;
    start-apiserver) cmd_start_apiserver "$1" ;;
    status) cmd_status "$1" ;;
    bind)
      [ $# -eq 4 ] || usage
      cmd_bind "$@"
      ;;
    status-patch)
      [ $# -eq 3 ] || usage
      status_patch "$(abs_dir "$1")" "$2" "$3"
      ;;
    namespace)
      [ $# -eq 2 ] || usage
      cmd_namespace "$@"
      ;;
    *) usage ;;
  esac
}

main "$@"
