#!/usr/bin/env python3
"""Splits the CPU samples of a `perf record --call-graph dwarf` of the webhook (or the limit
server) into components, from `perf script` output on stdin (a header line per sample,
then its frames leaf first, a blank line between samples).

A sample whose stack contains an application marker (the log line, the review parse, the
caches, the rules, the response JSON, the metrics) counts for that component, whatever
the leaf (so the log line's write(2) counts as logging); the others count for the most
specific low-level component of their leaf-most matching frame (socket write, TLS, HTTP...).

    perf script --no-inline -i perf.data | perf_breakdown.py [CPU_US_PER_REVIEW]

With CPU_US_PER_REVIEW, each share is also given in µs per review.
"""
import collections
import re
import sys

PRIORITY = [
    ("log line (tracing fmt + write)", re.compile(r"tracing_core::event::Event::dispatch|tracing_subscriber|tracing_appender|pvc_clone_guard::logging::|tracing::__macro_support")),
    ("JSON parse of the review (serde)", re.compile(r"pvc_clone_guard::review::parse\b|serde_json::de::|serde_core::de::|as serde_core::de::Deserialize")),
    ("facts (caches)", re.compile(r"ClusterFacts|FactSource|facts::")),
    ("rules", re.compile(r"pvc_clone_guard::rules::")),
    ("response JSON", re.compile(r"pvc_clone_guard::review::to_body|serde_json::ser::to_vec|AdmissionResponse")),
    ("metrics", re.compile(r"prometheus_client|pvc_clone_guard::metrics")),
    # What is left of a review's own work once the above are taken out: triage, the
    # verdict's lines, the response built (kube's AdmissionResponse), the audit annotations,
    # the values moved between them. Without this line it was counted as HTTP (the leaf's
    # nearest low-level frame is hyper's dispatcher).
    ("judging (triage, verdict, response built)", re.compile(r"pvc_clone_guard::review::")),
]
LOW = [
    ("socket write (kernel, incl. loopback delivery)", re.compile(r"__GI___writev|__writev|do_writev|tcp_sendmsg")),
    ("socket read (kernel)", re.compile(r"__libc_recv|recvfrom|tcp_recvmsg|__GI___libc_read|ksys_read")),
    ("epoll / context switches (kernel)", re.compile(r"epoll_wait|do_epoll|\[kernel.kallsyms\]|finish_task_switch|__schedule\b")),
    ("TLS crypto", re.compile(r"aes_gcm|ring_core|gcm_|chacha")),
    ("rustls record handling", re.compile(r"rustls::|tokio_rustls")),
    ("HTTP (hyper/axum/tower)", re.compile(r"hyper::|hyper_util::|axum::|tower::|http::")),
    ("tokio runtime", re.compile(r"tokio::")),
    ("malloc/free", re.compile(r"(malloc|free|realloc|memalign).*libc\.so")),
]
# The thread that writes the log lines out (tracing-appender's worker, named in logging::init): all its time, the kernel's
# page-cache copy of the lines included, is the log line's.
LOG_THREAD = "log-writer"

def classify(header, frames):
    if header.startswith(LOG_THREAD):
        return PRIORITY[0][0]
    text = "\n".join(frames)
    for name, rx in PRIORITY:
        if rx.search(text):
            return name
    for f in frames:  # leaf first: the most specific low-level component wins
        for name, rx in LOW:
            if name.startswith("epoll"):
                continue
            if rx.search(f):
                return name
    # Kernel time under no socket call: polling, waking, switching.
    name, rx = next((n, r) for n, r in LOW if n.startswith("epoll"))
    if any(rx.search(f) for f in frames):
        return name
    return "other"
counts = collections.Counter()
header, frames, total = "", [], 0
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        if frames:
            counts[classify(header, frames)] += 1; total += 1
        header, frames = "", []
        continue
    if line.startswith("\t") or line.startswith(" "):
        frames.append(line.strip())
    else:
        header = line
if frames:
    counts[classify(header, frames)] += 1; total += 1
us = float(sys.argv[1]) if len(sys.argv) > 1 else None
for name, n in counts.most_common():
    extra = f"  ~{us * n / total:5.2f} µs/review" if us else ""
    print(f"{100 * n / total:5.1f}%  {name}{extra}")
print(f"samples: {total}")
