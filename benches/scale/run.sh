#!/usr/bin/env bash
# The scale benchmark of pvc-clone-guard (SPEC §7, issue "never break the cluster"): start-up
# memory and time to ready against a real kube-apiserver holding many PVCs, PVs and realistic
# Pods (3 containers with a dozen env vars each, probes, resources, 5 volumes one of which is
# a claim, and the managedFields the API server records on create).
#
#   benches/scale/run.sh                  SIZES="10000 50000" (about 25 minutes in all)
#   SIZES=2000 benches/scale/run.sh       a quick check
#
# For each size N (cumulative: the objects of the smaller size stay): creates N PVCs, N PVs
# and N Pods, then SAMPLES [2] times starts a fresh release webhook (default rules, so pods
# are watched) and records: time from process start to /readyz 200, time until every cache
# reports pvc_clone_guard_cache_synced 1, peak RSS (VmHWM) and RSS once synced and idle.
# One more run with `source-in-use: off` shows what not watching pods saves. A run gives up
# after SYNC_DEADLINE [600] s (on a loaded machine 50,000 pods take minutes to list). Results are
# printed as a table and written to OUT [target/scale-bench/DATE] with the raw JSON lines.
# Then, unless PROFILE=0 (or heaptrack is missing), one more webhook with the default rules
# runs under heaptrack at the largest size until every cache is synced: OUT/heap-profile.txt
# has the heap at its peak and what is still allocated at exit (the caches), by allocation site.
# Everything runs on 127.0.0.1 and is cleaned up on exit (processes by recorded pid).
#
# For comparisons (A/B) on one populated API server:
#   CLUSTER_DIR=DIR   the local cluster lives in DIR and is kept on exit: started there if it
#                     is not running (etcd's data survives), and the objects it already holds
#                     (counted per kind) are not created again; stop it with
#                     `tests/cluster/local-cluster.sh down DIR`
#   BINS="A B ..."    release binaries to measure, alternated within each sample (default:
#                     target/release/pvc-clone-guard); each result line names its binary
#   SIU_OFF=0         skip the `source-in-use: off` run
#   CREATE_ONLY=1     create the objects of each size and measure nothing
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
CLUSTER_SH="$REPO/tests/cluster/local-cluster.sh"
SIZES=${SIZES:-"10000 50000"}
SAMPLES=${SAMPLES:-2}
OUT=${OUT:-$REPO/target/scale-bench/$(date +%Y%m%d-%H%M%S)}
BINS=${BINS:-"$REPO/target/release/pvc-clone-guard"}
BIN=${BINS%% *}

log() { echo "[scale] $*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-scale.XXXXXX")"
CLUSTER="${CLUSTER_DIR:-$WORK/cluster}"
WEBHOOK_PID=""
cleanup() {
  [ -n "$WEBHOOK_PID" ] && kill "$WEBHOOK_PID" 2>/dev/null
  [ -n "${CLUSTER_DIR:-}" ] || "$CLUSTER_SH" down "$CLUSTER" >/dev/null 2>&1 || true
  [ "${KEEP:-0}" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$REPO" && cargo build --release --quiet)
if ! { [ -n "${CLUSTER_DIR:-}" ] && "$CLUSTER_SH" status "$CLUSTER" >/dev/null 2>&1; }; then
  mkdir -p "$CLUSTER"
  "$CLUSTER_SH" up "$CLUSTER" >/dev/null
fi
k() { kubectl --kubeconfig "$CLUSTER/admin.kubeconfig" "$@"; }
"$CLUSTER_SH" namespace "$CLUSTER" scale >/dev/null
k apply -f - >/dev/null <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: gp3}
provisioner: ebs.csi.aws.com
parameters: {type: gp3, encrypted: "true"}
EOF

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
"$BIN" certs --out-dir "$WORK/certs" --dns localhost --ip 127.0.0.1 >/dev/null
printf 'rules: {source-in-use: off}\n' >"$WORK/siu-off.yaml"
: >"$WORK/default.yaml"

# generate FROM TO DIR: JSON lists of 500 PVs, PVCs and Pods each.
generate() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
lo, hi, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
labels = {"app.kubernetes.io/name": "orders", "app.kubernetes.io/instance": "orders-prod",
          "app.kubernetes.io/component": "api", "environment": "production"}
def pv(i):
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{i:06d}", "labels": labels,
                         "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com"},
                         "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp3",
                     "volumeMode": "Filesystem",
                     "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": "scale",
                                  "name": f"data-{i:06d}"},
                     "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{i:017x}", "fsType": "ext4",
                             "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "1763712000000-8081-ebs.csi.aws.com"}},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["eu-west-1a"]}]}]}}}}
