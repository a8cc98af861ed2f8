#!/usr/bin/env bash
# The load, memory and start-up benchmark of pvc-clone-guard, as SPEC §7 says to measure:
# the release binary over TLS and HTTP/1.1 keep-alive, load from wrk with post.lua (a
# realistic AdmissionReview with managedFields; any non-2xx is an error), the server pinned
# to one core and wrk to the other, alternated with the limit server (limit_server.rs),
# medians of ROUNDS rounds compared as ratios.
#
#   benches/load/run.sh              full run (~13 minutes on a quiet machine; longer when
#                                    other work disturbs runs, see MAX_OTHER_LOAD)
#   QUICK=1 benches/load/run.sh      a fast check (~2 minutes): 1 round of 3 s at 16
#                                    connections, 2,000 + 2,000 bulk objects
#
# What it does, everything on 127.0.0.1 and cleaned up on exit (processes by pid):
#   1. builds target/release/pvc-clone-guard and the limit server example;
#   2. starts etcd + kube-apiserver 1.20 (tests/cluster/local-cluster.sh) in a temp dir,
#      creates namespace bench, StorageClass gp3 (ebs.csi.aws.com), a 10Gi CSI PV and
#      claim "data" bound to it, and binds the shipped ClusterRole to the webhook's user
#      (webhook.kubeconfig), as dev-env.sh does; the webhook is NOT registered with the
#      API server (nothing calls it but wrk);
#   3. time to ready on the small cluster: READY_SAMPLES fresh webhooks, process start to
#      /readyz 200 (polled every 10 ms), and their idle RSS;
#   4. starts, each pinned to WEBHOOK_CPU: the webhook with the default rules ("webhook"),
#      the webhook with `rules: {source-in-use: off}` ("webhook-siu-off"), the limit
#      server ("limit"), and an idle webhook that gets no load ("idle", for memory);
#      checks once with curl that each answers both bodies allowed:true with their uid;
#   5. ROUNDS rounds; in each, for body plain then clone, for each of CONNECTIONS, wrk
#      (pinned to WRK_CPU) against the targets one after the other: plain -> webhook,
#      limit; clone -> webhook-siu-off, limit, and (only at CLONE_DEFAULT_CONNECTIONS)
#      webhook with the default rules (source-in-use on). Around each webhook
#      clone run: the API server's request counters (apiserver_request_total, admin
#      token) and pvc_clone_guard_api_lookup_errors_total. Around every run: the target's
#      CPU time (/proc/PID/stat), so CPU µs per review is known even if wrk were the
#      bottleneck, and the busy time of both cores not charged to the target, wrk,
#      kube-apiserver or etcd (other work on the machine: such runs are run again);
#   6. creates BULK PVCs (namespace bench-bulk) and BULK PVs, waits until the idle
#      webhook's pvc_clone_guard_cached_objects reports them all, and reads its RSS;
#   7. time to ready with the bulk objects: READY_SAMPLES fresh webhooks;
#   8. prints the tables (summarize.py) and writes them with the raw data to OUT.
#
# Environment (defaults in brackets, QUICK=1 changes the starred ones):
#   ROUNDS [3*]  DURATION [10s*]  CONNECTIONS ["1 4 16 64"*]  CLONE_DEFAULT_CONNECTIONS [16]
#   BULK [10000*] (0: no bulk objects)  READY_SAMPLES [3*]  WEBHOOK_CPU [0]  WRK_CPU [1]
#   MAX_OTHER_LOAD [10] (%) RETRIES [2]: a run during which other processes (a build, a
#     test; not kube-apiserver and etcd) took more than MAX_OTHER_LOAD % of a core is run again, up
#     to RETRIES times, and marked "disturbed" in the results if it still was; before each
#     run, up to WAIT_QUIET [30] seconds are spent waiting for a quiet second
#   LOG_FORMAT [json: the binary's default]  RUST_LOG [info: the binary's default]
#   OUT [target/load-bench/DATE]  KEEP=1 keeps the temp dir (logs, kubeconfigs)
#   SKIP_BUILD=1 uses the binaries already in target/release
#   PROFILE=1  instead of the load, memory and start-up runs: perf record (cpu-clock, DWARF
#     call graphs) of each target under wrk at PROFILE_CONNECTIONS [16] for PROFILE_SECONDS
#     [5], and a breakdown of the CPU time per review by component (perf_breakdown.py)
#   COMMIT  what to call the code measured in the report (default: git rev-parse HEAD)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
CLUSTER_SH="$REPO/tests/cluster/local-cluster.sh"

