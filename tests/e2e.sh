#!/usr/bin/env bash
# End-to-end tests: brings up a local control plane with pvc-clone-guard registered
# (tests/cluster/dev-env.sh), runs the ignored tests of tests/e2e.rs against it, and
# always stops everything it started.
#   E2E_KEEP=1 tests/e2e.sh   keeps the environment (and prints where) for debugging.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-e2e.XXXXXX")"
cleanup() {
  local status=$?
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    echo "[e2e] kept: $DIR (stop with tests/cluster/dev-env.sh down $DIR)" >&2
  else
    tests/cluster/dev-env.sh down "$DIR" >/dev/null 2>&1 || true
    if [ $status -ne 0 ] && [ -f "$DIR/webhook.log" ]; then
      echo "[e2e] last lines of the webhook log:" >&2
      tail -n 40 "$DIR/webhook.log" >&2 || true
    fi
    rm -rf "$DIR"
  fi
  exit $status
}
trap cleanup EXIT

cargo build --release --quiet
tests/cluster/dev-env.sh up "$DIR" tests/cluster/e2e-config.yaml
PVC_CLONE_GUARD_E2E_DIR="$DIR" cargo test --release --test e2e -- --ignored --test-threads=4
