#!/usr/bin/env bash
# End-to-end tests against a real local control plane with pvc-clone-guard registered
# (tests/cluster/dev-env.sh). Three suites, each on a control plane of its own, each torn
# down afterwards whatever happens:
#   1. tests/faults.rs, tests/resilience.rs, tests/snapshot_api.rs, one test at a time:
#      API-server faults (RBAC revoked, stopped, hung, restarted under load), a lagging
#      view of the API server, no pods RBAC, the snapshot API appearing
#   2. tests/operations.rs, one test at a time: the audit log's annotations, and a real
#      Prometheus raising and clearing the fail-closed alert (stops the API server)
#   3. tests/e2e.rs (every clone rule through kubectl; run first, while no CRD is installed),
#      tests/restores.rs (restores and cross-namespace grants, with the project's CRDs) and
#      tests/sources.rs (populators and group snapshots), one file after the other, the tests
#      of each in parallel
#   E2E_KEEP=1 tests/e2e.sh   keeps the environments (and prints where) for debugging.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DIRS=()
cleanup() {
  local status=$?
  for dir in "${DIRS[@]}"; do
    if [ "${E2E_KEEP:-0}" = 1 ]; then
      echo "[e2e] kept: $dir (stop with tests/cluster/dev-env.sh down $dir)" >&2
      continue
    fi
    tests/cluster/dev-env.sh down "$dir" >/dev/null 2>&1 || true
    if [ $status -ne 0 ] && [ -f "$dir/webhook.log" ]; then
      echo "[e2e] last lines of the webhook log in $dir:" >&2
      tail -n 40 "$dir/webhook.log" >&2 || true
    fi
    rm -rf "$dir"
  done
  exit $status
}
trap cleanup EXIT

# suite THREADS TEST...: a fresh control plane, the ignored tests of each tests/TEST.rs in
# turn, teardown.
suite() {
  local threads=$1 dir test
  shift
  dir="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-$1.XXXXXX")"
  DIRS+=("$dir")
  tests/cluster/dev-env.sh up "$dir" tests/cluster/e2e-config.yaml
  for test in "$@"; do
    PVC_CLONE_GUARD_E2E_DIR="$dir" cargo test --test "$test" -- --ignored --test-threads="$threads" --show-output
  done
  tests/cluster/dev-env.sh down "$dir" >/dev/null 2>&1
}

# The webhook runs as the release binary; the test binaries drive kubectl and the API, so
# the debug build that `cargo test` already made serves them (no release link per suite).
cargo build --release --quiet
suite 1 faults resilience snapshot_api
suite 1 operations
suite 4 e2e restores sources
suite 1 check_cluster
