//! Micro-benchmarks of the CPU work of one review, without HTTP or TLS:
//!
//! - `review/*`: `Reviewer::review` (parse, triage, facts from `StaticFacts`, rules,
//!   metrics, the log line) plus `to_body`, i.e. everything the webhook does for a request
//!   between reading the body and writing the answer, except the cache look-ups;
//! - `parse/*`, `decide/*`, `to_body/*`: the pieces on their own;
//! - `baseline/uid-only`: what the load benchmark's limit server does with a body (serde
//!   with a struct holding only `request.uid`), the floor for `parse/*`;
//! - `logging/*`: `review/plain` with the JSON and text log subscribers of the binary
//!   writing to a sink, to price the one log line per review;
//! - `quantity/*`: `quantity::parse` of a few quantities.
//!
//! The review bodies are the ones the load benchmark posts (`benches/load/*.json`):
//! realistic AdmissionReviews with managedFields, annotations and userInfo, ~3.3 KB.
//!
//! Run: `cargo bench --bench review` (results in target/criterion/).
//!
//! Instruction counts, which do not swing with the machine's load the way times do:
//! `REVIEW_BENCH_CASE=NAME REVIEW_BENCH_ITERS=N` runs one case N times without criterion,
//! for `valgrind --tool=callgrind` (see `benches/instructions.sh`); NAME is one of
//! `plain`, `clone-allowed`, `clone-denied-3`, `plain-json-log`, `clone-json-log`,
//! `plain-json-log-writer` (the JSON line through the binary's non-blocking writer, to a
//! sink), `plain-router` (`plain` posted through `Webhook::router`), `plain-text-log`,
//! `parse-plain`, `parse-clone`, `uid-only`, `decide-allowed`, `to-body`, `none`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use pvc_clone_guard::config::Policy;
use pvc_clone_guard::facts::StaticFacts;
use pvc_clone_guard::metrics::Metrics;
use pvc_clone_guard::review::{self, Reviewer, Triage};
use pvc_clone_guard::rules::{self, DataSourceRequest, Facts, fixtures};

/// A plain (non-clone) PVC CREATE review, 20Gi, gp3.
const PLAIN: &[u8] = include_bytes!("load/review-plain.json");
/// A clone of claim "data" in namespace "bench": 10Gi, gp3, Filesystem.
const CLONE: &[u8] = include_bytes!("load/review-clone.json");

/// The facts of the load benchmark's cluster: a Bound 10Gi CSI claim "bench/data" on PV
/// "pv-data" of driver ebs.csi.aws.com, StorageClass gp3 of that driver, no pod.
fn good_facts() -> Facts {
    let mut facts = fixtures::good_facts_in("bench", "pv-data");
    facts.classes_for_source_driver = vec!["gp3".into(), "gp3-encrypted".into()];
    facts
}

/// Facts that make the same clone break three rules: the source is a 20Gi Block claim
/// (`volume-mode`, `size`) and gp3 is provisioned by another driver (`same-driver`).
fn bad_facts() -> Facts {
    let mut facts = good_facts();
    if let Some(source) = facts.source.as_mut() {
        source.volume_mode = Some("Block".into());
        source.requested_storage = Some("20Gi".into());
        source.capacity = Some("20Gi".into());
    }
    if let Some(volume) = facts.volume.as_mut() {
        volume.volume_mode = Some("Block".into());
        volume.csi_driver = Some("pd.csi.storage.gke.io".into());
    }
    facts.classes_for_source_driver = vec!["standard-rwo".into()];
    facts
}

/// What the limit server reads of a review: `request.uid`.
#[path = "load/uid_only.rs"]
mod uid_only;
use uid_only::UidOnly;

