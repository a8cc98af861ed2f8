//! Installed as users install it, on a real node (tests/cluster/node.sh: kubelet,
//! containerd, kube-proxy, controller-manager, scheduler): the shipped self-managed overlay
//! applied with `kubectl apply -k`, the image built by tests/cluster/image.sh, the API
//! server calling the webhook through the shipped `clientConfig.service`. Then the
//! operations a platform team runs (rollout restart, a deleted pod, a certificate rotation,
//! evictions through the PodDisruptionBudget as a node drain sends them) while claims keep
//! coming, and the memory limit under the scale test's object counts.
//! Started by tests/node.sh, which brings the node up, imports the image and sets
//! PVC_CLONE_GUARD_E2E_DIR; one test at a time, in the order tests/node.sh gives.
//!
//! What the test adds to the shipped overlay, and nothing else: the shipped component for
//! Kubernetes 1.20 (`components/kubernetes-1.20`: the PodDisruptionBudget as
//! `policy/v1beta1`, the only version 1.20 serves, and the webhook namespace's
//! `kubernetes.io/metadata.name` label), and kube-system's label by hand, as that component
//! says. The image is the shipped name, `pvc-clone-guard:0.1.0`, imported into the node's
//! containerd (never pulled: it is present, and the policy is IfNotPresent).

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::*;

const NS: &str = "pvc-clone-guard";
const DEPLOYMENT: &str = "deployment/pvc-clone-guard";
/// The shipped Deployment's memory limit (manifests/base/deployment.yaml: 128Mi).
const MEMORY_LIMIT: u64 = 128 * 1024 * 1024;

fn ok(args: &[&str]) -> String {
    must(kubectl(args), &format!("kubectl {}", args.join(" "))).stdout
}

/// How many objects the list at `path` holds, from a list of one and the API server's
/// `remainingItemCount`: counting 50,000 realistic pods from a full list grew kubectl to
/// 8 GB and the node's API server to 9.8 GB, and ran the machine out of memory.
fn held(path: &str) -> usize {
    let list: Value =
        serde_json::from_str(&ok(&["get", "--raw", &format!("{path}?limit=1")])).expect("a list");
    let first = list["items"].as_array().map_or(0, Vec::len);
    let rest = list["metadata"]["remainingItemCount"].as_u64().unwrap_or(0);
    first + usize::try_from(rest).expect("a count")
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(&all)).expect("kubectl -o json")
}

