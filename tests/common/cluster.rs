//! Helpers for the tests that run against the local control plane started by
//! tests/e2e.sh (tests/cluster/dev-env.sh), which sets PVC_CLONE_GUARD_E2E_DIR.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use serde_json::Value;

pub use super::run_ok;

pub const WEBHOOK: &str = "validate.pvc-clone-guard.io";

/// The running dev environment, described by the env files `dev-env.sh up` wrote.
pub struct Env {
    pub dir: PathBuf,
    pub vars: HashMap<String, String>,
    pub repo: PathBuf,
}

pub static ENV: LazyLock<Env> = LazyLock::new(|| {
    let dir = PathBuf::from(
        std::env::var("PVC_CLONE_GUARD_E2E_DIR")
            .expect("PVC_CLONE_GUARD_E2E_DIR is set by tests/e2e.sh"),
    );
    let mut vars = HashMap::new();
    for file in ["cluster.env", "webhook.env"] {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                vars.insert(
                    key.trim().to_owned(),
                    value.trim().trim_matches('"').to_owned(),
                );
            }
        }
    }
    Env {
        dir,
        vars,
        repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
});

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

pub fn kubectl_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(ENV.dir.join("admin.kubeconfig"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl finishes").into()
}

pub fn kubectl(args: &[&str]) -> Run {
    kubectl_in(&ENV.dir, args, None)
}

pub fn must(run: Run, what: &str) -> Run {
    assert_eq!(
        run.code, 0,
        "{what} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

pub fn apply(yaml: &str) {
    must(
        kubectl_in(&ENV.dir, &["apply", "-f", "-"], Some(yaml)),
        "kubectl apply",
    );
}

pub fn local_cluster(args: &[&str]) {
    run_ok(Command::new(ENV.repo.join("tests/cluster/local-cluster.sh")).args(args));
}

/// `kubectl create -f clone.yaml` as a user runs it; returns the exit code and both outputs.
pub fn create(yaml: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clone.yaml"), yaml).expect("write clone.yaml");
    let mut args = vec!["create", "-f", "clone.yaml"];
    args.extend_from_slice(extra);
    kubectl_in(dir.path(), &args, None)
}

/// What kubectl prints when the webhook refuses clone.yaml.
pub fn denial(message: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"clone.yaml\": admission webhook \"{WEBHOOK}\" denied the request: {message}\n"
    )
}

pub fn assert_denied(run: &Run, message: &str) {
    assert_ne!(run.code, 0, "kubectl create must fail:\n{}", run.stdout);
    assert_eq!(run.stderr, denial(message));
}

pub fn assert_created(run: &Run, name: &str, warnings: &[&str]) {
    assert_eq!(run.code, 0, "kubectl create must succeed:\n{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("persistentvolumeclaim/{name} created\n")
    );
    let expected: String = warnings.iter().map(|w| format!("Warning: {w}\n")).collect();
    assert_eq!(run.stderr, expected);
}

/// StorageClasses shared by every test; created once, never changed (the hints in the
/// messages list them).
pub fn classes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let class = |name: &str, provisioner: &str| {
            format!("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: {provisioner}\n---\n")
        };
        apply(&[
            class("gp3", "ebs.csi.aws.com"),
            class("gp3-encrypted", "ebs.csi.aws.com"),
            class("standard-rwo", "pd.csi.storage.gke.io"),
            class("local-disks", "kubernetes.io/no-provisioner"),
            class("nfs", "nfs.csi.k8s.io"),
        ]
        .concat());
    });
}

/// Installs the project's CRDs (tests/cluster/crds: VolumeSnapshot, VolumeSnapshotContent,
/// ReferenceGrant, VolumePopulator, VolumeGroupSnapshot) and waits until the API server
/// serves every one of them.
pub fn install_crds() {
    let dir = ENV.repo.join("tests/cluster/crds");
    let dir = dir.to_str().expect("utf-8");
    must(kubectl(&["apply", "-f", dir]), "apply the CRDs");
    must(
        kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "-f",
            dir,
        ]),
        "the CRDs are established",
    );
}

/// `metadata.uid` of `resource` (e.g. `volumesnapshot/snap`) in `namespace`.
pub fn uid_of(resource: &str, namespace: &str) -> String {
    let jsonpath = "jsonpath={.metadata.uid}";
    must(
        kubectl(&["get", resource, "-n", namespace, "-o", jsonpath]),
        "read the uid",
    )
    .stdout
}

/// Takes the webhook's RBAC away: deletes the binding of the shipped ClusterRole to its user
/// that the local control plane creates.
pub fn revoke_webhook_rbac() {
    must(
        kubectl(&["delete", "clusterrolebinding", "pvc-clone-guard-local"]),
        "revoke",
    );
}