fn reviewer(facts: Facts) -> Reviewer<StaticFacts> {
    Reviewer::new(
        Policy::default(),
        StaticFacts { facts: Ok(facts) },
        Metrics::new(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    // `review` puts the fact gathering under tokio::time::timeout: it needs a timer.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn clone_request(body: &[u8]) -> DataSourceRequest {
    let request = review::parse(body).expect("review parses");
    match review::triage(&request) {
        Triage::Judge(request) => request,
        other => panic!("not a claim's clone: {other:?}"),
    }
}

/// One review as the HTTP handler does it: review, then serialize the answer.
fn full_review(
    rt: &tokio::runtime::Runtime,
    reviewer: &Reviewer<StaticFacts>,
    body: &[u8],
) -> Vec<u8> {
    let response = rt
        .block_on(reviewer.review(black_box(body)))
        .expect("review");
    review::to_body(response)
}

/// Checks once, outside the timed loops, that each case answers what it is meant to.
fn check_cases(rt: &tokio::runtime::Runtime) {
    let answer = |facts: Facts, body: &[u8]| -> serde_json::Value {
        serde_json::from_slice(&full_review(rt, &reviewer(facts), body)).expect("json answer")
    };
    let plain = answer(good_facts(), PLAIN);
    assert_eq!(plain["response"]["allowed"], true, "plain: {plain}");
    let allowed = answer(good_facts(), CLONE);
    assert_eq!(allowed["response"]["allowed"], true, "clone: {allowed}");
    assert!(
        allowed["response"]["warnings"].is_null(),
        "clone warned: {allowed}"
    );
    let denied = answer(bad_facts(), CLONE);
    assert_eq!(denied["response"]["allowed"], false, "denied: {denied}");
    let message = denied["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(message.lines().count(), 3, "3 violations: {message}");
    for rule in ["[same-driver]", "[volume-mode]", "[size]"] {
        assert!(message.contains(rule), "{rule} missing: {message}");
    }
}

fn bench_review(c: &mut Criterion) {
    let rt = runtime();
    check_cases(&rt);
    let mut group = c.benchmark_group("review");
    let cases: [(&str, Facts, &[u8]); 3] = [
        ("plain", good_facts(), PLAIN),
        ("clone-allowed", good_facts(), CLONE),
        ("clone-denied-3", bad_facts(), CLONE),
    ];
    for (name, facts, body) in cases {
        let reviewer = reviewer(facts);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| full_review(&rt, &reviewer, body)));
    }
    group.finish();
}

fn bench_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, body) in [("plain", PLAIN), ("clone", CLONE)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| review::parse(black_box(body)).expect("parse"))
        });
    }
    group.finish();

    let policy = Policy::default();
    let clone = clone_request(CLONE);
    let mut group = c.benchmark_group("decide");
    for (name, facts) in [("allowed", good_facts()), ("denied-3", bad_facts())] {
        group.bench_function(name, |b| {
            b.iter(|| rules::decide(black_box(&clone), Some(black_box(&facts)), &policy))
        });
    }
    group.finish();

    let rt = runtime();
    let mut group = c.benchmark_group("to_body");
    let allowed = rt
        .block_on(reviewer(good_facts()).review(CLONE))
        .expect("review");
    group.bench_function("allowed", |b| {
        b.iter(|| review::to_body(black_box(allowed.clone())))
    });
    group.finish();

    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Bytes(PLAIN.len() as u64));
    group.bench_function("uid-only", |b| {
        b.iter(|| {
            let review: UidOnly = serde_json::from_slice(black_box(PLAIN)).expect("uid");
            review.request.uid.len()
        })
    });
    group.finish();
}

/// The subscriber of `--log-format json` (the default) at `RUST_LOG=info`, writing to a sink.
fn json_log() -> impl tracing::Subscriber + Send + Sync + 'static {
    pvc_clone_guard::logging::json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        std::io::sink,
    )
}

/// The binary logs one line per review at info level; here the same subscribers as
/// `--log-format json|text` write to a sink, so the difference to `review/plain` is the
/// cost of formatting that line.
fn bench_logging(c: &mut Criterion) {
    let rt = runtime();
    let reviewer = reviewer(good_facts());
    let mut group = c.benchmark_group("logging");
    tracing::subscriber::with_default(json_log(), || {
        group.bench_function("plain-json-log", |b| {
            b.iter(|| full_review(&rt, &reviewer, PLAIN))
        });
    });
    let text = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(text, || {
        group.bench_function("plain-text-log", |b| {
            b.iter(|| full_review(&rt, &reviewer, PLAIN))
        });
    });
    group.finish();
}

