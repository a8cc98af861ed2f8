#!/usr/bin/env bash
# Installed as users install it, on a real node: tests/cluster/node.sh brings up a
# single-node Kubernetes 1.20.2 (containerd, kubelet, kube-proxy, controller-manager,
# scheduler, bridge CNI), tests/cluster/image.sh builds the image from the release binary
# and imports it, and tests/install.rs (one test at a time):
#   1. applies the shipped self-managed overlay with `kubectl apply -k`: both replicas
#      Ready, the API server calling them through the Service, exact verdicts;
#   2. rollout restart, a deleted pod and a certificate rotation while three clients keep
#      creating valid clones, invalid clones and plain claims: every verdict correct, no
#      restart, the probes as documented;
#   3. evictions through the Eviction API (what a node drain sends) under the same load: the
#      shipped PodDisruptionBudget lets one pod go and refuses the second (429) until the
#      first one's replacement is Ready; every verdict correct;
#   4. no replica, no lock-out: the shipped overlay with an image that does not start
#      leaves claims and clones creatable, and the real image then refuses a bad clone with
#      no other change than the pods restarting;
#   5. a namespace labelled pvc-clone-guard.io/skip, and a labelled claim, are not reviewed;
#   6. the pods within the Deployment's memory limit (cgroup) with the scale test's objects
#      in the cluster (PVC_CLONE_GUARD_NODE_SCALE of each kind, default 10000, the scale
#      benchmark's first size; its largest is 50000).
# Then the node is torn down and the host compared with a snapshot taken before: the
# suite fails if anything is left over (processes, mounts, iptables, cgroups, sysctls,
# links, network namespaces, files the node wrote outside its directory).
#
#   tests/node.sh               (root; about 5 minutes from a cached Kubernetes build)
#   tests/node.sh TEST...       only the named tests of tests/install.rs, in that order
#   NODE_KEEP=1 tests/node.sh   keep the node running afterwards (prints how to stop it)
set -euo pipefail
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(
    the_shipped_overlay_runs_on_a_real_node_and_is_called_through_its_service
    rollout_restart_a_deleted_pod_and_a_certificate_rotation_lose_no_verdict
    an_eviction_waits_for_the_disruption_budget_and_loses_no_verdict
    an_install_whose_image_does_not_start_locks_out_no_claim
    a_namespace_or_a_claim_labelled_skip_is_not_reviewed
    the_memory_limit_holds_with_the_scale_tests_objects_in_the_cluster
  )
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

[ "$(id -u)" -eq 0 ] || {
  echo "[node] a real node needs root (containerd, kubelet, iptables)" >&2
  exit 1
}

# Short: containerd's socket paths live under it.
DIR="$(mktemp -d /tmp/pcg-node.XXXXXX)"
BEFORE="$(mktemp /tmp/pcg-node-host.XXXXXX)"
started=$SECONDS

cleanup() {
  local status=$?
  if [ $status -ne 0 ] && [ -f "$DIR/admin.kubeconfig" ]; then
    echo "[node] failed; the webhook pods' last log lines:" >&2
    kubectl --kubeconfig "$DIR/admin.kubeconfig" logs -n pvc-clone-guard \
      -l app.kubernetes.io/name=pvc-clone-guard --tail=20 >&2 2>&1 || true
    kubectl --kubeconfig "$DIR/admin.kubeconfig" get pods -A -o wide >&2 2>&1 || true
  fi
  if [ "${NODE_KEEP:-0}" = 1 ]; then
    echo "[node] kept: $DIR (KUBECONFIG=$DIR/admin.kubeconfig; stop with tests/cluster/node.sh down $DIR)" >&2
    exit $status
  fi
  # The teardown itself compares with the snapshot `up` took; compare again with ours.
  tests/cluster/node.sh down "$DIR" || status=1
  if ! diff -u "$BEFORE" <(tests/cluster/node.sh snapshot) >&2; then
    echo "[node] FAIL: the host is not as it was before the node (diff above)" >&2
    status=1
  else
    echo "[node] ok: teardown left the host as it found it (processes, mounts, iptables, cgroups, sysctls, links, netns, files)" >&2
  fi
  rm -rf "$DIR" "$BEFORE"
  echo "[node] suite took $((SECONDS - started)) s" >&2
  exit $status
}
trap cleanup EXIT

tests/cluster/node.sh snapshot >"$BEFORE"
tests/cluster/node.sh up "$DIR"
node_status="$(kubectl --kubeconfig "$DIR/admin.kubeconfig" get nodes --no-headers -o custom-columns=NAME:.metadata.name,READY:'.status.conditions[?(@.type=="Ready")].status',IP:'.status.addresses[?(@.type=="InternalIP")].address')"
[ "$(tr -s ' ' <<<"$node_status")" = "pcg-node True 10.245.0.1" ] || {
  echo "[node] FAIL: node status: $node_status" >&2
  exit 1
}

cargo build --release --locked --quiet
tests/cluster/image.sh import "$DIR"
# tests/common reads the webhook's name from here.
echo "WEBHOOK_NAME=validate.pvc-clone-guard.io" >"$DIR/webhook.env"

cargo test --locked --test install --no-run --quiet
for test in "${TESTS[@]}"; do
  PVC_CLONE_GUARD_E2E_DIR="$DIR" cargo test --locked --quiet --test install -- \
    --ignored --exact "$test" --show-output
done