fn sh(script: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn binary() -> PathBuf {
    std::env::var_os("PVC_CLONE_GUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ENV.repo.join("target/release/pvc-clone-guard"))
}

fn work() -> PathBuf {
    ENV.dir.join("install")
}

fn certs_dir() -> PathBuf {
    work().join("manifests/overlays/self-managed/certs")
}

/// `pvc-clone-guard certs` into the overlay's certs/, as the install instructions say.
fn issue_certificates() {
    run_ok(
        Command::new(binary())
            .arg("certs")
            .arg("--out-dir")
            .arg(certs_dir()),
    );
}

/// A copy of manifests/ (so that certificates never land in the repository) and the test's
/// kustomization: the shipped overlay with the shipped component for Kubernetes 1.20 (the
/// PodDisruptionBudget as policy/v1beta1, the namespace's kubernetes.io/metadata.name
/// label), as the install instructions say for 1.20.
fn prepare() {
    if work().join("test/kustomization.yaml").exists() {
        return;
    }
    std::fs::create_dir_all(work().join("test")).expect("mkdir");
    let status = Command::new("cp")
        .arg("-r")
        .arg(ENV.repo.join("manifests"))
        .arg(work())
        .status()
        .expect("cp");
    assert!(status.success());
    for entry in std::fs::read_dir(certs_dir()).expect("certs dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|name| name != "README.md") {
            std::fs::remove_file(&path).expect("clear certs/");
        }
    }
    issue_certificates();
    std::fs::write(
        work().join("test/kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../manifests/overlays/self-managed]\n\
         components: [../manifests/components/kubernetes-1.20]\n",
    )
    .expect("write kustomization");
}

fn apply_overlay() -> String {
    let dir = work().join("test");
    ok(&["apply", "-k", dir.to_str().expect("utf-8")])
}

fn wait_rolled_out() {
    wait_rolled_out_within(Duration::from_secs(300));
}

fn wait_rolled_out_within(timeout: Duration) {
    let timeout = format!("--timeout={}s", timeout.as_secs());
    let out = ok(&["rollout", "status", DEPLOYMENT, "-n", NS, &timeout]);
    assert!(
        out.ends_with("deployment \"pvc-clone-guard\" successfully rolled out\n"),
        "{out}"
    );
}

/// Applies the overlay (unchanged objects stay as they are) and waits until both replicas
/// are Ready; returns how long that took.
fn install() -> Duration {
    let started = Instant::now();
    prepare();
    apply_overlay();
    // The shipped namespaceSelector excludes kube-system by kubernetes.io/metadata.name,
    // which API servers set since 1.21; on 1.20, by hand, as the component says.
    ok(&[
        "label",
        "namespace",
        "kube-system",
        "kubernetes.io/metadata.name=kube-system",
        "--overwrite",
    ]);
    wait_rolled_out();
    started.elapsed()
}

struct Pod {
    name: String,
    uid: String,
    ip: String,
    ready: bool,
    restarts: u64,
    image: String,
    container_id: String,
    deleting: bool,
}

fn pods() -> Vec<Pod> {
    let list = json(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=pvc-clone-guard",
    ]);
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|pod| {
            let status = &pod["status"]["containerStatuses"][0];
            Pod {
                name: pod["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
                ip: pod["status"]["podIP"].as_str().unwrap_or("").to_owned(),
                ready: status["ready"].as_bool().unwrap_or(false),
                restarts: status["restartCount"].as_u64().unwrap_or(0),
                image: status["image"].as_str().unwrap_or("").to_owned(),
                container_id: status["containerID"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("containerd://")
                    .to_owned(),
                deleting: pod["metadata"]["deletionTimestamp"].is_string(),
            }
        })
        .collect()
}

/// The Ready addresses behind the Service, space-separated.
fn endpoint_ips() -> String {
    ok(&[
        "get",
        "endpoints",
        "pvc-clone-guard",
        "-n",
        NS,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ])
}

fn ready_pods() -> Vec<Pod> {
    pods()
        .into_iter()
        .filter(|pod| pod.ready && !pod.deleting)
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// The memory cgroup (v1) of a pod's container, as the kubelet made it (cgroupfs driver,
/// Burstable QoS: requests below limits).
fn memory_cgroup(pod: &Pod) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/memory/kubepods/burstable/pod{}/{}",
        pod.uid, pod.container_id
    ))
}

