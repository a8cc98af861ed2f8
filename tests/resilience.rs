//! Never the reason a cluster cannot create volumes, never a refused valid clone: proven
//! against the real local control plane by causing the failures. A webhook whose view of
//! the API server lags, a ClusterRole without pods, kube-apiserver restarted under load, no
//! replica at all (claims go on under the default registration, are refused under
//! `components/strict`, and the namespace opt-out unblocks them).
//! Run by tests/e2e.sh with tests/faults.rs, one test at a time (they restart the webhook
//! and the API server).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::cluster::*;
use common::delay_proxy::DelayProxy;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The webhook's kubeconfig, pointed at `server` instead of kube-apiserver.
fn kubeconfig_through(server: SocketAddr) -> std::path::PathBuf {
    let original = std::fs::read_to_string(ENV.dir.join("webhook.kubeconfig")).expect("kubeconfig");
    let rewritten = original.replace(
        &ENV.vars["APISERVER_URL"],
        &format!("https://127.0.0.1:{}", server.port()),
    );
    assert_ne!(rewritten, original, "the kubeconfig names the API server");
    let path = ENV.dir.join("webhook-delayed.kubeconfig");
    std::fs::write(&path, rewritten).expect("write kubeconfig");
    path
}

fn source_claim(namespace: &str, name: &str, volume: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3", "volumeName": volume,
                 "volumeMode": "Filesystem", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("claim")
}

fn volume(name: &str, namespace: &str, claim: &str, uid: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "gp3", "volumeMode": "Filesystem",
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": name},
                 "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                              "namespace": namespace, "name": claim, "uid": uid}}
    }))
    .expect("volume")
}

fn clone_of(namespace: &str, name: &str, source: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3", "volumeMode": "Filesystem",
                 "dataSource": {"kind": "PersistentVolumeClaim", "name": source},
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("clone")
}

/// Binds a claim and its volume as the PV controller would: both statuses to Bound.
async fn bind(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    claim: &str,
    pv: &str,
) {
    let params = PatchParams::default();
    volumes
        .patch_status(
            pv,
            &params,
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("volume bound");
    claims
        .patch_status(
            claim,
            &params,
            &Patch::Merge(
                json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                                           "capacity": {"storage": "1Gi"}}}),
            ),
        )
        .await
        .expect("claim bound");
}

/// Creates `count` sources in `namespace`, each with its volume claimed (uid included) but
/// both still Pending.
async fn pending_sources(client: &kube::Client, namespace: &str, prefix: &str, count: usize) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..count {
        let (name, pv) = (format!("{prefix}{i}"), format!("{namespace}-{prefix}{i}"));
        let created = claims
            .create(&PostParams::default(), &source_claim(namespace, &name, &pv))
            .await
            .expect("source created");
        let uid = created.metadata.uid.expect("uid");
        volumes
            .create(&PostParams::default(), &volume(&pv, namespace, &name, &uid))
            .await
            .expect("volume created");
    }
}