/// Gives the webhook its RBAC back (see [`revoke_webhook_rbac`]).
pub fn restore_webhook_rbac() {
    must(
        kubectl(&[
            "create",
            "clusterrolebinding",
            "pvc-clone-guard-local",
            "--clusterrole=pvc-clone-guard",
            "--user=pvc-clone-guard",
        ]),
        "restore",
    );
}

/// Binds claim `namespace/claim` and PersistentVolume `volume` to each other, as the
/// PV controller (not running here) would.
pub fn bind(namespace: &str, claim: &str, volume: &str) {
    local_cluster(&[
        "bind",
        ENV.dir.to_str().expect("utf-8 dir"),
        namespace,
        claim,
        volume,
    ]);
}

pub fn namespace(name: &str) {
    classes();
    local_cluster(&["namespace", ENV.dir.to_str().expect("utf-8 dir"), name]);
}

/// Namespace `name` with a healthy source claim `data` in it ([`Source`]).
pub fn namespace_with_source(name: &str) {
    namespace(name);
    Source::new(name).create();
}

/// How a test wants its source claim and volume.
pub struct Source<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub class: &'a str,
    /// `spec.csi.driver`, or `None` for a hostPath volume.
    pub driver: Option<&'a str>,
    pub request: &'a str,
    pub capacity: &'a str,
    pub mode: &'a str,
    pub bind: bool,
    /// The node the volume's required node affinity pins it to (`kubernetes.io/hostname`).
    pub node: Option<&'a str>,
}

impl<'a> Source<'a> {
    pub fn new(namespace: &'a str) -> Self {
        Source {
            namespace,
            name: "data",
            class: "gp3",
            driver: Some("ebs.csi.aws.com"),
            request: "10Gi",
            capacity: "10Gi",
            mode: "Filesystem",
            bind: true,
            node: None,
        }
    }

    pub fn volume_name(&self) -> String {
        format!("{}-{}", self.namespace, self.name)
    }

    pub fn create(self) -> Self {
        let pv = self.volume_name();
        let plugin = match self.driver {
            Some(driver) => format!("csi: {{driver: {driver}, volumeHandle: {pv}}}"),
            None => format!("hostPath: {{path: /tmp/{pv}}}"),
        };
        let affinity = self.node.map_or(String::new(), |node| {
            format!(
                "\n  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: \
                 [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]}}]}}}}"
            )
        });
        apply(&format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}}}\nspec:\n  capacity: {{storage: {cap}}}\n  \
             accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  volumeMode: {mode}\n  {plugin}{affinity}\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
             accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  volumeMode: {mode}\n  \
             resources: {{requests: {{storage: {request}}}}}\n",
            cap = self.capacity,
            class = self.class,
            mode = self.mode,
            name = self.name,
            ns = self.namespace,
            request = self.request,
        ));
        if self.bind {
            bind(self.namespace, self.name, &pv);
        }
        self
    }
}

