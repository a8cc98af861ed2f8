#!/usr/bin/env bash
# Every test of pvc-clone-guard, end-to-end included: the README's test command, and
# exactly what CI (.ci/run) runs. On a fresh machine it first installs what the tests need
# (tests/cluster/install.sh: etcd, wrk, jq, prometheus, and kube-apiserver 1.20 built once from
# Debian's source and cached outside the repository).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing test dependencies (cached after the first run)"
tests/cluster/install.sh

step "format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "unit tests, HTTP contract in-process and over TLS, the binary under hostile input"
cargo test --locked

step "property-based fuzzing of the review and quantity parsers and the rules (bounded)"
PROPTEST_CASES=4096 cargo test --locked --test fuzz

step "alerts: the shipped PrometheusRule checked and unit-tested by promtool, the monitoring component rendered"
tests/alerts/run.sh

step "the local control plane itself"
tests/cluster/smoke.sh

step "end-to-end: kubectl against a real kube-apiserver calling the webhook; API-server faults"
tests/e2e.sh
