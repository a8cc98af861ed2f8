# Shared by the scripts of tests/cluster and the benchmarks that start a control plane;
# sourced, never run. What is here: the Kubernetes version and where install.sh caches its
# binaries, log lines, the release binary, and the bookkeeping that starts daemons detached
# and stops them by recorded pid, never by name.
#
# Set LOG_TAG (the word in brackets at the start of log lines) before sourcing.
# shellcheck shell=bash

KUBE_VERSION=1.20.2
CACHE_DIR="${PVC_CLONE_GUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pvc-clone-guard}"
KUBE_DIR="$CACHE_DIR/kube-$KUBE_VERSION"
LIB_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { echo "[${LOG_TAG:-cluster}] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The release binary: $PVC_CLONE_GUARD_BIN if set, else target/release/pvc-clone-guard,
# built if missing; `release_binary --fresh` always runs cargo (a no-op when up to date).
release_binary() {
  if [ -n "${PVC_CLONE_GUARD_BIN:-}" ]; then
    echo "$PVC_CLONE_GUARD_BIN"
    return
  fi
  local bin="$LIB_REPO/target/release/pvc-clone-guard"
  if [ "${1:-}" = --fresh ] || [ ! -x "$bin" ]; then
    log "building pvc-clone-guard (release)"
    (cd "$LIB_REPO" && cargo build --release --locked --quiet)
  fi
  echo "$bin"
}

# Prints the pid recorded in DIR/NAME.pid if that process is still alive AND is really
# ours: its comm is NAME (cut at 15 characters, as the kernel does) and its command line
# mentions DIR. That guards against pid reuse and against touching another cluster's
# processes.
live_pid() {
  local dir=$1 name=$2 pid comm
  pid="$({ tr -dc '0-9' <"$dir/$name.pid"; } 2>/dev/null)" || return 1
  [ -n "$pid" ] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [ "$comm" = "${name:0:15}" ] || return 1
  { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -F -- "$dir/" >/dev/null || return 1
  # A zombie (already exited, not yet reaped) is as good as gone.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  echo "$pid"
}

# Starts the command stored in DIR/NAME.args (one argument per line), detached: setsid
# puts it in its own session, so it survives the script, the caller's shell and a Ctrl-C
# in the caller's terminal; stdin/stdout/stderr are detached so a caller that waits for
# our output to close (CI, $(...)) is not held open. The pid is written by the process
# itself right before exec, so it is exactly the daemon's pid whether or not setsid had
# to fork.
start_process() {
  local dir=$1 name=$2 i pid
  local -a args
  mapfile -t args <"$dir/$name.args"
  [ ${#args[@]} -gt 0 ] || die "$dir/$name.args is empty"
  log "starting $name"
  # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pid" "${args[@]}" \
    </dev/null >>"$dir/$name.log" 2>&1 &
  for ((i = 0; i < 50; i++)); do
    live_pid "$dir" "$name" >/dev/null && return 0
    # Exited right away (bad flag, port taken): no point waiting the full 5 s.
    pid="$({ tr -dc '0-9' <"$dir/$name.pid"; } 2>/dev/null)" || true
    if [ -n "$pid" ] && { [ ! -e "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; }; then
      break
    fi
    sleep 0.1
  done
  rm -f "$dir/$name.pid"
  tail -n 30 "$dir/$name.log" >&2 || true
  die "$name did not start (log: $dir/$name.log)"
}

# gone_within DIR NAME TENTHS: whether DIR's NAME is gone within TENTHS tenths of a second.
gone_within() {
  local i
  for ((i = 0; i < $3; i++)); do
    live_pid "$1" "$2" >/dev/null || return 0
    sleep 0.1
  done
  ! live_pid "$1" "$2" >/dev/null
}

# status_of DIR NAME...: "NAME running (pid P)" or "NAME stopped" for each; fails if any
# is stopped.
status_of() {
  local dir=$1 name pid rc=0
  shift
  for name in "$@"; do
    if pid="$(live_pid "$dir" "$name")"; then
      echo "$name running (pid $pid)"
    else
      echo "$name stopped"
      rc=1
    fi
  done
  return $rc
}

# Stops the process recorded in DIR/NAME.pid: TERM, then KILL after 10 s. Succeeds when
# nothing (of ours) is running.
STOPPED_PIDS=()
stop_process() {
  local dir=$1 name=$2 pid
  if pid="$(live_pid "$dir" "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! gone_within "$dir" "$name" 100; then
      log "$name (pid $pid) ignored TERM for 10 s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      gone_within "$dir" "$name" 50 || die "$name (pid $pid) is still running"
    fi
    STOPPED_PIDS+=("$pid")
  fi
  rm -f "$dir/$name.pid"
}

# The daemons were re-parented to init when `up` exited; until init reaps them they
# linger as zombies (init here reaps only every second or two), which `pgrep etcd` still
# lists. Wait briefly (bounded) for that so callers see a clean process table.
wait_reaped() {
  local pid i
  for pid in "${STOPPED_PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      [ -e "/proc/$pid" ] || break
      sleep 0.1
    done
  done
  STOPPED_PIDS=()
}

# --- credentials ----------------------------------------------------------------------

# The token of USER in DIR/tokens.csv (--token-auth-file: token,user,uid,"groups").
token_of() {
  awk -F, -v u="$2" '$2 == u { print $1; exit }' "$1/tokens.csv"
}

# write_kubeconfig DIR FILE USER TOKEN URL: a kubeconfig (mode 600) with USER's token,
# trusting DIR/ca.crt.
write_kubeconfig() {
  local dir=$1 file=$2 user=$3 token=$4 url=$5 ca
  ca="$(base64 -w0 <"$dir/ca.crt")"
  : >"$file"
  chmod 600 "$file"
  cat >>"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $url
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@local
  context:
    cluster: local
    user: $user
    namespace: default
current-context: $user@local
EOF
}

# --- sample objects -------------------------------------------------------------------

# source_yaml NAMESPACE CLASS VOLUME CLAIM: a StorageClass of ebs.csi.aws.com, a 10Gi CSI
# PersistentVolume reserved for NAMESPACE/CLAIM (claimRef), and that claim, for
# `kubectl apply -f -`. A controller-manager binds them; without one, `local-cluster.sh
# bind` does what it would.
source_yaml() {
  local ns=$1 class=$2 pv=$3 claim=$4
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $class}
provisioner: ebs.csi.aws.com
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $pv}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: $class
  claimRef: {namespace: $ns, name: $claim}
  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-$pv}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $claim, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $class
  resources: {requests: {storage: 10Gi}}
EOF
}