if [ "${QUICK:-0}" = 1 ]; then
  ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-3s} CONNECTIONS=${CONNECTIONS:-16}
  BULK=${BULK:-2000} READY_SAMPLES=${READY_SAMPLES:-1}
else
  ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-"1 4 16 64"}
  BULK=${BULK:-10000} READY_SAMPLES=${READY_SAMPLES:-3}
fi
CLONE_DEFAULT_CONNECTIONS=${CLONE_DEFAULT_CONNECTIONS:-16}
WEBHOOK_CPU=${WEBHOOK_CPU:-0}
MAX_OTHER_LOAD=${MAX_OTHER_LOAD:-10}
RETRIES=${RETRIES:-2}
WAIT_QUIET=${WAIT_QUIET:-30}
WRK_CPU=${WRK_CPU:-1}
LOG_FORMAT=${LOG_FORMAT:-json}
export RUST_LOG=${RUST_LOG:-info}
OUT=${OUT:-$REPO/target/load-bench/$(date +%Y%m%d-%H%M%S)}
BIN="$REPO/target/release/pvc-clone-guard"
LIMIT_BIN="$REPO/target/release/examples/limit-server"
PLAIN_BODY="$SCRIPT_DIR/review-plain.json"
CLONE_BODY="$SCRIPT_DIR/review-clone.json"

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for tool in wrk taskset curl jq python3 kubectl; do
  command -v "$tool" >/dev/null || die "$tool is required (tests/cluster/install.sh installs wrk and jq)"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs: the server on one, wrk on the other"