fn metric_or_zero(series: &str) -> f64 {
    metric(series).unwrap_or(0.0)
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_lagging_view_of_the_api_server_never_refuses_a_valid_clone() {
    const RACES: usize = 200;
    const LAG: Duration = Duration::from_millis(300);
    let namespace = "race";
    common::cluster::namespace(namespace);
    let runtime = runtime();
    let upstream: SocketAddr = format!("127.0.0.1:{}", ENV.vars["APISERVER_PORT"])
        .parse()
        .expect("address");
    let proxy = runtime.block_on(DelayProxy::start(upstream, LAG));
    let kubeconfig = kubeconfig_through(proxy.addr);
    restart_webhook(&[("WEBHOOK_KUBECONFIG", kubeconfig.to_str().expect("utf-8"))]);
    let overturned_before =
        metric_or_zero("pvc_clone_guard_denial_confirmations_total{outcome=\"overturned\"}");

    let client = runtime.block_on(admin_client());
    // The sources exist (Pending) long enough for the webhook's caches to have them...
    runtime.block_on(pending_sources(&client, namespace, "s", RACES));
    std::thread::sleep(LAG * 4);
    // ...then each is bound and cloned at once, inside the lag: the webhook's cache still
    // says Pending when the clone's review arrives.
    let refusals: Vec<String> = runtime.block_on(async {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        // Four races at a time, as scripts and controllers run them.
        let races = futures::stream::iter(0..RACES).map(|i| {
            let (claims, volumes) = (&claims, &volumes);
            async move {
                let (source, pv) = (format!("s{i}"), format!("{namespace}-s{i}"));
                bind(claims, volumes, &source, &pv).await;
                claims
                    .create(
                        &PostParams::default(),
                        &clone_of(namespace, &format!("c{i}"), &source),
                    )
                    .await
                    .err()
                    .map(|error| format!("c{i}: {error}"))
            }
        });
        let refusals: Vec<String> = races
            .buffer_unordered(4)
            .filter_map(|refusal| async move { refusal })
            .collect()
            .await;
        refusals
    });
    let overturned =
        metric_or_zero("pvc_clone_guard_denial_confirmations_total{outcome=\"overturned\"}")
            - overturned_before;
    eprintln!(
        "[race] {RACES} clones created right after their source was bound, webhook view {LAG:?} behind: \
         {} refused, {overturned} cached denials overturned by the API server",
        refusals.len()
    );
    assert_eq!(refusals, Vec::<String>::new(), "no valid clone is refused");
    assert!(
        overturned > 0.0,
        "the race was real: the cache said Pending for some sources"
    );

    // The reverse: a source deleted right before its clone (its deletion seen by the cache,
    // then the pvc-protection finalizer removed as the controller would) is refused for what
    // is true now, not for what the cache saw.
    runtime.block_on(async {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        claims
            .delete("s0", &DeleteParams::default())
            .await
            .expect("delete requested");
        tokio::time::sleep(LAG * 4).await;
        claims
            .patch(
                "s0",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .expect("finalizer removed");
    });
    let run = create(
        &clone_yaml(namespace, "late", "s0", Some("gp3"), "1Gi", "Filesystem"),
        &[],
    );
    assert_denied(
        &run,
        "[source-exists] source claim \"s0\" does not exist in namespace \"race\"; create it first, or fix spec.dataSource.name",
    );

    drop(proxy);
    restart_webhook(&[]);
}

/// The shipped `components/strict` (the claim webhook with failurePolicy: Fail) applied over
/// the local registration, until dropped: then the default registration is applied again.
struct Strict;

impl Strict {
    fn register() -> Strict {
        let overlay = ENV.dir.join("webhook-registration-strict");
        let component = overlay.join("strict");
        std::fs::create_dir_all(&component).expect("mkdir");
        std::fs::copy(
            ENV.repo
                .join("manifests/components/strict/kustomization.yaml"),
            component.join("kustomization.yaml"),
        )
        .expect("copy the strict component");
        std::fs::write(
            overlay.join("kustomization.yaml"),
            "resources: [../webhook-registration]\ncomponents: [strict]\n",
        )
        .expect("write the overlay");
        must(
            kubectl(&["apply", "-k", overlay.to_str().expect("utf-8")]),
            "apply the strict registration",
        );
        assert_eq!(failure_policies(), "Fail Ignore");
        Strict
    }
}

impl Drop for Strict {
    fn drop(&mut self) {
        let default = ENV.dir.join("webhook-registration");
        let _ = kubectl(&["apply", "-k", default.to_str().expect("utf-8")]);
    }
}

/// The webhook stopped (no replica), until dropped: then started again, whatever happened.
struct WebhookStopped;

impl WebhookStopped {
    fn stop() -> WebhookStopped {
        dev_env("stop-webhook", &[]);
        WebhookStopped
    }
}

impl Drop for WebhookStopped {
    fn drop(&mut self) {
        // Not dev_env(), which panics: a drop while a failed test unwinds must not.
        let status = Command::new(ENV.repo.join("tests/cluster/dev-env.sh"))
            .args(["start-webhook", ENV.dir.to_str().expect("utf-8 dir")])
            .status();
        if !std::thread::panicking() {
            assert!(
                status.is_ok_and(|s| s.success()),
                "the webhook starts again"
            );
        }
    }
}

/// The registration's failure policies, claim webhook first.
fn failure_policies() -> String {
    must(
        kubectl(&[
            "get",
            "validatingwebhookconfiguration",
            "pvc-clone-guard",
            "-o",
            "jsonpath={.webhooks[*].failurePolicy}",
        ]),
        "read the registration",
    )
    .stdout
}

/// `kubectl create` of `yaml` until `done` says its outcome has arrived (the API server sees
/// a registration or namespace change within moments); returns that outcome.
fn create_until(yaml: impl Fn(usize) -> String, done: impl Fn(&Run) -> bool, what: &str) -> Run {
    let mut attempt = 0;
    let mut last = None;
    wait_until(
        || {
            attempt += 1;
            let run = create(&yaml(attempt), &[]);
            let arrived = done(&run);
            last = arrived.then_some(run);
            arrived
        },
        what,
    );
    last.expect("an outcome")
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn with_no_replica_claims_go_on_unless_strict_and_the_namespace_opt_out_unblocks_strict() {
    let namespace = "noreplica";
    common::cluster::namespace(namespace);
    assert_eq!(failure_policies(), "Ignore Ignore", "the shipped default");
    let plain = |i: usize| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: plain-{i}, namespace: {namespace}}}\n\
             spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {{requests: {{storage: 1Gi}}}}\n"
        )
    };
    let bad_clone = |i: usize| {
        clone_yaml(
            namespace,
            &format!("clone-{i}"),
            "ghost",
            Some("gp3"),
            "1Gi",
            "Filesystem",
        )
    };
    let stopped = WebhookStopped::stop();

    // No replica, default registration: plain claims and clones are created unchecked.
    assert_created(&create(&plain(1), &[]), "plain-1", &[]);
    assert_created(&create(&bad_clone(1), &[]), "clone-1", &[]);

    // Under strict, every claim create in a reviewed namespace is refused, naming the webhook.
    let strict = Strict::register();
    let refused = create_until(plain, |run| run.code != 0, "strict refuses claims");
    assert!(
        refused.stderr.starts_with(&format!(
            "Error from server (InternalError): error when creating \"clone.yaml\": Internal error occurred: \
             failed calling webhook \"{WEBHOOK}\""
        )),
        "{}",
        refused.stderr
    );
    assert_ne!(create(&bad_clone(100), &[]).code, 0, "a clone too");

    // The runbook's emergency opt-out: the namespace is not reviewed, claims are created.
    must(
        kubectl(&[
            "label",
            "namespace",
            namespace,
            "pvc-clone-guard.io/skip=true",
        ]),
        "label the namespace",
    );
    let created = create_until(
        bad_clone,
        |run| run.code == 0,
        "the opt-out unblocks the namespace",
    );
    assert!(created.stdout.ends_with(" created\n"), "{}", created.stdout);
    assert_eq!(created.stderr, "");
    must(
        kubectl(&["label", "namespace", namespace, "pvc-clone-guard.io/skip-"]),
        "unlabel the namespace",
    );

    // A replica back: the strict registration judges again.
    drop(stopped);
    let judged = create_until(
        |i| bad_clone(200 + i),
        |run| run.stderr.contains("denied the request"),
        "the webhook judges again",
    );
    assert_eq!(
        judged.stderr.split("denied the request: ").nth(1),
        Some(
            "[source-exists] source claim \"ghost\" does not exist in namespace \"noreplica\"; create it first, or fix spec.dataSource.name\n"
        )
    );
    drop(strict);
    assert_eq!(failure_policies(), "Ignore Ignore");
}