fn bench_quantity(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantity");
    for text in ["10Gi", "1000Mi", "1.5Ti", "5e9", "500m", "123456789012"] {
        group.bench_function(text, |b| {
            b.iter(|| pvc_clone_guard::quantity::parse(black_box(text)).expect("quantity"))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Short but stable enough on a 2-core machine: the whole run takes about 1.5 minutes.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_review, bench_parts, bench_logging, bench_quantity
}

/// Runs one case `iters` times, for an instruction count under callgrind.
fn run_case(case: &str, iters: u64) {
    let rt = runtime();
    let policy = Policy::default();
    let clone = clone_request(CLONE);
    let good = reviewer(good_facts());
    let bad = reviewer(bad_facts());
    let facts = good_facts();
    let allowed = rt.block_on(good.review(CLONE)).expect("review");
    let text = || {
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish()
    };
    let mut sink = 0usize;
    let mut each = |f: &mut dyn FnMut() -> usize| {
        for _ in 0..iters {
            sink = sink.wrapping_add(f());
        }
    };
    match case {
        "none" => {}
        "plain" => each(&mut || full_review(&rt, &good, PLAIN).len()),
        "clone-allowed" => each(&mut || full_review(&rt, &good, CLONE).len()),
        "clone-denied-3" => each(&mut || full_review(&rt, &bad, CLONE).len()),
        "plain-json-log" => tracing::subscriber::with_default(json_log(), || {
            each(&mut || full_review(&rt, &good, PLAIN).len())
        }),
        "plain-json-log-writer" => {
            let (writer, _flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(std::io::sink());
            let subscriber = pvc_clone_guard::logging::json_subscriber(
                tracing_subscriber::EnvFilter::new("info"),
                writer,
            );
            tracing::subscriber::with_default(subscriber, || {
                each(&mut || full_review(&rt, &good, PLAIN).len())
            });
        }
        "clone-json-log" => tracing::subscriber::with_default(json_log(), || {
            each(&mut || full_review(&rt, &good, CLONE).len())
        }),
        "plain-router" | "plain-service" => {
            // The same review posted through the review port's router, or through the
            // service production serves (the router with `POST /validate` handed straight
            // to its handler): the handler's checks and body read, the response built,
            // without TLS or sockets.
            let webhook = pvc_clone_guard::Webhook::new(
                std::sync::Arc::new(reviewer(good_facts())),
                Default::default(),
                Default::default(),
            );
            let (router, service) = (webhook.router(), webhook.service());
            let through_router = case == "plain-router";
            each(&mut || {
                rt.block_on(async {
                    use tower::ServiceExt;
                    let request = axum::http::Request::post("/validate")
                        .header("content-type", "application/json")
                        .header("content-length", PLAIN.len())
                        .body(axum::body::Body::from(PLAIN))
                        .expect("request");
                    let response = if through_router {
                        router.clone().oneshot(request).await
                    } else {
                        service.clone().oneshot(request).await
                    }
                    .expect("infallible");
                    axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .expect("body")
                        .len()
                })
            })
        }
        "plain-text-log" => tracing::subscriber::with_default(text(), || {
            each(&mut || full_review(&rt, &good, PLAIN).len())
        }),
        "parse-plain" => each(&mut || review::parse(black_box(PLAIN)).map_or(0, |r| r.uid.len())),
        "parse-clone" => each(&mut || review::parse(black_box(CLONE)).map_or(0, |r| r.uid.len())),
        "uid-only" => each(&mut || {
            serde_json::from_slice::<UidOnly>(black_box(PLAIN)).map_or(0, |r| r.request.uid.len())
        }),
        "decide-allowed" => each(&mut || {
            rules::decide(black_box(&clone), Some(black_box(&facts)), &policy)
                .warnings
                .len()
        }),
        "to-body" => each(&mut || review::to_body(black_box(allowed.clone())).len()),
        other => panic!("unknown REVIEW_BENCH_CASE {other:?}"),
    }
    black_box(sink);
}

fn main() {
    if let Ok(case) = std::env::var("REVIEW_BENCH_CASE") {
        let iters = std::env::var("REVIEW_BENCH_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        check_cases(&runtime());
        run_case(&case, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
