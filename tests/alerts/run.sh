#!/usr/bin/env bash
# The alerts, checked without a cluster: the shipped PrometheusRule's rules are extracted
# (tests/alerts/rules.sh), checked by `promtool check rules` and unit-tested by
# `promtool test rules` (tests/alerts/alerts-test.yaml: each alert firing and not firing);
# the monitoring component renders with kustomize on top of the base.
# promtool comes from Debian's `prometheus` package (tests/cluster/install.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pvc-clone-guard-alerts.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

"$REPO/tests/alerts/rules.sh" >"$WORK/rules.yaml"
cp "$REPO/tests/alerts/alerts-test.yaml" "$WORK/"
promtool check rules "$WORK/rules.yaml"
promtool test rules "$WORK/alerts-test.yaml"

# The component applies on top of the base: both monitoring objects render, in the
# webhook's namespace, and the ServiceMonitor's port is one the Service exposes.
mkdir -p "$WORK/overlay"
# kustomize takes only relative paths to other kustomizations.
manifests="$(realpath --relative-to="$WORK/overlay" "$REPO/manifests")"
cat >"$WORK/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$manifests/base]
components: [$manifests/components/monitoring]
YAML
kubectl kustomize "$WORK/overlay" >"$WORK/rendered.yaml"
python3 - "$WORK/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
monitor, = by_kind["ServiceMonitor"]
rule, = by_kind["PrometheusRule"]
service, = by_kind["Service"]
for obj in (monitor, rule):
    assert obj["metadata"]["namespace"] == service["metadata"]["namespace"], obj["metadata"]
ports = {p["name"] for p in service["spec"]["ports"]}
for endpoint in monitor["spec"]["endpoints"]:
    assert endpoint["port"] in ports, f"ServiceMonitor port {endpoint['port']} not in Service ports {ports}"
labels = service["metadata"].get("labels", {})
for key, value in monitor["spec"]["selector"]["matchLabels"].items():
    assert labels.get(key) == value, f"ServiceMonitor selector {key}={value} does not match the Service"
print("monitoring component: ServiceMonitor and PrometheusRule render and select the Service's admin port")
PY