# --- bookkeeping: everything we start is recorded by pid and stopped by pid -------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-bench.XXXXXX")"
CLUSTER="$WORK/cluster"
declare -A PID=() PORT=() ADMIN=()
STARTED=()

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ -d "$CLUSTER" ]; then
    "$CLUSTER_SH" down "$CLUSTER" >/dev/null 2>&1 || log "warning: local-cluster.sh down $CLUSTER failed"
  fi
  if [ "${KEEP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ -n "$(ls -A "$WORK")" ]; }; then
    log "kept $WORK (logs of the run)"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

now_ns() { date +%s%N; }

# Field of /proc/PID/status in KiB (VmRSS, VmHWM, RssAnon...).
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# utime + stime of PID, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# utime + stime of kube-apiserver and etcd together, in clock ticks.
cluster_ticks() {
  local name pid sum=0
  for name in kube-apiserver etcd; do
    pid=$(tr -dc '0-9' <"$CLUSTER/$name.pid" 2>/dev/null) || true
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
      sum=$((sum + $(cpu_ticks "$pid")))
    fi
  done
  echo "$sum"
}

# Busy clock ticks of CPU N (user nice system irq softirq steal), from /proc/stat.
core_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

metric() { # metric ADMIN_URL NAME_WITH_LABELS -> value (sum over matching lines), 0 if none
  curl -fsS --max-time 5 "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {print s + 0}'
}

# --- build ----------------------------------------------------------------------------

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building the release binary and the limit server"
  (cd "$REPO" && cargo build --release --quiet && cargo build --release --quiet --example limit-server)
fi
if [ ! -x "$BIN" ] || [ ! -x "$LIMIT_BIN" ]; then
  die "missing $BIN or $LIMIT_BIN"
fi
mkdir -p "$OUT" "$WORK/logs"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# --- the control plane and the objects the clone review names ---------------------------

log "starting etcd + kube-apiserver in $CLUSTER"
"$CLUSTER_SH" up "$CLUSTER"
# shellcheck disable=SC1091
source "$CLUSTER/cluster.env"
k() { kubectl --kubeconfig "$CLUSTER/admin.kubeconfig" "$@"; }
apiserver_get() {
  curl -fsS --max-time 10 --cacert "$CLUSTER_CA_FILE" -H "Authorization: Bearer $ADMIN_TOKEN" "$APISERVER_URL$1"
}

"$CLUSTER_SH" namespace "$CLUSTER" bench
k apply -f - >/dev/null <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gp3
provisioner: ebs.csi.aws.com
parameters:
  type: gp3
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-data
  annotations:
    pv.kubernetes.io/provisioned-by: ebs.csi.aws.com
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: gp3
  volumeMode: Filesystem
  csi:
    driver: ebs.csi.aws.com
    volumeHandle: vol-0123456789abcdef0
    fsType: ext4
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: bench
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 10Gi
  storageClassName: gp3
  volumeMode: Filesystem
EOF
"$CLUSTER_SH" bind "$CLUSTER" bench data pv-data

# The webhook runs as its own user, bound only to the shipped ClusterRole (as dev-env.sh).
k apply -f "$REPO/manifests/base/clusterrole.yaml" >/dev/null
k create clusterrolebinding pvc-clone-guard-bench --clusterrole=pvc-clone-guard \
  --user=pvc-clone-guard >/dev/null

"$BIN" certs --out-dir "$WORK/certs" --dns localhost --ip 127.0.0.1 >/dev/null
CA="$WORK/certs/ca.crt"
printf 'rules:\n  source-in-use: off\n' >"$WORK/siu-off.yaml"
: >"$WORK/default.yaml" # every rule at its default

# --- processes under test ---------------------------------------------------------------

# start_webhook NAME CONFIG: pinned to WEBHOOK_CPU, waits for /readyz 200 (10 ms polls),
# sets READY_MS to the time from just before exec to the first 200.
start_webhook() {
  local name=$1 config=$2 port admin t0 t1 pid
  port=$(free_port)
  admin=$(free_port)
  t0=$(now_ns)
  KUBECONFIG="$CLUSTER/webhook.kubeconfig" taskset -c "$WEBHOOK_CPU" "$BIN" serve \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --config "$config" --log-format "$LOG_FORMAT" \
    >>"$WORK/logs/$name.log" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  while ! curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$admin/readyz" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$WORK/logs/$name.log" >&2
      die "webhook $name exited before it was ready"
    fi
    if [ $(($(now_ns) - t0)) -gt 60000000000 ]; then
      tail -n 20 "$WORK/logs/$name.log" >&2
      die "webhook $name not ready after 60 s"
    fi
    sleep 0.01
  done
  t1=$(now_ns)
  READY_MS=$(((t1 - t0) / 1000000))
  PID[$name]=$pid PORT[$name]=$port ADMIN[$name]=http://127.0.0.1:$admin
}

stop_target() {
  local name=$1 pid=${PID[$1]}
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  unset "PID[$name]"
  local kept=() p
  for p in "${STARTED[@]}"; do
    [ "$p" = "$pid" ] || kept+=("$p")
  done
  STARTED=("${kept[@]}")
}

start_limit() {
  local port pid
  port=$(free_port)
  taskset -c "$WEBHOOK_CPU" "$LIMIT_BIN" --tls-cert "$WORK/certs/tls.crt" \
    --tls-key "$WORK/certs/tls.key" --listen "127.0.0.1:$port" \
    >>"$WORK/logs/limit.log" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  for _ in $(seq 200); do
    grep -q listening "$WORK/logs/limit.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "limit server exited: $(cat "$WORK/logs/limit.log")"
    sleep 0.01
  done
  PID[limit]=$pid PORT[limit]=$port
}

# Time to ready, and the RSS a second after ready, of SAMPLES fresh webhooks.
measure_ready() {
  local label=$1 samples=$2 i
  for ((i = 1; i <= samples; i++)); do
    start_webhook "ready-$label" "$WORK/default.yaml"
    local ready=$READY_MS
    local pid=${PID[ready-$label]}
    sleep 1
    jq -cn --arg cl "$label" --argjson ready "$ready" \
      --argjson rss "$(status_kib "$pid" VmRSS)" --argjson hwm "$(status_kib "$pid" VmHWM)" \
      '{kind: "ready", cluster: $cl, ready_ms: $ready, rss_kib: $rss, hwm_kib: $hwm}' >>"$RESULTS"
    log "ready ($label cluster): ${ready} ms, VmRSS $(status_kib "$pid" VmRSS) KiB, VmHWM $(status_kib "$pid" VmHWM) KiB"
    stop_target "ready-$label"
  done
}

log "time to ready on the small cluster ($READY_SAMPLES fresh processes)"
measure_ready small "$READY_SAMPLES"

start_webhook idle "$WORK/default.yaml"
start_webhook webhook "$WORK/default.yaml"
start_webhook webhook-siu-off "$WORK/siu-off.yaml"
start_limit
sleep 1
jq -cn --argjson rss "$(status_kib "${PID[idle]}" VmRSS)" --argjson hwm "$(status_kib "${PID[idle]}" VmHWM)" \
  --argjson anon "$(status_kib "${PID[idle]}" RssAnon)" \
  '{kind: "memory", phase: "idle-small", rss_kib: $rss, hwm_kib: $hwm, anon_kib: $anon}' >>"$RESULTS"

# One answer per target and body, checked: allowed:true, the request's uid, no warning.
for target in webhook webhook-siu-off limit; do
  for body in "$PLAIN_BODY" "$CLONE_BODY"; do
    answer=$(curl -fsS --max-time 10 --cacert "$CA" -H 'Content-Type: application/json' \
      --data-binary "@$body" "https://127.0.0.1:${PORT[$target]}/validate") ||
      die "$target did not answer $(basename "$body")"
    uid=$(jq -r .request.uid "$body")
    jq -e --arg uid "$uid" '.response.allowed == true and .response.uid == $uid' <<<"$answer" >/dev/null ||
      die "$target answered $(basename "$body") with $answer"
    if [ "$target" = webhook-siu-off ] || [ "$target" = webhook ]; then
      jq -e '.response.warnings == null' <<<"$answer" >/dev/null || die "$target warned: $answer"
    fi
    log "checked: $target answers $(basename "$body") allowed:true ($answer)"
  done
done

# --- PROFILE=1: where the CPU time of a review goes, instead of the load runs --------------

if [ "${PROFILE:-0}" = 1 ]; then
  PROFILE_SECONDS=${PROFILE_SECONDS:-5}
  PROFILE_CONNECTIONS=${PROFILE_CONNECTIONS:-16}
  perf record -e cpu-clock -o "$WORK/perf-check.data" -- true >/dev/null 2>&1 ||
    die "perf record does not work here (apt-get install linux-perf; kernel.perf_event_paranoid)"
  hz=$(getconf CLK_TCK)
  declare -A US=()
  for spec in webhook:plain limit:plain webhook-siu-off:clone limit:clone; do
    target=${spec%%:*} body=${spec#*:}
    file=$([ "$body" = plain ] && echo "$PLAIN_BODY" || echo "$CLONE_BODY")
    pid=${PID[$target]}
    ticks0=$(cpu_ticks "$pid")
    BODY_FILE="$file" taskset -c "$WRK_CPU" wrk -t1 -c"$PROFILE_CONNECTIONS" -d$((PROFILE_SECONDS + 4))s \
      --latency -s "$SCRIPT_DIR/post.lua" "https://127.0.0.1:${PORT[$target]}/validate" >"$WORK/wrk-$spec.out" 2>&1 &
    wrk_pid=$!
    sleep 2
    # cpu-clock: a software event, so it works where hardware counters are not exposed;
    # DWARF call graphs because release builds have no frame pointers.
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,32768 -p "$pid" \
      -o "$OUT/perf-$target-$body.data" -- sleep "$PROFILE_SECONDS" >/dev/null 2>&1
    wait "$wrk_pid"
    ticks1=$(cpu_ticks "$pid")
    requests=$(sed -n 's/^WRK_RESULT //p' "$WORK/wrk-$spec.out" | jq .requests)
    US[$spec]=$(awk -v t=$((ticks1 - ticks0)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    log "profiled $target with $body: $requests reviews, ${US[$spec]} µs of CPU per review (perf running)"
  done
  for spec in webhook:plain limit:plain webhook-siu-off:clone limit:clone; do
    target=${spec%%:*} body=${spec#*:}
    {
      echo "## $target, body $body: ${US[$spec]} µs CPU per review (including perf's overhead)"
      perf script --no-inline -i "$OUT/perf-$target-$body.data" 2>/dev/null |
        python3 "$SCRIPT_DIR/perf_breakdown.py" "${US[$spec]}"
      echo
    } | tee "$OUT/profile-$target-$body.txt"
  done
  log "perf data: $OUT/perf-*.data (perf report -i FILE --children)"
  exit 0
fi

# --- load -----------------------------------------------------------------------------

api_counts() { # -> "all_resource_requests pod_lists"
  apiserver_get /metrics | awk '
    /^apiserver_request_total\{/ {
      if ($0 !~ /[{,]resource=""/) all += $NF
      if ($0 ~ /resource="pods"/ && $0 ~ /verb="LIST"/) pods += $NF
    }
    END {printf "%d %d\n", all, pods}'
}

# One wrk run; prints its JSON result line. Besides wrk's figures: the target's CPU time,
# the busy time of both cores (/proc/stat) and wrk's own CPU time, so that load from other
# processes on this machine (a build, another test) shows up as "other" on either core.
wrk_once() { # wrk_once TARGET BODY_NAME CONNECTIONS ROUND
  local target=$1 body=$2 conns=$3 round=$4 file pid ticks0 ticks1 core0 core1 wcore0 wcore1
  local cluster0 cluster1
  local api0=0 pods0=0 api1=0 pods1=0 lerr0=0 lerr1=0 admin="" line
  file=$([ "$body" = plain ] && echo "$PLAIN_BODY" || echo "$CLONE_BODY")
  pid=${PID[$target]}
  if [ "$target" != limit ]; then
    admin=${ADMIN[$target]}
  fi
  if [ -n "$admin" ] && [ "$body" = clone ]; then
    read -r api0 pods0 < <(api_counts)
    lerr0=$(metric "$admin" pvc_clone_guard_api_lookup_errors_total)
  fi
  ticks0=$(cpu_ticks "$pid")
  cluster0=$(cluster_ticks)
  core0=$(core_busy "$WEBHOOK_CPU")
  wcore0=$(core_busy "$WRK_CPU")
  # wrk's own CPU time, from its rusage as a child of a small wrapper.
  BODY_FILE="$file" EXPECT='"allowed":true' python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f\n" % (r.ru_utime + r.ru_stime))
sys.exit(rc)' "$WORK/wrk.cpu" taskset -c "$WRK_CPU" \
    wrk -t1 -c"$conns" -d"$DURATION" --latency -s "$SCRIPT_DIR/post.lua" \
    "https://127.0.0.1:${PORT[$target]}/validate" >"$WORK/wrk.out" 2>&1 ||
    die "wrk failed: $(cat "$WORK/wrk.out")"
  ticks1=$(cpu_ticks "$pid")
  core1=$(core_busy "$WEBHOOK_CPU")
  wcore1=$(core_busy "$WRK_CPU")
  cluster1=$(cluster_ticks)
  if [ -n "$admin" ] && [ "$body" = clone ]; then
    read -r api1 pods1 < <(api_counts)
    lerr1=$(metric "$admin" pvc_clone_guard_api_lookup_errors_total)
  fi
  line=$(sed -n 's/^WRK_RESULT //p' "$WORK/wrk.out")
  [ -n "$line" ] || die "no WRK_RESULT from wrk: $(cat "$WORK/wrk.out")"
  jq -c --arg target "$target" --arg body "$body" --argjson conns "$conns" --argjson round "$round" \
    --argjson ticks $((ticks1 - ticks0)) --argjson hz "$(getconf CLK_TCK)" \
    --argjson core $((core1 - core0)) --argjson wcore $((wcore1 - wcore0)) --argjson wcpu "$(cat "$WORK/wrk.cpu")" \
    --argjson cluster $((cluster1 - cluster0)) \
    --argjson api $((api1 - api0)) --argjson pods $((pods1 - pods0)) \
    --argjson lerr "$(awk -v a="$lerr0" -v b="$lerr1" 'BEGIN {print b - a}')" \
    --arg measured "$([ -n "$admin" ] && [ "$body" = clone ] && echo true || echo false)" \
    '. + {kind: "load", target: $target, body: $body, conns: $conns, round: $round,
          cpu_s: ($ticks / $hz), core_busy_s: ($core / $hz),
          wrk_cpu_s: $wcpu, wrk_core_busy_s: ($wcore / $hz),
          other_server_core: ((($core - $ticks) / $hz) * 1e6 / .duration_us),
          other_wrk_core: ((($wcore / $hz) - $wcpu) * 1e6 / .duration_us),
          apiserver_etcd_cpu_s: ($cluster / $hz),
          other_outside_cluster: (((($core + $wcore - $ticks - $cluster) / $hz) - $wcpu) * 1e6 / .duration_us),
          api_measured: ($measured == "true"),
          api_requests: $api, pod_lists: $pods, lookup_errors: $lerr}' <<<"$line"
}

# Waits (at most WAIT_QUIET seconds) for a second in which neither core was busier than
# MAX_OTHER_LOAD %: between runs our own processes are idle, so that is other work.
wait_quiet() {
  local deadline=$((SECONDS + WAIT_QUIET)) a0 a1 b0 b1 hz
  hz=$(getconf CLK_TCK)
  while :; do
    a0=$(core_busy "$WEBHOOK_CPU") a1=$(core_busy "$WRK_CPU")
    sleep 1
    b0=$(core_busy "$WEBHOOK_CPU") b1=$(core_busy "$WRK_CPU")
    if [ $(((b0 - a0) * 100 / hz)) -le "$MAX_OTHER_LOAD" ] && [ $(((b1 - a1) * 100 / hz)) -le "$MAX_OTHER_LOAD" ]; then
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "the machine is still busy (cores $(((b0 - a0) * 100 / hz))% and $(((b1 - a1) * 100 / hz))%) after ${WAIT_QUIET}s; measuring anyway"
      return 0
    fi
  done
}

# A run during which other processes took more than MAX_OTHER_LOAD % of either core is
# run again, up to RETRIES times; the last attempt is kept (marked "disturbed" if still so).
run_wrk() { # run_wrk TARGET BODY_NAME CONNECTIONS ROUND
  local attempt result disturbed
  for ((attempt = 0; attempt <= RETRIES; attempt++)); do
    wait_quiet
    result=$(wrk_once "$@")
    # Busy time of both cores not charged to the target, wrk, kube-apiserver or etcd (the
    # API server's work for the webhook's requests is part of the run).
    disturbed=$(jq --argjson max "$MAX_OTHER_LOAD" '.other_outside_cluster * 100 > $max' <<<"$result")
    [ "$disturbed" = true ] || break
    log "$(jq -r '"disturbed: other processes took \((.other_outside_cluster * 100) | floor)% of a core (server core \((.other_server_core * 100) | floor)%, wrk core \((.other_wrk_core * 100) | floor)%, API server and etcd included there)"' <<<"$result")$([ "$attempt" -lt "$RETRIES" ] && echo "; running it again")"
  done
  jq -c --argjson d "$disturbed" --argjson a "$attempt" '. + {disturbed: $d, retries: ([$a, '"$RETRIES"'] | min)}' \
    <<<"$result" >>"$RESULTS"
  log "$(jq -r '"round \(.round) \(.body) c=\(.conns) \(.target): \(.rps|floor) req/s p50 \(.p50_us) p99 \(.p99_us) µs, errors \(.non2xx + .unexpected + .socket_errors), server CPU \((.cpu_s * 1e6 / .requests) * 10 | floor / 10) µs/review, other load \((.other_server_core * 100) | floor)%/\((.other_wrk_core * 100) | floor)%" + (if .api_measured then ", API requests \(.api_requests) (pod lists \(.pod_lists)), lookup errors \(.lookup_errors)" else "" end)' <<<"$(tail -n 1 "$RESULTS")")"
  # One log line per review adds up to gigabytes over a full run: keep the files small.
  if [ "$1" != limit ]; then
    : >"$WORK/logs/$1.log"
  fi
}

log "load: $ROUNDS round(s) of $DURATION per run, connections: $CONNECTIONS"
for ((round = 1; round <= ROUNDS; round++)); do
  for conns in $CONNECTIONS; do
    run_wrk webhook plain "$conns" "$round"
    run_wrk limit plain "$conns" "$round"
  done
  for conns in $CONNECTIONS; do
    run_wrk webhook-siu-off clone "$conns" "$round"
    run_wrk limit clone "$conns" "$round"
    for c in $CLONE_DEFAULT_CONNECTIONS; do
      if [ "$c" = "$conns" ]; then
        run_wrk webhook clone "$conns" "$round"
      fi
    done
  done
done

for target in webhook webhook-siu-off limit idle; do
  jq -cn --arg target "$target" --argjson rss "$(status_kib "${PID[$target]}" VmRSS)" \
    --argjson hwm "$(status_kib "${PID[$target]}" VmHWM)" \
    '{kind: "memory", phase: "after-load", target: $target, rss_kib: $rss, hwm_kib: $hwm}' >>"$RESULTS"
done

# --- memory with BULK claims and BULK volumes -------------------------------------------

if [ "$BULK" -gt 0 ]; then # (not indented: the Python below is a here-document)

log "creating $BULK PVCs and $BULK PVs"
k create namespace bench-bulk >/dev/null
mkdir -p "$WORK/bulk"
python3 - "$BULK" "$WORK/bulk" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
labels = {"app.kubernetes.io/name": "orders-db", "app.kubernetes.io/instance": "orders-db-prod",
          "app.kubernetes.io/component": "database", "environment": "production"}
def pv(i):
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"bulk-pv-{i:05d}", "labels": labels,
                         "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com",
                                         "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                                         "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""},
                         "finalizers": ["kubernetes.io/pv-protection", "external-provisioner.volume.kubernetes.io/finalizer"]},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp3",
                     "volumeMode": "Filesystem",
                     "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": "bench-bulk",
                                  "name": f"bulk-pvc-{i:05d}"},
                     "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{i:017x}", "fsType": "ext4",
                             "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "1763712000000-8081-ebs.csi.aws.com"}},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["eu-west-1a"]}]}]}}}}
def pvc(i):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"bulk-pvc-{i:05d}", "namespace": "bench-bulk", "labels": labels,
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                         "pv.kubernetes.io/bound-by-controller": "yes",
                                         "volume.beta.kubernetes.io/storage-provisioner": "ebs.csi.aws.com",
                                         "volume.kubernetes.io/selected-node": "ip-10-0-1-23.eu-west-1.compute.internal",
                                         "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                     "storageClassName": "gp3", "volumeMode": "Filesystem", "volumeName": f"bulk-pv-{i:05d}"}}
chunk = 500
for start in range(0, n, chunk):
    for kind, make in (("pv", pv), ("pvc", pvc)):
        items = [make(i) for i in range(start, min(n, start + chunk))]
        with open(f"{out}/{kind}-{start:05d}.json", "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
PY
bulk_t0=$SECONDS
find "$WORK/bulk" -name '*.json' -print0 | xargs -0 -P 4 -I{} kubectl --kubeconfig "$CLUSTER/admin.kubeconfig" create -f {} -o name >/dev/null ||
  die "creating the bulk objects failed"
log "created $((2 * BULK)) objects in $((SECONDS - bulk_t0)) s"

wait_cached() { # wait_cached RESOURCE COUNT
  local deadline=$((SECONDS + 300)) n
  while :; do
    n=$(metric "${ADMIN[idle]}" "pvc_clone_guard_cached_objects{resource=\"$1\"}")
    [ "$n" -ge "$2" ] && break
    [ $SECONDS -lt $deadline ] || die "idle webhook caches only $n $1 after 300 s"
    sleep 0.5
  done
}
wait_cached persistentvolumeclaims $((BULK + 1))
wait_cached persistentvolumes $((BULK + 1))
sleep 2
jq -cn --argjson rss "$(status_kib "${PID[idle]}" VmRSS)" --argjson hwm "$(status_kib "${PID[idle]}" VmHWM)" \
  --argjson anon "$(status_kib "${PID[idle]}" RssAnon)" --argjson bulk "$BULK" \
  --argjson pvcs "$(metric "${ADMIN[idle]}" 'pvc_clone_guard_cached_objects{resource="persistentvolumeclaims"}')" \
  --argjson pvs "$(metric "${ADMIN[idle]}" 'pvc_clone_guard_cached_objects{resource="persistentvolumes"}')" \
  '{kind: "memory", phase: "idle-bulk", bulk: $bulk, cached_pvcs: $pvcs, cached_pvs: $pvs,
    rss_kib: $rss, hwm_kib: $hwm, anon_kib: $anon}' >>"$RESULTS"
log "idle webhook with $BULK+$BULK objects cached: VmRSS $(status_kib "${PID[idle]}" VmRSS) KiB, VmHWM $(status_kib "${PID[idle]}" VmHWM) KiB"

log "time to ready with $BULK+$BULK objects ($READY_SAMPLES fresh processes)"
measure_ready bulk "$READY_SAMPLES"
fi

# --- report ---------------------------------------------------------------------------

{
  jq -cn --arg commit "${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
    --arg dirty "$(git -C "$REPO" status --porcelain -- src Cargo.toml 2>/dev/null | wc -l)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --arg nproc "$(nproc --all)" --arg kernel "$(uname -r)" \
    --arg wrk "$(wrk --version 2>&1 | head -n 1 | awk '{print $1, $2}')" \
    --arg rounds "$ROUNDS" --arg duration "$DURATION" --arg conns "$CONNECTIONS" \
    --arg bulk "$BULK" --arg log_format "$LOG_FORMAT" --arg rust_log "$RUST_LOG" \
    '{kind: "meta", commit: $commit, uncommitted_src_changes: ($dirty | tonumber), cpu: $cpu,
      nproc: $nproc, kernel: $kernel, wrk: $wrk, rounds: $rounds, duration: $duration,
      connections: $conns, bulk: $bulk, log_format: $log_format, rust_log: $rust_log}'
} >>"$RESULTS"
python3 "$SCRIPT_DIR/summarize.py" "$RESULTS" | tee "$OUT/summary.md"
log "raw results: $RESULTS; tables: $OUT/summary.md"