fn cgroup_value(pod: &Pod, file: &str) -> u64 {
    let path = memory_cgroup(pod).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

/// The sum of a metric's series on one pod's admin port (plain HTTP, pod IP on cni0).
fn pod_metric(pod: &Pod, prefix: &str) -> f64 {
    sh(&format!(
        "curl -fsS --max-time 5 http://{}:8080/metrics",
        pod.ip
    ))
    .lines()
    .filter(|line| line.starts_with(prefix))
    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    .sum()
}

/// SHA-256 fingerprint of the certificate a pod serves on 8443, as the API server asks for it.
fn served_certificate(ip: &str) -> String {
    sh(&format!(
        "openssl s_client -connect {ip}:8443 -servername pvc-clone-guard.pvc-clone-guard.svc </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    ))
}

fn file_certificate() -> String {
    sh(&format!(
        "openssl x509 -noout -fingerprint -sha256 -in {}",
        certs_dir().join("tls.crt").display()
    ))
}

fn reviews_total() -> f64 {
    ready_pods()
        .iter()
        .map(|pod| pod_metric(pod, "pvc_clone_guard_reviews_total"))
        .sum()
}

fn new_namespace(name: &str) {
    classes();
    if kubectl(&["get", "namespace", name]).code != 0 {
        ok(&["create", "namespace", name]);
    }
}

// ---- the shipped overlay -------------------------------------------------------------------

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn the_shipped_overlay_runs_on_a_real_node_and_is_called_through_its_service() {
    let took = install();
    eprintln!(
        "[install] kubectl apply -k to both replicas Ready: {:.1} s",
        took.as_secs_f64()
    );

    let pods = pods();
    assert_eq!(pods.len(), 2, "two replicas");
    for pod in &pods {
        assert!(pod.ready, "{} is Ready", pod.name);
        assert_eq!(pod.restarts, 0, "{} never restarted", pod.name);
        assert_eq!(pod.image, "docker.io/library/pvc-clone-guard:0.1.0");
        assert!(pod.ip.starts_with("10.244.0."), "{} on cni0", pod.ip);
        // The container's processes run as 65532, read from the host.
        let procs = std::fs::read_to_string(memory_cgroup(pod).join("cgroup.procs"))
            .expect("the container's cgroup");
        let pid = procs.lines().next().expect("a process");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .expect("Uid");
        assert_eq!(uid, "Uid:\t65532\t65532\t65532\t65532");
        assert_eq!(cgroup_value(pod, "memory.limit_in_bytes"), MEMORY_LIMIT);
    }
    // Registered through the Service, as shipped: no url anywhere.
    assert_eq!(
        ok(&[
            "get",
            "validatingwebhookconfiguration",
            "pvc-clone-guard",
            "-o",
            "jsonpath={.webhooks[*].clientConfig.service.name} {.webhooks[*].clientConfig.service.port} url=[{.webhooks[*].clientConfig.url}]",
        ]),
        "pvc-clone-guard pvc-clone-guard 443 443 url=[]"
    );
    let endpoints = endpoint_ips();
    assert_eq!(endpoints.split(' ').count(), 2, "{endpoints}");

    new_namespace("install");
    Source::new("install").create();
    let before = reviews_total();
    assert_missing_source_refused("install", "clone");
    assert_created(
        &create(&clone_of_data("install", Some("gp3"), "10Gi"), &[]),
        "clone",
        &[],
    );
    assert_created(&create(&plain_claim("install", "plain"), &[]), "plain", &[]);
    // The verdicts came from the pods behind the Service: their review counters moved.
    let reviewed = reviews_total() - before;
    assert!(
        reviewed >= 3.0,
        "the pods reviewed the creates ({reviewed})"
    );
}

// ---- operations while claims keep coming --------------------------------------------------

/// The correct verdict of one create of the load: a valid clone and a plain claim admitted,
/// the invalid clone refused with `[source-exists]` word for word; anything else is wrong.
fn correct_verdict(kind: &str, namespace: &str, name: &str, run: &Run) -> Result<String, String> {
    let admitted = run.code == 0
        && run.stdout == format!("persistentvolumeclaim/{name} created\n")
        && run.stderr.is_empty();
    match kind {
        "invalid" if run.code != 0 && run.stderr == denial(&missing_source(namespace, "ghost")) => {
            Ok("refused [source-exists]".into())
        }
        "valid" | "plain" if admitted => Ok("admitted".into()),
        _ => Err(format!(
            "{name}: exit {}: {}{}",
            run.code,
            run.stdout,
            run.stderr.trim()
        )),
    }
}

/// A client per kind (valid clones, invalid clones, plain claims), each creating claims
/// back to back.
fn start_load(namespace: &'static str) -> Load {
    Load::start(namespace, "30s", Duration::ZERO, correct_verdict)
}

/// Stops the load and prints its tally under `tag`: every create got its correct verdict,
/// and each kind was judged. Returns the number of creates.
fn finish_load(load: Load, tag: &str) -> usize {
    let (tally, wrong) = load.finish();
    let total = tally.values().sum();
    eprintln!("[{tag}] {total} creates, by verdict:");
    for (outcome, count) in &tally {
        eprintln!("[{tag}]   {count:>5}  {outcome}");
    }
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "every create gets its correct verdict"
    );
    for kind in [
        "valid: admitted",
        "invalid: refused [source-exists]",
        "plain: admitted",
    ] {
        assert!(tally.get(kind).copied().unwrap_or(0) > 0, "some {kind}");
    }
    total
}

fn assert_no_restart() {
    for pod in pods() {
        assert_eq!(pod.restarts, 0, "{} never restarted", pod.name);
    }
}

/// Polls a pod's /readyz and /livez every 100 ms; records each change of the answer.
fn watch_probes(ip: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = String::new();
        let mut changes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let answer = sh(&format!(
                "for p in readyz livez; do printf '%s=%s ' $p $(curl -s -o /dev/null -w '%{{http_code}}' --max-time 1 http://{ip}:8080/$p); done"
            ));
            if answer != last {
                changes.push(format!(
                    "{:>5.1} s {answer}",
                    started.elapsed().as_secs_f64()
                ));
                last = answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        changes
    })
}

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn rollout_restart_a_deleted_pod_and_a_certificate_rotation_lose_no_verdict() {
    install();
    let namespace = "operations";
    new_namespace(namespace);
    Source::new(namespace).create();
    let load = start_load(namespace);
    std::thread::sleep(Duration::from_secs(3));

    // 1. kubectl rollout restart: new pods Ready before old ones go (maxUnavailable 0), the
    //    old ones unready at once and drained.
    let started = Instant::now();
    let at = load.creates();
    assert_eq!(
        ok(&["rollout", "restart", DEPLOYMENT, "-n", NS]),
        "deployment.apps/pvc-clone-guard restarted\n"
    );
    wait_rolled_out();
    wait_for(
        "two pods, none terminating",
        Duration::from_secs(120),
        || pods().len() == 2 && ready_pods().len() == 2,
    );
    let restart = (started.elapsed(), load.creates() - at);
    std::thread::sleep(Duration::from_secs(3));

    // 2. One pod deleted: the replica set replaces it; the deleted one goes unready as its
    //    shutdown begins (preStop sleep 5 s first), and its probes say so.
    let victim = ready_pods().remove(0);
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probes = watch_probes(victim.ip.clone(), stop_probes.clone());
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let at = load.creates();
    assert_eq!(
        ok(&["delete", "pod", &victim.name, "-n", NS]),
        format!("pod \"{}\" deleted\n", victim.name)
    );
    wait_for(
        "the deleted pod is replaced and gone",
        Duration::from_secs(120),
        || {
            let now = pods();
            now.len() == 2 && now.iter().all(|pod| pod.ready && pod.name != victim.name)
        },
    );
    let deleted = (started.elapsed(), load.creates() - at);
    stop_probes.store(true, Ordering::Relaxed);
    let probe_changes = probes.join().expect("probes");
    std::thread::sleep(Duration::from_secs(3));

    // 3. Certificate rotation: a new serving certificate (same CA), the Secret replaced by
    //    re-applying the overlay; the kubelet refreshes the volume, the server reloads it;
    //    no restart.
    let before: Vec<(String, String)> = ready_pods()
        .iter()
        .map(|pod| (pod.uid.clone(), served_certificate(&pod.ip)))
        .collect();
    let old = file_certificate();
    issue_certificates();
    let new = file_certificate();
    assert_ne!(old, new, "certs issued a new serving certificate");
    for (_, served) in &before {
        assert_eq!(*served, old, "the pods served the old certificate");
    }
    let started = Instant::now();
    let at = load.creates();
    let applied = apply_overlay();
    assert!(
        applied.contains("secret/pvc-clone-guard-tls configured\n"),
        "{applied}"
    );
    wait_for(
        "both pods serve the new certificate",
        Duration::from_secs(180),
        || {
            ready_pods()
                .iter()
                .all(|pod| served_certificate(&pod.ip) == new)
        },
    );
    let rotated = (started.elapsed(), load.creates() - at);
    let uids: Vec<String> = ready_pods().into_iter().map(|pod| pod.uid).collect();
    for (uid, _) in &before {
        assert!(uids.contains(uid), "no pod was replaced by the rotation");
    }
    std::thread::sleep(Duration::from_secs(3));

    finish_load(load, "operations");
    for (what, (took, creates)) in [
        ("rollout restart, until rolled out", restart),
        ("pod deleted, until replaced and gone", deleted),
        ("Secret replaced, until both pods serve it", rotated),
    ] {
        eprintln!(
            "[operations] {what}: {:.1} s, {creates} creates meanwhile",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "[operations] probes of the deleted pod {} (readyz, livez), from 0.5 s before the delete:",
        victim.name
    );
    for change in &probe_changes {
        eprintln!("[operations]   {change}");
    }
    assert_no_restart();
    // The deleted pod answered ready until its shutdown began, then never ready again.
    let first = probe_changes.first().expect("probed");
    assert!(first.ends_with("readyz=200 livez=200"), "{first}");
    let unready = probe_changes
        .iter()
        .position(|change| !change.contains("readyz=200"))
        .expect("the deleted pod stopped answering ready");
    assert!(
        probe_changes[unready..]
            .iter()
            .all(|change| !change.contains("readyz=200")),
        "{probe_changes:?}"
    );
}

// ---- an eviction through the PodDisruptionBudget --------------------------------------------

/// POSTs an Eviction of a webhook pod to its `eviction` subresource as the admin, as
/// `kubectl drain` does (policy/v1beta1, the version 1.20 serves); returns the HTTP status
/// and the body.
fn evict(pod: &str) -> (u16, Value) {
    let eviction = format!(
        r#"{{"apiVersion":"policy/v1beta1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{NS}"}}}}"#
    );
    let answer = sh(&format!(
        "curl -sS --max-time 10 --cacert {ca} -H 'Authorization: Bearer {token}' \
         -H 'Content-Type: application/json' --data '{eviction}' -w '\\n%{{http_code}}' \
         {url}/api/v1/namespaces/{NS}/pods/{pod}/eviction",
        ca = ENV.dir.join("ca.crt").display(),
        token = ENV.vars["ADMIN_TOKEN"],
        url = ENV.vars["APISERVER_URL"],
    ));
    let (body, code) = answer.rsplit_once('\n').unwrap_or(("", &answer));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn budget() -> Value {
    json(&["get", "poddisruptionbudget", "pvc-clone-guard", "-n", NS])
}

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn an_eviction_waits_for_the_disruption_budget_and_loses_no_verdict() {
    install();
    let namespace = "eviction";
    new_namespace(namespace);
    Source::new(namespace).create();
    // The shipped budget, as the API server holds it: policy/v1beta1, minAvailable 1.
    wait_for(
        "the budget allows one disruption",
        Duration::from_secs(60),
        || budget()["status"]["disruptionsAllowed"] == 1,
    );
    let shipped = budget();
    assert_eq!(shipped["apiVersion"], "policy/v1beta1");
    assert_eq!(shipped["spec"]["minAvailable"], 1);
    let load = start_load(namespace);
    // The fewest Ready webhook pods seen at any moment, polled throughout.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let fewest = {
        let stop = stop_watch.clone();
        std::thread::spawn(move || {
            let mut fewest = usize::MAX;
            while !stop.load(Ordering::Relaxed) {
                fewest = fewest.min(ready_pods().len());
                std::thread::sleep(Duration::from_millis(100));
            }
            fewest
        })
    };
    std::thread::sleep(Duration::from_secs(3));

    let mut ready = ready_pods();
    assert_eq!(ready.len(), 2, "two Ready replicas");
    let (first, second) = (ready.remove(0), ready.remove(0));
    let started = Instant::now();
    let at = load.creates();
    // 1. The first eviction is allowed: one disruption of two Ready replicas.
    let (code, body) = evict(&first.name);
    assert_eq!(code, 201, "the first eviction is allowed: {body}");
    // 2. The second, at once, while the first one's replacement is starting: refused.
    let (code, body) = evict(&second.name);
    let ready_then: Vec<String> = ready_pods().into_iter().map(|pod| pod.name).collect();
    assert_eq!(
        ready_then,
        std::slice::from_ref(&second.name),
        "the first one's replacement was not Ready yet"
    );
    assert_eq!(code, 429, "the second eviction is refused: {body}");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = body["details"]["causes"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        [1, 2].iter().any(|healthy| cause
            == format!(
                "The disruption budget pvc-clone-guard needs 1 healthy pods and has {healthy} currently"
            )),
        "{cause}"
    );
    let first_refusal = started.elapsed();
    // 3. Retried every second, as `kubectl drain` retries: allowed once the replacement is
    //    Ready, and only then.
    let mut refusals = 1;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let (code, body) = evict(&second.name);
        match code {
            201 => break,
            429 => refusals += 1,
            _ => panic!("eviction: {code} {body}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the second eviction was never allowed"
        );
    }
    let allowed = started.elapsed();
    let replacement: Vec<String> = ready_pods()
        .into_iter()
        .map(|pod| pod.name)
        .filter(|name| *name != first.name && *name != second.name)
        .collect();
    assert_eq!(
        replacement.len(),
        1,
        "the replacement is Ready when the second eviction is allowed"
    );
    wait_for(
        "two new Ready pods, none terminating",
        Duration::from_secs(180),
        || {
            let now = pods();
            now.len() == 2
                && now.iter().all(|pod| {
                    pod.ready && !pod.deleting && pod.name != first.name && pod.name != second.name
                })
        },
    );
    let replaced = (started.elapsed(), load.creates() - at);
    std::thread::sleep(Duration::from_secs(3));
    stop_watch.store(true, Ordering::Relaxed);
    let fewest = fewest.join().expect("watcher");

    finish_load(load, "eviction");
    eprintln!(
        "[eviction] first eviction allowed (201); second refused (429) {refusals} times over {:.1} s, the first {:.1} s after the first eviction: {cause}",
        (allowed - first_refusal).as_secs_f64(),
        first_refusal.as_secs_f64()
    );
    eprintln!(
        "[eviction] second eviction allowed {:.1} s after the first, once the replacement {} was Ready; both replaced in {:.1} s, {} creates meanwhile; fewest Ready webhook pods at any time: {fewest}",
        allowed.as_secs_f64(),
        replacement[0],
        replaced.0.as_secs_f64(),
        replaced.1
    );
    assert!(fewest >= 1, "a Ready replica at all times");
    assert_no_restart();
}

// ---- memory under the scale test's counts -------------------------------------------------

/// The objects of benches/scale/run.sh (its generator, read from that script), FROM..TO of
/// each kind, into DIR. Pods get a schedulerName no scheduler serves: they stay Pending,
/// as unfinished pods the webhook indexes, and are never started on this node.
fn generate(from: usize, to: usize, dir: &std::path::Path) {
    let script = std::fs::read_to_string(ENV.repo.join("benches/scale/run.sh")).expect("run.sh");
    let generator: String = script
        .lines()
        .skip_while(|line| !line.ends_with("<<'PY'"))
        .skip(1)
        .take_while(|line| *line != "PY")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        generator.contains("def pod(i)"),
        "the generator of benches/scale/run.sh"
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    let status = Command::new("python3")
        .arg("-c")
        .arg(generator)
        .args([&from.to_string(), &to.to_string()])
        .arg(dir)
        .status()
        .expect("python3");
    assert!(status.success());
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if !path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("pod-"))
        {
            continue;
        }
        let mut list: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        for pod in list["items"].as_array_mut().expect("items") {
            pod["spec"]["schedulerName"] = "never-scheduled".into();
        }
        std::fs::write(&path, serde_json::to_vec(&list).expect("json")).expect("write");
    }
}

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn the_memory_limit_holds_with_the_scale_tests_objects_in_the_cluster() {
    install();
    let count: usize = std::env::var("PVC_CLONE_GUARD_NODE_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    // Minutes the load may take; once over, it is stopped and the figure taken at the size
    // reached (printed; the cache check then asks for what the cluster holds).
    let load_budget = std::env::var("PVC_CLONE_GUARD_NODE_SCALE_MINUTES")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .map(|minutes| Duration::from_secs(60 * minutes));
    new_namespace("scale");
    wait_for(
        "the default ServiceAccount of scale",
        Duration::from_secs(60),
        || kubectl(&["get", "serviceaccount", "default", "-n", "scale"]).code == 0,
    );
    let dir = ENV.dir.join("scale-objects");
    let existing = held("/api/v1/namespaces/scale/pods");
    let started = Instant::now();
    if existing < count {
        generate(existing, count, &dir);
        // Loaded while no replica runs: two webhook pods decoding each of the 3 × N objects
        // from their watches made the load several times slower on this 2-core machine (and
        // every claim create a review). The figure below is taken from fresh pods that list
        // everything at start-up, whatever was running while the objects were created.
        ok(&["scale", DEPLOYMENT, "-n", NS, "--replicas=0"]);
        wait_for("no webhook pod", Duration::from_secs(120), || {
            pods().is_empty()
        });
        // Lists of 500 created by `kubectl create` four at a time, as benches/scale/run.sh
        // does, the three kinds of each range together (pod-, pv- and pvc-000500.json), so
        // that a load cut short holds as many of each; without client-side validation,
        // which fetches the API server's whole OpenAPI document on every run.
        // Every created object's name goes to created.txt: the rate is printed each minute,
        // so that a load stopped short still says how far it got and how fast.
        let created = ENV.dir.join("scale-created.txt");
        let mut child = Command::new("bash")
            .process_group(0)
            .arg("-c")
            .arg(format!(
                "cd {} && printf '%s\\0' *.json | sort -z -t- -k2,2 -k1,1 | xargs -0 -P 4 -I{{}} kubectl --kubeconfig {} create --validate=false -f {{}} -o name >>{}",
                dir.display(),
                ENV.dir.join("admin.kubeconfig").display(),
                created.display()
            ))
            .spawn()
            .expect("bash");
        let to_create = 3 * (count - existing);
        let status = loop {
            for _ in 0..300 {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if load_budget.is_some_and(|budget| started.elapsed() >= budget) {
                // Out of time: stop the load (bash, xargs and every kubectl, one process
                // group) and measure at the size reached.
                sh(&format!("kill -TERM -- -{}", child.id()));
                child.wait().expect("wait");
                break None;
            }
            let done = sh(&format!(
                "wc -l <{} 2>/dev/null || echo 0",
                created.display()
            ))
            .parse::<f64>()
            .unwrap_or(0.0);
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "[memory] created {done:.0} of {to_create} objects in {seconds:.0} s ({:.0} a second)",
                done / seconds
            );
        };
        match status {
            Some(status) => assert!(status.success(), "creating the scale objects"),
            None => eprintln!(
                "[memory] load stopped after PVC_CLONE_GUARD_NODE_SCALE_MINUTES={} before {count} of each",
                load_budget.expect("a budget").as_secs() / 60
            ),
        }
    }
    // What the cluster holds (fewer than asked for when the load was stopped).
    let (claims, volumes, scale_pods) = (
        held("/api/v1/namespaces/scale/persistentvolumeclaims"),
        held("/api/v1/persistentvolumes"),
        held("/api/v1/namespaces/scale/pods"),
    );
    eprintln!(
        "[memory] {claims} PVCs, {volumes} PVs, {scale_pods} pods in the cluster, {count} of each asked for ({:.0} s to create, {:.0} objects a second)",
        started.elapsed().as_secs_f64(),
        (claims + volumes + scale_pods).saturating_sub(3 * existing) as f64
            / started.elapsed().as_secs_f64()
    );
    let count = claims.min(volumes).min(scale_pods);

    // Fresh pods start with every object to list: the start-up peak is part of the figure.
    // Both replicas back, as shipped, after the load; else a restart.
    let started = Instant::now();
    if pods().is_empty() {
        apply_overlay();
    } else {
        ok(&["rollout", "restart", DEPLOYMENT, "-n", NS]);
    }
    // Listing 3 × N objects takes longer on a busy machine.
    let patience = Duration::from_secs(300 + count as u64 / 25);
    wait_rolled_out_within(patience);
    wait_for("two pods, none terminating", patience, || {
        pods().len() == 2 && ready_pods().len() == 2
    });
    let ready = started.elapsed();
    let pods = ready_pods();
    let synced = wait_for("every cache holds the scale objects", patience, || {
        pods.iter().all(|pod| {
            pod_metric(pod, "pvc_clone_guard_cached_objects{resource=\"pods\"}") >= count as f64
                && pod_metric(
                    pod,
                    "pvc_clone_guard_cached_objects{resource=\"persistentvolumeclaims\"}",
                ) >= count as f64
                && pod_metric(
                    pod,
                    "pvc_clone_guard_cached_objects{resource=\"persistentvolumes\"}",
                ) >= count as f64
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "[memory] rollout restart to both Ready: {:.1} s; caches holding every object {:.1} s later",
        ready.as_secs_f64(),
        synced.as_secs_f64()
    );
    for pod in &pods {
        let usage = cgroup_value(pod, "memory.usage_in_bytes");
        let peak = cgroup_value(pod, "memory.max_usage_in_bytes");
        let limit = cgroup_value(pod, "memory.limit_in_bytes");
        let failcnt = cgroup_value(pod, "memory.failcnt");
        let rss: u64 = std::fs::read_to_string(memory_cgroup(pod).join("memory.stat"))
            .expect("memory.stat")
            .lines()
            .find_map(|line| line.strip_prefix("total_rss "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        // The server process's own view, as benches/scale/run.sh reports it.
        let procs =
            std::fs::read_to_string(memory_cgroup(pod).join("cgroup.procs")).expect("cgroup.procs");
        let status = std::fs::read_to_string(format!(
            "/proc/{}/status",
            procs.lines().next().expect("a process")
        ))
        .expect("status");
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0)
        };
        let mib = |bytes: u64| bytes as f64 / 1024.0 / 1024.0;
        eprintln!(
            "[memory] {}: cgroup memory.usage_in_bytes {:.1} MiB, memory.max_usage_in_bytes {:.1} MiB \
             (total_rss {:.1} MiB), limit {:.0} MiB, failcnt {failcnt}; process VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            pod.name,
            mib(usage),
            mib(peak),
            mib(rss),
            mib(limit),
            mib(kib("VmRSS:") * 1024),
            mib(kib("VmHWM:") * 1024)
        );
        assert_eq!(limit, MEMORY_LIMIT, "the kubelet set the shipped limit");
        assert!(peak < limit, "the peak stays under the limit");
        assert_eq!(failcnt, 0, "the limit was never hit");
    }
    // No OOM kill.
    assert_no_restart();
    // Still judging, at that size.
    assert_missing_source_refused("scale", "clone");
    // Still both Ready, the same pods, never restarted, nothing killed in their cgroups.
    let after = ready_pods();
    assert_eq!(
        after.iter().map(|pod| &pod.uid).collect::<Vec<_>>(),
        pods.iter().map(|pod| &pod.uid).collect::<Vec<_>>(),
        "the same two pods still Ready"
    );
    for pod in &after {
        let oom_kills = std::fs::read_to_string(memory_cgroup(pod).join("memory.oom_control"))
            .expect("memory.oom_control")
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|value| value.trim().parse::<u64>().ok());
        eprintln!(
            "[memory] {}: Ready, restarts {}, oom_kill {}",
            pod.name,
            pod.restarts,
            oom_kills.map_or("(not reported)".to_owned(), |n| n.to_string())
        );
        assert_eq!(pod.restarts, 0);
        assert!(oom_kills.unwrap_or(0) == 0, "no OOM kill in {}", pod.name);
    }
}

// ---- no replica, no lock-out; opt-outs (SPEC §8) -------------------------------------------

fn ctr(args: &[&str]) {
    run_ok(
        Command::new(ENV.repo.join("tests/cluster/node.sh"))
            .arg("ctr")
            .arg(&ENV.dir)
            .args(args),
    );
}

const IMAGE: &str = "docker.io/library/pvc-clone-guard:0.1.0";
const REAL_IMAGE: &str = "docker.io/library/pvc-clone-guard:real-copy";

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn an_install_whose_image_does_not_start_locks_out_no_claim() {
    install();
    new_namespace("lockout");
    Source::new("lockout").create();
    // A fresh install whose image does not start: the shipped overlay, and under the
    // shipped image name an image that runs but never serves (the pause image: it ignores
    // the arguments and listens on nothing), so no replica is ever Ready. Nothing is
    // pulled: the name is present on the node.
    ok(&["delete", DEPLOYMENT, "-n", NS, "--wait=true"]);
    wait_for("no webhook pod", Duration::from_secs(120), || {
        pods().is_empty()
    });
    ctr(&["images", "tag", "--force", IMAGE, REAL_IMAGE]);
    ctr(&[
        "images",
        "tag",
        "--force",
        "registry.k8s.io/pause:3.4.1",
        IMAGE,
    ]);
    apply_overlay();
    wait_for(
        "the new pods run, none Ready",
        Duration::from_secs(120),
        || {
            let now = pods();
            now.len() == 2
                && now
                    .iter()
                    .all(|pod| !pod.ready && !pod.container_id.is_empty())
        },
    );
    assert_eq!(endpoint_ips(), "", "no replica serves");
    // failurePolicy Ignore: claims and clones are created, unchecked (the status quo
    // without the webhook), the bad one included.
    assert_created(&create(&plain_claim("lockout", "plain"), &[]), "plain", &[]);
    assert_created(
        &create(&clone_of_data("lockout", Some("gp3"), "10Gi"), &[]),
        "clone",
        &[],
    );
    assert_created(
        &create(
            &clone_yaml(
                "lockout",
                "unchecked",
                "nope",
                Some("gp3"),
                "1Gi",
                "Filesystem",
            ),
            &[],
        ),
        "unchecked",
        &[],
    );

    // The real image under the same name, and nothing else but the pods restarting.
    ctr(&["images", "tag", "--force", REAL_IMAGE, IMAGE]);
    ok(&[
        "delete",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=pvc-clone-guard",
        "--wait=false",
    ]);
    wait_rolled_out();
    wait_for("two Ready pods", Duration::from_secs(120), || {
        pods().len() == 2 && ready_pods().len() == 2
    });
    assert_missing_source_refused("lockout", "clone2");
}

#[test]
#[ignore = "needs a real node: run tests/node.sh"]
fn a_namespace_or_a_claim_labelled_skip_is_not_reviewed() {
    install();
    // A namespace labelled pvc-clone-guard.io/skip: "true": neither webhook reviews it.
    new_namespace("skipped");
    ok(&[
        "label",
        "namespace",
        "skipped",
        "pvc-clone-guard.io/skip=true",
    ]);
    assert_created(
        &create(
            &clone_yaml("skipped", "clone", "nope", Some("gp3"), "1Gi", "Filesystem"),
            &[],
        ),
        "clone",
        &[],
    );
    // In a reviewed namespace, a labelled claim is not reviewed; the same claim unlabelled is.
    new_namespace("reviewed");
    let labelled = clone_yaml("reviewed", "labelled", "nope", Some("gp3"), "1Gi", "Filesystem")
        .replace(
            "metadata: {name: labelled, namespace: reviewed}",
            "metadata:\n  name: labelled\n  namespace: reviewed\n  labels: {pvc-clone-guard.io/skip: \"true\"}",
        );
    assert_created(&create(&labelled, &[]), "labelled", &[]);
    assert_missing_source_refused("reviewed", "clone");
}