def pvc(i):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"data-{i:06d}", "namespace": "scale", "labels": labels,
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                         "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                     "storageClassName": "gp3", "volumeMode": "Filesystem", "volumeName": f"pv-{i:06d}"}}
def container(name, i):
    return {"name": name, "image": f"registry.example.com/orders/{name}:1.42.{i % 7}",
            "imagePullPolicy": "IfNotPresent",
            "args": ["--config=/etc/orders/config.yaml", "--log-format=json", f"--shard={i}"],
            "env": [{"name": f"ORDERS_SETTING_{j}", "value": f"value-{j}-{i}"} for j in range(10)]
                   + [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "orders-db", "key": "password"}}}],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 10},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "config", "mountPath": "/etc/orders"},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}}
def pod(i):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"orders-{i:06d}", "namespace": "scale",
                         "labels": dict(labels, **{"pod-template-hash": "7d9f8c6b5"}),
                         "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
                                         "prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
            "spec": {"containers": [container(n, i) for n in ("api", "worker", "sidecar")],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{i:06d}"}},
                                 {"name": "config", "configMap": {"name": "orders-config"}},
                                 {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                                 {"name": "certs", "secret": {"secretName": "orders-tls"}},
                                 {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
                     "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 30,
                     "nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "orders", "effect": "NoSchedule"}]}}
chunk = 500
for start in range(lo, hi, chunk):
    for kind, make in (("pv", pv), ("pvc", pvc), ("pod", pod)):
        items = [make(i) for i in range(start, min(hi, start + chunk))]
        with open(f"{out}/{kind}-{start:06d}.json", "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
PY
}

metric() { curl -fsS --max-time 5 "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }

# run LABEL SIZE CONFIG [BIN]: one fresh webhook, measured until synced and idle, then stopped.
run() {
  local label=$1 size=$2 config=$3 bin=${4:-$BIN} port admin t0 ready_ms="" synced_ms="" caches
  port=$(free_port)
  admin=$(free_port)
  t0=$(now_ms)
  KUBECONFIG="$CLUSTER/admin.kubeconfig" RUST_LOG=${RUST_LOG:-warn} "$bin" serve \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --config "$config" \
    --cache-sync-timeout 60s >>"$WORK/webhook.log" 2>&1 &
  WEBHOOK_PID=$!
  caches=4
  grep -q 'source-in-use: off' "$config" && caches=3
  local deadline=$((SECONDS + ${SYNC_DEADLINE:-600}))
  while :; do
    [ $SECONDS -lt $deadline ] || die "$label: not synced within ${SYNC_DEADLINE:-600} s"
    kill -0 "$WEBHOOK_PID" 2>/dev/null || die "$label: the webhook exited (see $WORK/webhook.log)"
    if [ -z "$ready_ms" ] && curl -fs --max-time 1 "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; then
      ready_ms=$(($(now_ms) - t0))
    fi
    if [ -n "$ready_ms" ] && [ "$(metric "http://127.0.0.1:$admin" 'pvc_clone_guard_cache_synced')" -ge "$caches" ]; then
      synced_ms=$(($(now_ms) - t0))
      break
    fi
    sleep 0.02
  done
  sleep 2
  local rss hwm pvcs pvs pods
  rss=$(status_kib "$WEBHOOK_PID" VmRSS)
  hwm=$(status_kib "$WEBHOOK_PID" VmHWM)
  pvcs=$(metric "http://127.0.0.1:$admin" 'pvc_clone_guard_cached_objects{resource="persistentvolumeclaims"}')
  pvs=$(metric "http://127.0.0.1:$admin" 'pvc_clone_guard_cached_objects{resource="persistentvolumes"}')
  pods=$(metric "http://127.0.0.1:$admin" 'pvc_clone_guard_cached_objects{resource="pods"}')
  kill -TERM "$WEBHOOK_PID"
  wait "$WEBHOOK_PID" 2>/dev/null || true
  WEBHOOK_PID=""
  jq -cn --arg rules "$label" --arg bin "$bin" --argjson size "$size" --argjson ready "$ready_ms" --argjson synced "$synced_ms" \
    --argjson rss "$rss" --argjson hwm "$hwm" --argjson pvcs "$pvcs" --argjson pvs "$pvs" --argjson pods "$pods" \
    '{rules: $rules, bin: $bin, objects_each: $size, ready_ms: $ready, synced_ms: $synced, rss_kib: $rss, peak_rss_kib: $hwm,
      cached_pvcs: $pvcs, cached_pvs: $pvs, cached_pods: $pods}' >>"$RESULTS"
  log "$label ($bin): ready ${ready_ms} ms, synced ${synced_ms} ms, peak RSS $((hwm / 1024)) MiB, RSS $((rss / 1024)) MiB ($pvcs PVCs, $pvs PVs, $pods pods cached)"
}

# profile SIZE: the default-rules webhook under heaptrack, stopped once every cache is synced.
profile() {
  local port admin heaptrack_pid app="" deadline=$((SECONDS + 600))
  port=$(free_port)
  admin=$(free_port)
  KUBECONFIG="$CLUSTER/admin.kubeconfig" RUST_LOG=warn heaptrack -o "$OUT/heaptrack" "$BIN" serve \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --config "$WORK/default.yaml" \
    --cache-sync-timeout 60s >>"$WORK/heaptrack.log" 2>&1 &
  heaptrack_pid=$!
  until [ "$(metric "http://127.0.0.1:$admin" 'pvc_clone_guard_cache_synced')" -ge 4 ]; do
    kill -0 "$heaptrack_pid" 2>/dev/null || { log "profile: heaptrack exited (see $WORK/heaptrack.log)"; return 1; }
    [ $SECONDS -lt $deadline ] || { log "profile: not synced within 600 s"; break; }
    sleep 1
  done
  sleep 2
  app=$(pgrep -P "$heaptrack_pid" -x pvc-clone-guard || true)
  [ -n "$app" ] && kill -TERM "$app"
  wait "$heaptrack_pid" || true
  {
    echo "# heaptrack of the release webhook, default rules, $1 of each kind, stopped once synced"
    heaptrack_print -f "$OUT"/heaptrack.* --print-peaks --print-leaks --peak-limit 12 --sub-peak-limit 3
  } >"$OUT/heap-profile.txt"
  log "heap profile: $OUT/heap-profile.txt ($(grep -E '^(peak heap memory consumption|total memory leaked)' "$OUT/heap-profile.txt" | tr '\n' ' '))"
}

# held PATH: how many objects the list at PATH holds (one item read, the rest counted).
held() { k get --raw "$1?limit=1" | jq '(.items | length) + (.metadata.remainingItemCount // 0)'; }

# The objects numbered from 0: a reused cluster already holds the first `have` of each kind
# (the fewest of the three, so that an interrupted creation is completed).
have=$(printf '%s\n' "$(held /api/v1/persistentvolumes)" "$(held /api/v1/namespaces/scale/persistentvolumeclaims)" \
  "$(held /api/v1/namespaces/scale/pods)" | sort -n | head -n 1)
have=$((have / 500 * 500))
[ "$have" -eq 0 ] || log "the cluster already holds $have of each kind"
for size in $SIZES; do
  if [ "$size" -gt "$have" ]; then
    log "creating objects $have..$size of each kind (PVCs, PVs, Pods)"
    mkdir -p "$WORK/objects-$size"
    generate "$have" "$size" "$WORK/objects-$size"
    t0=$SECONDS
    # Objects that exist already (a reused cluster's creation cut short mid-list) are
    # refused one by one and left; the counts are checked afterwards.
    find "$WORK/objects-$size" -name '*.json' -print0 | sort -z |
      xargs -0 -P 4 -I{} sh -c 'kubectl --kubeconfig "$1" create -f "$2" -o name 2>&1 >/dev/null | grep -v AlreadyExists >&2 || true' \
        create "$CLUSTER/admin.kubeconfig" {} || die "creating the objects failed"
    for list in /api/v1/persistentvolumes /api/v1/namespaces/scale/persistentvolumeclaims /api/v1/namespaces/scale/pods; do
      [ "$(held "$list")" -ge "$size" ] || die "$list holds $(held "$list") objects, not $size"
    done
    log "created $((3 * (size - have))) objects in $((SECONDS - t0)) s"
    have=$size
  fi
  [ "${CREATE_ONLY:-0}" = 1 ] && continue
  for ((i = 1; i <= SAMPLES; i++)); do
    for bin in $BINS; do
      run "default-rules" "$size" "$WORK/default.yaml" "$bin"
    done
  done
  if [ "${SIU_OFF:-1}" = 1 ]; then
    for bin in $BINS; do
      run "source-in-use-off" "$size" "$WORK/siu-off.yaml" "$bin"
    done
  fi
done
[ "${CREATE_ONLY:-0}" = 1 ] && exit 0

{
  echo "| objects of each kind | rules | ready (ms) | caches synced (ms) | peak RSS (MiB) | RSS synced, idle (MiB) | cached PVCs / PVs / pods |"
  echo "| ---: | --- | ---: | ---: | ---: | ---: | --- |"
  jq -r '"| \(.objects_each) | \(.rules)\(if $ab then " (" + (.bin | split("/") | last) + ")" else "" end) | \(.ready_ms) | \(.synced_ms) | \((.peak_rss_kib / 1024 * 10 | round) / 10) | \((.rss_kib / 1024 * 10 | round) / 10) | \(.cached_pvcs) / \(.cached_pvs) / \(.cached_pods) |"' --argjson ab "$([ "$BIN" = "$BINS" ] && echo false || echo true)" "$RESULTS"
} | tee "$OUT/summary.md"
log "raw results: $RESULTS"
if [ "${PROFILE:-1}" = 1 ] && command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null; then
  profile "$have" || log "no heap profile"
fi
