#!/usr/bin/env bash
# Prints the rule groups of the shipped PrometheusRule
# (manifests/components/monitoring/prometheusrule.yaml) as a plain Prometheus rules file:
# its `spec`, unchanged. promtool and the end-to-end Prometheus load this output, so the
# rules they test are exactly the ones shipped (one copy, no drift).
#
# Usage: tests/alerts/rules.sh [PROMETHEUSRULE_FILE] > rules.yaml
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python3 - "${1:-$REPO/manifests/components/monitoring/prometheusrule.yaml}" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "PrometheusRule"]
if len(docs) != 1:
    sys.exit(f"{sys.argv[1]}: expected one PrometheusRule, found {len(docs)}")
yaml.safe_dump(docs[0]["spec"], sys.stdout, sort_keys=False, width=1000)
PY
