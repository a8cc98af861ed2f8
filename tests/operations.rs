//! Operating the webhook, against the real local control plane: the API server's audit log
//! records each judged review's verdict (the webhook's audit annotations), and a real
//! Prometheus, loaded with the rules of the shipped PrometheusRule, raises the fail-closed
//! alert while kube-apiserver is down and clears it after it returns; the README's install,
//! upgrade and uninstall run as written. Run by tests/e2e.sh on
//! a control plane of its own (the second test stops kube-apiserver), one test at a time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::cluster::*;

// ---- audit trail ---------------------------------------------------------------------------

/// The pvc-clone-guard annotations of the audit event of `kubectl create` of claim `name`.
fn audit_annotations(namespace: &str, name: &str) -> Option<(u64, BTreeMap<String, String>)> {
    let log = std::fs::read_to_string(&ENV.vars["AUDIT_LOG"]).ok()?;
    let prefix = format!("{WEBHOOK}/");
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rfind(|event| {
            event["verb"] == "create"
                && event["stage"] == "ResponseComplete"
                && event["objectRef"]["resource"] == "persistentvolumeclaims"
                && event["objectRef"]["namespace"] == namespace
                && event["objectRef"]["name"] == name
        })
        .map(|event| {
            let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
            let annotations = event["annotations"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(key, value)| {
                    Some((
                        key.strip_prefix(&prefix)?.to_owned(),
                        value.as_str()?.to_owned(),
                    ))
                })
                .collect();
            (code, annotations)
        })
}

fn wait_for_audit_event(namespace: &str, name: &str) -> (u64, BTreeMap<String, String>) {
    let mut found = None;
    wait_until(
        || {
            found = audit_annotations(namespace, name);
            found.is_some()
        },
        &format!("the audit log has the create of {namespace}/{name}"),
    );
    found.expect("found")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn the_audit_log_records_the_verdict_of_refused_and_admitted_clones() {
    namespace_with_source("ops-audit");

    let refused = clone_yaml("ops-audit", "refused", "data", Some("gp3"), "1Gi", "Block");
    assert_denied(
        &create(&refused, &[]),
        "[volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem\n\
         [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi",
    );
    let admitted = clone_yaml(
        "ops-audit",
        "admitted",
        "data",
        Some("gp3"),
        "10Gi",
        "Filesystem",
    );
    assert_created(&create(&admitted, &[]), "admitted", &[]);
    let plain = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: plain, namespace: ops-audit}\nspec:\n  \
                 accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {requests: {storage: 1Gi}}\n";
    assert_created(&create(plain, &[]), "plain", &[]);

    assert_eq!(
        wait_for_audit_event("ops-audit", "refused"),
        (
            403,
            map(&[("verdict", "denied"), ("denied-rules", "volume-mode,size")])
        )
    );
    assert_eq!(
        wait_for_audit_event("ops-audit", "admitted"),
        (201, map(&[("verdict", "allowed")]))
    );
    // Not a clone: the webhook is called but judges nothing, and says nothing.
    assert_eq!(
        wait_for_audit_event("ops-audit", "plain"),
        (201, BTreeMap::new())
    );

    // A lookup that fails (the webhook's identity loses its RBAC; a source the caches do not
    // hold is then read from the API server, which refuses): the cause is recorded too.
    revoke_webhook_rbac();
    let cause = "reading persistentvolumeclaims from the API server failed: persistentvolumeclaims \"ghost\" is forbidden: \
                 User \"pvc-clone-guard\" cannot get resource \"persistentvolumeclaims\" in API group \"\" in the namespace \"ops-audit\"";
    let ghost = clone_yaml(
        "ops-audit",
        "ghost-clone",
        "ghost",
        Some("gp3"),
        "1Gi",
        "Filesystem",
    );
    let mut run = create(&ghost, &[]);
    // RBAC changes reach the authorizer within a moment.
    for _ in 0..50 {
        if run.stderr.contains("is forbidden") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        run = create(&ghost, &[]);
    }
    restore_webhook_rbac();
    assert_denied(
        &run,
        &format!(
            "pvc-clone-guard could not check this clone: {cause}; the webhook fails closed, \
             so retry in a moment or ask an administrator to check pvc-clone-guard"
        ),
    );
    assert_eq!(
        wait_for_audit_event("ops-audit", "ghost-clone"),
        (403, map(&[("verdict", "failed-closed"), ("cause", cause)]))
    );
}

