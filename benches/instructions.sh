#!/usr/bin/env bash
# Instructions per review, counted by callgrind: a figure that does not swing with the
# machine's load the way the times of `cargo bench --bench review` do (±15 % here).
# Each case of benches/review.rs runs ITERS times (REVIEW_BENCH_CASE mode, no criterion);
# a run with 0 iterations gives the fixed cost (start-up, fixtures, checks) to subtract.
#
#   benches/instructions.sh [CASE...]        (needs valgrind: apt-get install valgrind)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ITERS=${ITERS:-2000}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(uid-only parse-plain parse-clone plain plain-json-log plain-json-log-writer plain-router plain-service plain-text-log clone-allowed clone-json-log clone-denied-3 decide-allowed to-body)
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }

cd "$REPO"
bench=$(cargo bench --bench review --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "review") | .executable // empty' | tail -n 1)
[ -x "$bench" ] || { echo "could not build the review bench" >&2; exit 1; }

count() { # count CASE ITERS -> total instructions
  REVIEW_BENCH_CASE=$1 REVIEW_BENCH_ITERS=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$bench" 2>&1 | awk '/Collected :/ {print $NF}'
}

echo "| case | instructions per iteration |"
echo "| --- | ---: |"
for case in "${CASES[@]}"; do
  base=$(count "$case" 0)
  total=$(count "$case" "$ITERS")
  echo "| $case | $(((total - base) / ITERS)) |"
done
