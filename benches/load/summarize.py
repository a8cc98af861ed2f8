#!/usr/bin/env python3
"""Turns the results.jsonl of benches/load/run.sh into Markdown tables (stdout).

Throughput and latencies are medians over the rounds; the ratio is the webhook's median
req/s over the limit server's median req/s for the same body and connections (SPEC §7),
with the range of the per-round ratios (each round's runs were alternated) beside it.
"""

import json
import statistics
import sys
from collections import defaultdict

MIB = 1024


def median(values):
    return statistics.median(values) if values else float("nan")


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next((r for r in rows if r["kind"] == "meta"), {})
    load = [r for r in rows if r["kind"] == "load"]
    out = []
    p = out.append

    p(f"Commit {meta.get('commit', '?')}"
      + (" (with uncommitted changes in src/ or Cargo.toml)" if meta.get("uncommitted_src_changes") else "")
      + f"; {meta.get('nproc', '?')} CPUs, {meta.get('cpu', '?')}, kernel {meta.get('kernel', '?')}; "
      f"{meta.get('wrk', 'wrk')}; {meta.get('rounds', '?')} round(s) of {meta.get('duration', '?')}; "
      f"webhook log format {meta.get('log_format', '?')}, RUST_LOG={meta.get('rust_log', '?')}.")
    p("")

    groups = defaultdict(list)
    for r in load:
        groups[(r["body"], r["conns"], r["target"])].append(r)

    def stats(runs):
        requests = sum(r["requests"] for r in runs)
        duration_s = sum(r["duration_us"] for r in runs) / 1e6
        return {
            "rps": median([r["rps"] for r in runs]),
            "p50": median([r["p50_us"] for r in runs]),
            "p90": median([r["p90_us"] for r in runs]),
            "p99": median([r["p99_us"] for r in runs]),
            "errors": sum(r["non2xx"] + r["unexpected"] + r["socket_errors"] for r in runs),
            "cpu_us": median([r["cpu_s"] * 1e6 / r["requests"] for r in runs if r["requests"]]),
            "core": sum(r["cpu_s"] for r in runs) / duration_s if duration_s else float("nan"),
            "other": max(r.get("other_outside_cluster",
                               max(r.get("other_server_core", 0), r.get("other_wrk_core", 0))) for r in runs),
            "disturbed": sum(1 for r in runs if r.get("disturbed")),
            "api": (sum(r["api_requests"] for r in runs) / requests) if runs[0].get("api_measured") and requests else None,
            "pods": (sum(r["pod_lists"] for r in runs) / requests) if runs[0].get("api_measured") and requests else None,
            "lookup_errors": sum(r.get("lookup_errors", 0) for r in runs) if runs[0].get("api_measured") else None,
            "n": len(runs),
        }

    p("### Throughput and latency (medians over rounds)")
    p("")
    p("| body | conns | target | req/s | p50 µs | p90 µs | p99 µs | errors | ratio vs limit (per-round range) | server CPU µs/review | server core busy | other load (max) | API requests/review |")
    p("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    order = {"webhook": 0, "webhook-siu-off": 1, "limit": 2}
    ratios = {}
    for key in sorted(groups, key=lambda k: (k[0] != "plain", k[1], order.get(k[2], 9))):
        body, conns, target = key
        s = stats(groups[key])
        limit = groups.get((body, conns, "limit"))
        ratio = ""
        if target != "limit" and limit:
            lr = stats(limit)["rps"]
            ratio_value = s["rps"] / lr
            ratios[key] = ratio_value
            by_round = {r["round"]: r["rps"] for r in limit}
            per_round = [r["rps"] / by_round[r["round"]] for r in groups[key] if r["round"] in by_round]
            ratio = f"**{ratio_value:.2f}×**"
            if len(per_round) > 1:
                ratio += f" ({min(per_round):.2f}–{max(per_round):.2f})"
        api = ""
        if s["api"] is not None:
            api = f"{s['api']:.3f} (pod lists {s['pods']:.3f}; lookup errors {s['lookup_errors']:g})"
        p(f"| {body} | {conns} | {target} | {s['rps']:,.0f} | {s['p50']:.0f} | {s['p90']:.0f} | {s['p99']:.0f} | "
          f"{s['errors']} | {ratio} | {s['cpu_us']:.1f} | {s['core'] * 100:.0f}% | {s['other'] * 100:.0f}%{' (' + str(s['disturbed']) + ' disturbed)' if s['disturbed'] else ''} | {api} |")
    p("")
    p("errors = non-2xx + 2xx answers without `\"allowed\":true` + socket errors, summed over rounds. "
      "server CPU = utime+stime of the target process during the run / requests; server core busy = "
      "the same over the run's duration; other load = busy time of the two cores (/proc/stat) not charged "
      "to the target, wrk, kube-apiserver or etcd, i.e. other processes on the machine, as a share of one "
      "core over the run (runs above MAX_OTHER_LOAD were run again; \"disturbed\" = still above after "
      "the retries). "
      "webhook = default rules (rule source-in-use on); "
      "webhook-siu-off = `rules: {source-in-use: off}`.")
    p("")

    mem = [r for r in rows if r["kind"] == "memory"]
    ready = [r for r in rows if r["kind"] == "ready"]
    p("### Memory and start-up")
    p("")
    p("| what | VmRSS MiB | VmHWM MiB |")
    p("| --- | ---: | ---: |")
    for r in mem:
        if r["phase"] == "idle-small":
            what = "idle webhook, small cluster, 1 s after ready"
        elif r["phase"] == "idle-bulk":
            what = (f"same idle webhook after {r['bulk']} PVCs + {r['bulk']} PVs were created "
                    f"(cached: {r['cached_pvcs']:g} PVCs, {r['cached_pvs']:g} PVs)")
        else:
            what = f"{r.get('target', '')} after the load runs (peak = under load)"
        p(f"| {what} | {r['rss_kib'] / MIB:.1f} | {r['hwm_kib'] / MIB:.1f} |")
    for label in ("small", "bulk"):
        rs = [r for r in ready if r["cluster"] == label]
        if rs:
            p(f"| fresh webhook, {label} cluster, 1 s after ready (median of {len(rs)}) | "
              f"{median([r['rss_kib'] for r in rs]) / MIB:.1f} | {median([r['hwm_kib'] for r in rs]) / MIB:.1f} |")
    p("")
    p("| time to ready (process start to /readyz 200, 10 ms polls) | median ms | samples ms |")
    p("| --- | ---: | --- |")
    for label in ("small", "bulk"):
        rs = [r["ready_ms"] for r in ready if r["cluster"] == label]
        if rs:
            p(f"| {label} cluster | {median(rs):.0f} | {', '.join(str(x) for x in rs)} |")
    p("")

    # SPEC §7 targets.
    p("### SPEC §7 targets")
    p("")
    p("| target | measured | met |")
    p("| --- | --- | --- |")

    def verdict(ok):
        return "yes" if ok else "**no**"

    conns16 = 16 if any(k[1] == 16 for k in groups) else max((k[1] for k in groups), default=None)
    # SPEC §7's floors: ratios of medians at 16 connections, p99 within 1.5× of the limit
    # server's p99 in the same run.
    for body, target, need, label in (
        ("plain", "webhook", 0.6, "plain review ≥ 0.6× limit, p99 ≤ 1.5× the limit's"),
        ("clone", "webhook-siu-off", 0.5, "cached clone ≥ 0.5× limit, p99 ≤ 1.5× the limit's, no API request (source-in-use off)"),
        ("clone", "webhook", 0.5, "cached clone ≥ 0.5× limit, p99 ≤ 1.5× the limit's, no API request (default rules)"),
    ):
        key = (body, conns16, target)
        if key not in groups:
            continue
        s = stats(groups[key])
        limit = stats(groups[(body, conns16, "limit")])
        ok = ratios[key] >= need and s["p99"] <= 1.5 * limit["p99"]
        limit_cpu = limit["cpu_us"]
        text = (f"{ratios[key]:.2f}× (CPU-time ratio {limit_cpu / s['cpu_us']:.2f}×: {limit_cpu:.1f} vs {s['cpu_us']:.1f} µs per review), "
                f"p99 {s['p99']:.0f} µs against the limit's {limit['p99']:.0f} µs ({s['p99'] / limit['p99']:.2f}×) at {conns16} connections")
        if body == "clone" and s["api"] is not None:
            ok = ok and s["api"] < 0.001
            text += f", {s['api']:.3f} API requests/review"
        p(f"| {label} | {text} | {verdict(ok)} |")
    idle = next((r for r in mem if r["phase"] == "idle-small"), None)
    if idle:
        p(f"| ≤ 30 MiB idle | {idle['rss_kib'] / MIB:.1f} MiB VmRSS | {verdict(idle['rss_kib'] <= 30 * MIB)} |")
    bulk = next((r for r in mem if r["phase"] == "idle-bulk"), None)
    if bulk:
        fresh = [r["hwm_kib"] for r in ready if r["cluster"] == "bulk"]
        worst = max([bulk["rss_kib"]] + fresh)
        p(f"| ≤ 64 MiB with {bulk['bulk']} PVCs + {bulk['bulk']} PVs | {bulk['rss_kib'] / MIB:.1f} MiB VmRSS "
          f"(peak of a fresh start: {max(fresh) / MIB if fresh else float('nan'):.1f} MiB VmHWM) | {verdict(worst <= 64 * MIB)} |")
    small = [r["ready_ms"] for r in ready if r["cluster"] == "small"]
    if small:
        p(f"| ready < 1 s (small cluster) | {median(small):.0f} ms median, {max(small)} ms worst | {verdict(max(small) < 1000)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
