#!/usr/bin/env bash
# End-to-end tests against a real local control plane with pvc-clone-guard registered
# (tests/cluster/dev-env.sh). Three suites, each on a control plane of its own, each torn
# down afterwards whatever happens:
#   tests/e2e.rs         every rule through kubectl, in parallel
#   tests/faults.rs      API-server faults (RBAC revoked, stopped, hung), one at a time
#   tests/operations.rs  the audit log's annotations, and a real Prometheus raising and
#                        clearing the fail-closed alert (stops the API server; ~2 minutes)
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

# suite TEST THREADS: a fresh control plane, the ignored tests of tests/TEST.rs, teardown.
suite() {
  local test=$1 threads=$2 dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-$test.XXXXXX")"
  DIRS+=("$dir")
  tests/cluster/dev-env.sh up "$dir" tests/cluster/e2e-config.yaml
  PVC_CLONE_GUARD_E2E_DIR="$dir" cargo test --release --test "$test" -- --ignored --test-threads="$threads"
  tests/cluster/dev-env.sh down "$dir" >/dev/null 2>&1
}

cargo build --release --quiet
suite faults 1
suite operations 1
suite e2e 4