/// A clone of `source` in `namespace`; `class: None` omits storageClassName.
pub fn clone_yaml(
    namespace: &str,
    name: &str,
    source: &str,
    class: Option<&str>,
    size: &str,
    mode: &str,
) -> String {
    let class = class.map_or(String::new(), |c| format!("  storageClassName: \"{c}\"\n"));
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n{class}  volumeMode: {mode}\n  \
         dataSource: {{kind: PersistentVolumeClaim, name: {source}}}\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

pub fn clone_of_data(namespace: &str, class: Option<&str>, size: &str) -> String {
    clone_yaml(namespace, "clone", "data", class, size, "Filesystem")
}

/// A claim with no data source: 1Gi of class gp3.
pub fn plain_claim(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

/// The `[source-exists]` refusal of a clone of `source`, missing from `namespace`.
pub fn missing_source(namespace: &str, source: &str) -> String {
    format!(
        "[source-exists] source claim \"{source}\" does not exist in namespace \"{namespace}\"; create it first, or fix spec.dataSource.name"
    )
}

/// `kubectl create` of clone `name` of "nope", which `namespace` does not hold: refused
/// with `[source-exists]`, word for word.
pub fn assert_missing_source_refused(namespace: &str, name: &str) {
    assert_denied(
        &create(
            &clone_yaml(namespace, name, "nope", Some("gp3"), "1Gi", "Filesystem"),
            &[],
        ),
        &missing_source(namespace, "nope"),
    );
}

/// The kinds of claim a [`Load`] creates, one client each: a valid clone of "data" (10Gi,
/// as [`Source::new`] makes it), an invalid clone of "ghost" (missing), a plain claim.
pub const LOAD_KINDS: [&str; 3] = ["valid", "invalid", "plain"];

/// The claim of kind `kind` (see [`LOAD_KINDS`]) named `name`.
pub fn load_claim(kind: &str, namespace: &str, name: &str) -> String {
    match kind {
        "valid" => clone_yaml(namespace, name, "data", Some("gp3"), "10Gi", "Filesystem"),
        "invalid" => clone_yaml(namespace, name, "ghost", Some("gp3"), "10Gi", "Filesystem"),
        _ => plain_claim(namespace, name),
    }
}

/// What a [`Load`] client makes of one create: the outcome to tally, or what was wrong.
pub type Judge = fn(kind: &str, namespace: &str, name: &str, run: &Run) -> Result<String, String>;

/// Clients that create claims through `kubectl create` back to back while a test operates
/// on the cluster, one thread per kind of [`LOAD_KINDS`], until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<BTreeMap<String, usize>>>,
    wrong: Arc<Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients in `namespace`: `kubectl create` with `request_timeout`, a pause of
    /// `pause` after each, every outcome judged by `judge`.
    pub fn start(
        namespace: &'static str,
        request_timeout: &'static str,
        pause: Duration,
        judge: Judge,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
        let workers = LOAD_KINDS
            .into_iter()
            .map(|kind| {
                let (stop, tally, wrong) = (stop.clone(), tally.clone(), wrong.clone());
                std::thread::spawn(move || {
                    let timeout = format!("--request-timeout={request_timeout}");
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let name = format!("{kind}-{i}");
                        let run = create(&load_claim(kind, namespace, &name), &[&timeout]);
                        let outcome =
                            judge(kind, namespace, &name, &run).unwrap_or_else(|problem| {
                                wrong.lock().expect("lock").push(problem);
                                "WRONG".into()
                            });
                        *tally
                            .lock()
                            .expect("lock")
                            .entry(format!("{kind}: {outcome}"))
                            .or_default() += 1;
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            wrong,
            workers,
        }
    }

    /// How many creates have been made so far.
    pub fn creates(&self) -> usize {
        self.tally.lock().expect("lock").values().sum()
    }

    /// Stops the clients; the tally by "kind: outcome", and what was wrong.
    pub fn finish(self) -> (BTreeMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().expect("a load client");
        }
        let tally = self.tally.lock().expect("lock").clone();
        let wrong = self.wrong.lock().expect("lock").clone();
        (tally, wrong)
    }
}

pub fn post_to_webhook(review: &Value) -> Value {
    let url = &ENV.vars["WEBHOOK_URL"];
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/validate")
        .to_owned();
    let ca = PathBuf::from(&ENV.vars["WEBHOOK_CA"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = serde_json::to_vec(review).expect("json");
    let (status, text) = runtime.block_on(super::https_post(&addr, &ca, &body));
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("AdmissionReview")
}

pub fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..100 {
        if condition() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

/// The HTTP status of the webhook's /readyz (0 when it does not answer).
pub fn readyz() -> u16 {
    let url = format!("{}/readyz", ENV.vars["WEBHOOK_ADMIN_URL"]);
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

/// A value of the webhook's /metrics, e.g. `pvc_clone_guard_cached_objects{resource="pods"}`.
pub fn metric(series: &str) -> Option<f64> {
    let url = format!("{}/metrics", ENV.vars["WEBHOOK_ADMIN_URL"]);
    let output = Command::new("curl").args(["-s", &url]).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Runs `tests/cluster/dev-env.sh COMMAND DIR` with extra environment variables.
pub fn dev_env(command: &str, env: &[(&str, &str)]) {
    run_ok(
        Command::new(ENV.repo.join("tests/cluster/dev-env.sh"))
            .args([command, ENV.dir.to_str().expect("utf-8 dir")])
            .envs(env.iter().copied()),
    );
}

/// Restarts the webhook (SIGTERM, then start and wait until ready) with extra environment
/// for dev-env.sh (`WEBHOOK_KUBECONFIG`, `WEBHOOK_EXTRA_ARGS`); no environment restores the
/// recorded setup.
pub fn restart_webhook(env: &[(&str, &str)]) {
    dev_env("stop-webhook", &[]);
    dev_env("start-webhook", env);
}

/// The pid of the running webhook, as dev-env.sh recorded it.
pub fn webhook_pid() -> String {
    std::fs::read_to_string(&ENV.vars["WEBHOOK_PID_FILE"])
        .expect("webhook pid file")
        .trim()
        .to_owned()
}

/// A kube client with the admin's identity, for tests that need many fast API calls.
pub async fn admin_client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(ENV.dir.join("admin.kubeconfig"))
        .expect("admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("admin config");
    kube::Client::try_from(config).expect("admin client")
}
