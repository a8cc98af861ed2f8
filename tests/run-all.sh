#!/usr/bin/env bash
# Every test of pvc-clone-guard, end-to-end included: the README's test command, and
# exactly what CI (.ci/run) runs. On a fresh machine it first installs what the tests need
# (tests/cluster/install.sh: etcd, wrk, jq, prometheus, the node's runtime (containerd, runc, CNI
# plugins, umoci), and Kubernetes 1.20's five binaries built once from Debian's source and cached
# outside the repository). Runs as root: the real-node suite (tests/node.sh) starts a kubelet.
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

step "a real node: the shipped overlay installed with kubectl apply -k and called through its Service, operations under load, the memory limit; the host restored afterwards"
# 2,000 each of PVCs, PVs and pods for the memory test keeps CI well under its time limit;
# tests/node.sh alone defaults to 10,000 (the scale benchmark's first size).
PVC_CLONE_GUARD_NODE_SCALE="${PVC_CLONE_GUARD_NODE_SCALE:-2000}" tests/node.sh