// ---- alerts, evaluated by a real Prometheus -------------------------------------------------

/// A Prometheus server of our own on loopback, stopped (by its pid) when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    /// Scrapes the webhook's admin port every second and evaluates the shipped rules every
    /// second; config, data and log live in the control plane's directory.
    fn start(dir: &Path) -> Prometheus {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let rules = Command::new(ENV.repo.join("tests/alerts/rules.sh"))
            .output()
            .expect("tests/alerts/rules.sh runs");
        assert!(rules.status.success(), "rules.sh: {rules:?}");
        std::fs::write(dir.join("rules.yaml"), &rules.stdout).expect("rules.yaml");
        let target = ENV.vars["WEBHOOK_ADMIN_URL"].trim_start_matches("http://");
        // The job name is what the Prometheus Operator gives a ServiceMonitor's targets (the
        // Service's name), which the rules select.
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [rules.yaml]\n\
                 scrape_configs:\n  - job_name: pvc-clone-guard\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .expect("prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package `prometheus`, see tests/cluster/install.sh)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn get(&self, path: &str) -> Option<Value> {
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "2", &format!("{}{path}", self.url)])
            .output()
            .ok()?;
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `(alertname, state)` of every pending or firing alert.
    fn alerts(&self) -> Vec<(String, String)> {
        let answer = self.get("/api/v1/alerts").unwrap_or(Value::Null);
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn alert(&self, name: &str) -> Option<String> {
        self.alerts()
            .into_iter()
            .find(|(alert, _)| alert == name)
            .map(|(_, state)| state)
    }

    /// Whether the webhook's target has been scraped successfully.
    fn target_up(&self) -> bool {
        let answer = self
            .get("/api/v1/query?query=up%7Bjob%3D%22pvc-clone-guard%22%7D")
            .unwrap_or(Value::Null);
        answer["data"]["result"][0]["value"][1] == "1"
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clone_review(namespace: &str) -> Value {
    let mut claim = common::claim("clone", Some(common::claim_source("data")), "10Gi");
    claim["metadata"]["namespace"] = json!(namespace);
    let mut review = common::create(claim);
    review["request"]["namespace"] = json!(namespace);
    review
}

fn ready() -> bool {
    readyz() == 200
}

/// Polls `condition` every 250 ms (doing `meanwhile` before each poll) until it holds or
/// `limit` passes; returns how long it took.
fn within(
    limit: Duration,
    what: &str,
    mut meanwhile: impl FnMut(),
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        meanwhile();
        if condition() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

const FAILING_CLOSED: &str = "PvcCloneGuardFailingClosed";

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn prometheus_raises_fail_closed_while_the_api_server_is_down_and_clears_it_after() {
    namespace_with_source("ops-alerts");
    wait_until(ready, "the webhook is ready");
    let review = clone_review("ops-alerts");
    let verdict = |answer: Value| answer["response"]["allowed"].clone();
    assert_eq!(verdict(post_to_webhook(&review)), true, "baseline");

    let prometheus = Prometheus::start(&ENV.dir.join("prometheus"));
    within(
        Duration::from_secs(30),
        "Prometheus scrapes the webhook",
        || {},
        || prometheus.target_up(),
    );
    // A healthy webhook raises nothing (PvcCloneGuardDown is pending only until the first
    // scrape has been evaluated).
    within(
        Duration::from_secs(15),
        "no alert on a healthy webhook",
        || {},
        || prometheus.alerts().is_empty(),
    );

    // kube-apiserver stops: clone reviews fail closed, and the alert goes pending (it
    // fires after `for: 5m`, longer than this test).
    let dir = ENV.dir.to_str().expect("utf-8");
    local_cluster(&["stop-apiserver", dir]);
    let mut refused = 0;
    let pending = within(
        Duration::from_secs(30),
        "PvcCloneGuardFailingClosed is pending",
        || {
            let answer = post_to_webhook(&review);
            assert_eq!(verdict(answer), false, "fails closed");
            refused += 1;
        },
        || {
            matches!(
                prometheus.alert(FAILING_CLOSED).as_deref(),
                Some("pending" | "firing")
            )
        },
    );
    eprintln!(
        "{FAILING_CLOSED} pending {pending:?} after kube-apiserver stopped ({refused} reviews refused); \
         alerts: {:?}",
        prometheus.alerts()
    );

    // kube-apiserver returns: reviews are judged again, and the alert clears once a minute
    // without a refusal has passed (the rule's 1m window).
    local_cluster(&["start-apiserver", dir]);
    within(
        Duration::from_secs(40),
        "the webhook is ready again",
        || {},
        ready,
    );
    assert_eq!(verdict(post_to_webhook(&review)), true, "recovered");
    let cleared = within(
        Duration::from_secs(100),
        "PvcCloneGuardFailingClosed clears",
        || {},
        || prometheus.alert(FAILING_CLOSED).is_none(),
    );
    eprintln!(
        "{FAILING_CLOSED} cleared {cleared:?} after recovery; alerts: {:?}",
        prometheus.alerts()
    );
}

// ---- install, upgrade, uninstall -------------------------------------------------------------

/// `kubectl ARGS` from a copy of the repository, as the README's commands run.
fn kubectl_from(root: &Path, args: &[&str]) -> Run {
    kubectl_in(root, args, None)
}

fn exists(kind_name: &[&str]) -> bool {
    let mut args = vec!["get"];
    args.extend_from_slice(kind_name);
    kubectl(&args).code == 0
}

/// The README's install, upgrade and uninstall, with the shipped self-managed overlay and,
/// this being Kubernetes 1.20, the shipped `components/kubernetes-1.20`. This control plane
/// has no nodes, so no pod runs: the registration with `failurePolicy: Ignore` lets claims
/// through meanwhile. It replaces the local registration (same name) and deletes the shipped
/// ClusterRole, so both are put back at the end for the other tests of the suite.
#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn the_documented_install_upgrade_and_uninstall_work_on_kubernetes_1_20() {
    let readme = std::fs::read_to_string(ENV.repo.join("README.md")).expect("README");
    let install = "kubectl apply -k manifests/overlays/self-managed";
    let uninstall = [
        "kubectl delete validatingwebhookconfiguration pvc-clone-guard --ignore-not-found",
        "kubectl delete -k manifests/overlays/self-managed --ignore-not-found",
    ];
    for command in [install].iter().chain(&uninstall) {
        assert!(readme.contains(command), "the README documents `{command}`");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();
    common::copy_tree(&ENV.repo.join("manifests"), &root.join("manifests"));
    let overlay = "manifests/overlays/local-1.20";
    std::fs::create_dir_all(root.join(overlay)).expect("mkdir");
    let write_overlay = |tag: &str| {
        std::fs::write(
            root.join(overlay).join("kustomization.yaml"),
            format!(
                "resources: [../self-managed]\ncomponents: [../../components/kubernetes-1.20]\n\
                 images:\n  - {{name: pvc-clone-guard, newName: registry.invalid/pvc-clone-guard, newTag: \"{tag}\"}}\n"
            ),
        )
        .expect("write the overlay");
    };
    write_overlay("0.1.0");
    let certs = run_ok(
        Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"))
            .args([
                "certs",
                "--out-dir",
                "manifests/overlays/self-managed/certs",
            ])
            .current_dir(root),
    );
    assert!(
        String::from_utf8_lossy(&certs.stdout).ends_with(&format!("next: {install}\n")),
        "certs says what to run next"
    );

    // Install.
    let run = must(
        kubectl_from(root, &["apply", "-k", overlay]),
        "kubectl apply -k (install)",
    );
    for object in [
        "namespace/pvc-clone-guard",
        "deployment.apps/pvc-clone-guard",
        "poddisruptionbudget.policy/pvc-clone-guard",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/pvc-clone-guard",
    ] {
        assert!(run.stdout.contains(object), "{object} in:\n{}", run.stdout);
    }
    // `jsonpath` of the installed Deployment.
    let deployment = |jsonpath: &str, what: &str| {
        let output = format!("jsonpath={jsonpath}");
        let args = [
            "-n",
            "pvc-clone-guard",
            "get",
            "deployment",
            "pvc-clone-guard",
            "-o",
        ];
        must(kubectl(&[&args[..], &[&output]].concat()), what).stdout
    };
    let image = || {
        deployment(
            "{.spec.template.spec.containers[0].image}",
            "read the image",
        )
    };
    assert_eq!(image(), "registry.invalid/pvc-clone-guard:0.1.0");
    // No replica runs: claims are created (failurePolicy: Ignore).
    namespace("ops-install");
    assert_created(
        &create(
            &clone_yaml(
                "ops-install",
                "clone",
                "ghost",
                Some("gp3"),
                "1Gi",
                "Filesystem",
            ),
            &[],
        ),
        "clone",
        &[],
    );

    // Upgrade: a new image and a changed policy, applied again.
    write_overlay("0.2.0");
    let config = root.join("manifests/base/config.yaml");
    let policy = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        policy.replace("lookupTimeout: 3s", "lookupTimeout: 2s"),
    )
    .expect("write config");
    let run = must(
        kubectl_from(root, &["apply", "-k", overlay]),
        "kubectl apply -k (upgrade)",
    );
    assert!(
        run.stdout
            .contains("deployment.apps/pvc-clone-guard configured"),
        "{}",
        run.stdout
    );
    assert_eq!(image(), "registry.invalid/pvc-clone-guard:0.2.0");
    let config_map = deployment(
        "{.spec.template.spec.volumes[?(@.name==\"config\")].configMap.name}",
        "read the config volume",
    );
    let data = must(
        kubectl(&[
            "-n",
            "pvc-clone-guard",
            "get",
            "configmap",
            &config_map,
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ]),
        "read the new policy",
    )
    .stdout;
    assert!(
        data.contains("lookupTimeout: 2s"),
        "the pods get the new policy"
    );

    // Uninstall, as documented: the webhook configuration first, then the rest; the second
    // command does not fail on the configuration already gone. `--wait=false` only because
    // this control plane has no namespace controller to finish deleting the namespace.
    let delete_webhook: Vec<&str> = uninstall[0].split(' ').skip(1).collect();
    must(
        kubectl_from(root, &delete_webhook),
        "delete the webhook configuration",
    );
    let delete_rest = [
        "delete",
        "-k",
        overlay,
        "--ignore-not-found",
        "--wait=false",
    ];
    must(
        kubectl_from(root, &delete_rest),
        "kubectl delete -k (uninstall)",
    );
    for object in [
        &["validatingwebhookconfiguration", "pvc-clone-guard"][..],
        &["clusterrole", "pvc-clone-guard"],
        &["clusterrolebinding", "pvc-clone-guard"],
        &["-n", "pvc-clone-guard", "deployment", "pvc-clone-guard"],
    ] {
        assert!(!exists(object), "{object:?} is gone");
    }
    must(
        kubectl_from(root, &delete_rest),
        "a second uninstall does not fail either",
    );

    // Put the suite's own setup back.
    must(
        kubectl(&[
            "apply",
            "-f",
            ENV.repo
                .join("manifests/base/clusterrole.yaml")
                .to_str()
                .expect("utf-8"),
        ]),
        "the shipped ClusterRole again",
    );
    must(
        kubectl(&[
            "apply",
            "-k",
            ENV.dir
                .join("webhook-registration")
                .to_str()
                .expect("utf-8"),
        ]),
        "the local registration again",
    );
    let mut attempt = 0;
    wait_until(
        || {
            attempt += 1;
            let name = format!("again-{attempt}");
            create(
                &clone_yaml(
                    "ops-install",
                    &name,
                    "ghost",
                    Some("gp3"),
                    "1Gi",
                    "Filesystem",
                ),
                &[],
            )
            .stderr
            .contains("[source-exists]")
        },
        "the local webhook judges again",
    );
}