/// Under the `strict` registration, so that a review the API server could not deliver is a
/// refusal ("failed calling webhook") and not an unchecked admission: every create gets its
/// verdict or a failure naming the cause.
#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn an_api_server_restarted_twice_under_load_loses_no_verdict() {
    let namespace = "restart";
    namespace_with_source(namespace);
    let _strict = Strict::register();
    let pid = webhook_pid();
    let stop = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = ["valid", "invalid", "plain"]
        .into_iter()
        .map(|kind| {
            let (stop, tally, wrong) = (stop.clone(), tally.clone(), wrong.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let name = format!("{kind}-{i}");
                    let yaml = match kind {
                        "valid" => clone_yaml(namespace, &name, "data", Some("gp3"), "10Gi", "Filesystem"),
                        "invalid" => clone_yaml(namespace, &name, "ghost", Some("gp3"), "10Gi", "Filesystem"),
                        _ => format!(
                            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
                             spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {{requests: {{storage: 1Gi}}}}\n"
                        ),
                    };
                    let run = create(&yaml, &["--request-timeout=10s"]);
                    let outcome = classify(kind, &run);
                    if outcome.starts_with("WRONG") {
                        wrong.lock().expect("lock").push(format!("{name}: {outcome}: {}", run.stderr.trim()));
                    }
                    *tally.lock().expect("lock").entry(format!("{kind}: {outcome}")).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    let dir = ENV.dir.to_str().expect("utf-8");
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        local_cluster(&["stop-apiserver", dir]);
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            readyz(),
            200,
            "the webhook stays ready while the API server is away"
        );
        local_cluster(&["start-apiserver", dir]);
    }
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    let tally = tally.lock().expect("lock").clone();
    eprintln!("[restart] outcomes of kubectl create during two API server restarts:");
    for (outcome, count) in &tally {
        eprintln!("[restart]   {count:>4}  {outcome}");
    }
    assert_eq!(*wrong.lock().expect("lock"), Vec::<String>::new());
    for kind in [
        "valid: admitted",
        "invalid: refused [source-exists]",
        "plain: admitted",
    ] {
        assert!(
            tally.get(kind).copied().unwrap_or(0) > 0,
            "some {kind}: {tally:?}"
        );
    }
    assert_eq!(webhook_pid(), pid, "the webhook needed no restart");
    // And after the load, verdicts are exact again.
    wait_until(
        || {
            create(
                &clone_yaml(
                    namespace,
                    "after",
                    "data",
                    Some("gp3"),
                    "10Gi",
                    "Filesystem",
                ),
                &[],
            )
            .code
                == 0
        },
        "a valid clone is admitted after the restarts",
    );
}

/// What a `kubectl create` during API server restarts got: its correct verdict, a clear
/// failure naming the cause, or (a failure of the test) a wrong verdict.
fn classify(kind: &str, run: &Run) -> String {
    let denied_for_rule = run.stderr.contains("denied the request: [");
    match (kind, run.code == 0) {
        ("invalid", true) => "WRONG: an invalid clone was admitted".into(),
        (_, true) => "admitted".into(),
        ("valid", false) if denied_for_rule => "WRONG: a valid clone was refused for a rule".into(),
        ("invalid", false) if run.stderr.contains("denied the request: [source-exists]") => {
            "refused [source-exists]".into()
        }
        (_, false) => failure_cause(&run.stderr),
    }
}

fn failure_cause(stderr: &str) -> String {
    let causes = [
        (
            "pvc-clone-guard could not check this clone",
            "failed closed, naming the cause",
        ),
        (
            "connection refused",
            "API server unreachable (connection refused)",
        ),
        ("Unable to connect to the server", "API server unreachable"),
        (
            "the server is currently unable to handle the request",
            "API server starting",
        ),
        (
            "failed calling webhook",
            "API server could not call the webhook",
        ),
        ("etcdserver", "API server starting (etcd)"),
        ("Client.Timeout", "kubectl request timeout"),
        ("context deadline exceeded", "kubectl request timeout"),
        (
            "the server was unable to return a response",
            "API server timeout",
        ),
        ("i/o timeout", "kubectl request timeout"),
        ("EOF", "connection closed by the stopping API server"),
        (
            "connection reset",
            "connection closed by the stopping API server",
        ),
    ];
    causes
        .iter()
        .find(|(needle, _)| stderr.contains(needle))
        .map(|(_, cause)| format!("failed: {cause}"))
        .unwrap_or_else(|| format!("WRONG: unclassified failure: {}", stderr.trim()))
}

const PODS_WARNING: &str = "[source-in-use] source claim \"data\" could not be checked for pods that mount it (pods is forbidden: User \"pvc-clone-guard\" cannot list resource \"pods\" in API group \"\" in the namespace \"nopods\"); if one does, the clone is only crash-consistent";

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn without_the_pods_rule_the_webhook_is_ready_and_judges_clones() {
    let namespace = "nopods";
    namespace_with_source(namespace);
    let shipped = std::fs::read_to_string(ENV.repo.join("manifests/base/clusterrole.yaml"))
        .expect("clusterrole");
    let pods_rule =
        "  - apiGroups: [\"\"]\n    resources: [\"pods\"]\n    verbs: [\"list\", \"watch\"]\n";
    assert!(
        shipped.contains(pods_rule),
        "the shipped role has the pods rule"
    );
    apply(&shipped.replace(pods_rule, ""));
    let started = Instant::now();
    restart_webhook(&[("WEBHOOK_EXTRA_ARGS", "--cache-sync-timeout=3s")]);
    let ready_after = started.elapsed();
    eprintln!("[nopods] ready {ready_after:?} after the restart, without the pods cache");
    assert_eq!(readyz(), 200);

    let plain = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: plain, namespace: {namespace}}}\n\
         spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    );
    assert_created(&create(&plain, &[]), "plain", &[]);
    assert_created(
        &create(
            &clone_yaml(
                namespace,
                "clone",
                "data",
                Some("gp3"),
                "10Gi",
                "Filesystem",
            ),
            &[],
        ),
        "clone",
        &[PODS_WARNING],
    );
    // A denial carries the same warning.
    let small = create(
        &clone_yaml(namespace, "small", "data", Some("gp3"), "1Gi", "Filesystem"),
        &[],
    );
    assert_ne!(small.code, 0);
    assert_eq!(
        small.stderr,
        format!(
            "Warning: {PODS_WARNING}\n{}",
            denial(
                "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
            )
        )
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(readyz(), 200, "still ready");
    assert!(metric_or_zero("pvc_clone_guard_watch_errors_total{resource=\"pods\"}") >= 1.0);
    assert_eq!(
        metric("pvc_clone_guard_cache_synced{resource=\"pods\"}"),
        Some(0.0)
    );

    apply(&shipped);
    restart_webhook(&[]);
}
