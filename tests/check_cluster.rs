//! `check` and `explain` against the real local control plane (tests/cluster/dev-env.sh):
//! objects created there, the real binary reading them with the identity of a user bound to
//! the README's reader ClusterRole (read from the README: exactly the RBAC it asks for),
//! outputs and exit codes asserted word for word. Started by `tests/e2e.sh` on a control
//! plane of its own (these tests stop and start the webhook); ignored by a plain `cargo test`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use common::cluster::*;

const BIN: &str = env!("CARGO_BIN_EXE_pvc-clone-guard");

/// What a user needs to run `check` and `explain`: the README's reader ClusterRole itself
/// (read from the README, so that the tests prove the role it shows), bound to the user
/// `e2e-reader`.
fn reader_rbac() -> String {
    let readme = include_str!("../README.md");
    let role = readme
        .split("```yaml\n")
        .filter_map(|block| block.split_once("```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("name: pvc-clone-guard-reader\n"))
        .expect("README.md shows the reader ClusterRole in a yaml block");
    format!("{role}---\n{READER_BINDING}")
}

const READER_BINDING: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: pvc-clone-guard-reader-e2e
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: pvc-clone-guard-reader
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: e2e-reader
";

/// A kubeconfig for user `e2e-reader`: the admin's credentials, impersonating the reader
/// (the control plane's static tokens cannot be added to), so that every request is
/// authorised by the reader's RBAC alone. Written once; its namespace is `namespace`.
fn reader_kubeconfig(namespace: &str) -> PathBuf {
    static RBAC: Once = Once::new();
    RBAC.call_once(|| {
        install_crds();
        apply(&reader_rbac());
    });
    impersonating("e2e-reader", Some(namespace))
}

/// A kubeconfig with the admin's credentials impersonating `user`, its namespace
/// `namespace` (else the admin's).
fn impersonating(user: &str, namespace: Option<&str>) -> PathBuf {
    let admin =
        std::fs::read_to_string(ENV.dir.join("admin.kubeconfig")).expect("admin kubeconfig");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&admin).expect("yaml");
    for entry in config["users"].as_sequence_mut().expect("users") {
        entry["user"]["as"] = user.into();
    }
    if let Some(namespace) = namespace {
        for context in config["contexts"].as_sequence_mut().expect("contexts") {
            context["context"]["namespace"] = namespace.into();
        }
    }
    let path = ENV
        .dir
        .join(format!("{user}-{}.kubeconfig", namespace.unwrap_or("")));
    std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("yaml")).expect("write");
    path
}

/// The binary run in `cwd` with `kubeconfig`; (exit code, stdout, stderr).
fn run(cwd: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A ready VolumeSnapshot `namespace/name` of claim "data" (4Gi), bound to its content, with
/// the status the snapshot controller (not running here) would write.
fn ready_snapshot(namespace: &str, name: &str) {
    let content = format!("{namespace}-{name}-content");
    apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{source: {{persistentVolumeClaimName: data}}}}\n"
    ));
    let uid = must(
        kubectl(&[
            "get",
            "volumesnapshot",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ]),
        "snapshot uid",
    )
    .stdout;
    apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {{name: {content}}}\n\
         spec:\n  driver: ebs.csi.aws.com\n  deletionPolicy: Delete\n  source: {{snapshotHandle: h-{name}}}\n  \
         volumeSnapshotRef: {{apiVersion: snapshot.storage.k8s.io/v1, kind: VolumeSnapshot, namespace: {namespace}, name: {name}, uid: {uid}}}\n"
    ));
    must(
        kubectl(&[
            "patch",
            "volumesnapshotcontent",
            &content,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!("{{\"status\": {{\"snapshotHandle\": \"h-{name}\", \"readyToUse\": true}}}}"),
        ]),
        "content status",
    );
    must(
        kubectl(&[
            "patch",
            "volumesnapshot",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                "{{\"status\": {{\"boundVolumeSnapshotContentName\": \"{content}\", \"readyToUse\": true, \"restoreSize\": \"4Gi\"}}}}"
            ),
        ]),
        "snapshot status",
    );
}

const MANIFESTS: &str = include_str!("data/check_cluster/manifests.yaml");

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn check_judges_manifests_with_the_facts_of_the_live_cluster() {
    namespace_with_source("chk");
    let kubeconfig = reader_kubeconfig("chk");
    ready_snapshot("chk", "nightly");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("manifests.yaml"), MANIFESTS).expect("write");
    let expected = "\
manifests.yaml:10: chk/small-clone: [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi
manifests.yaml:27: chk/clone-of-new: [source-exists] source claim \"new-data\" is defined in these manifests (manifests.yaml:19) but does not exist in namespace \"chk\" yet; it must exist and be Bound before the clone is created: apply it first, wait until it is Bound, then apply the clone
manifests.yaml:36: chk/typo: [source-exists] source claim \"dta\" does not exist in namespace \"chk\"; create it first, or fix spec.dataSource.name
manifests.yaml:45: chk/replicas: volumeClaimTemplates[0] \"copy\": [same-driver] StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"chk-data\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"
manifests.yaml:71: chk/small-restore: [restore-size] this claim requests 1Gi but snapshot \"nightly\" needs at least 4Gi (its restoreSize); request at least 4Gi
";
    assert_eq!(
        run(dir.path(), &kubeconfig, &["check", "-f", "manifests.yaml"]),
        (
            1,
            expected.to_owned(),
            "pvc-clone-guard check: 7 claim(s) with a data source in 8 object(s): 5 refused, 0 with warnings, 0 could not be checked\n".to_owned()
        )
    );
    // What the webhook says when the same objects are created: the same lines.
    let created = create(
        MANIFESTS
            .split(
                "---
",
            )
            .nth(1)
            .expect("small-clone"),
        &[],
    );
    assert_denied(
        &created,
        "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi",
    );
    // The same manifests from standard input, as `kubectl kustomize` would pipe them; the
    // valid ones alone pass with exit 0 and no line.
    let valid: String = MANIFESTS
        .split("---\n")
        .filter(|doc| doc.contains("good-"))
        .collect::<Vec<_>>()
        .join("---\n");
    let output = Command::new(BIN)
        .args(["check", "-f", "-"])
        .current_dir(dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(valid.as_bytes())?;
            child.wait_with_output()
        })
        .expect("runs");
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned()
        ),
        (
            Some(0),
            String::new(),
            "pvc-clone-guard check: 2 claim(s) with a data source in 2 object(s): 0 refused, 0 with warnings, 0 could not be checked\n".to_owned()
        )
    );
    // JSON for CI annotations: the restore's line.
    let (code, json, _) = run(
        dir.path(),
        &kubeconfig,
        &["check", "-f", "manifests.yaml", "-o", "json"],
    );
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        report["lines"][4],
        serde_json::json!({"file": "manifests.yaml", "line": 71, "kind": "PersistentVolumeClaim",
            "namespace": "chk", "name": "small-restore", "template": null, "severity": "error",
            "rule": "restore-size",
            "message": "this claim requests 1Gi but snapshot \"nightly\" needs at least 4Gi (its restoreSize); request at least 4Gi"})
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_user_without_the_rbac_gets_exit_2_and_the_cause() {
    namespace_with_source("chk-norbac");
    // The admin's credentials impersonating a user bound to nothing.
    let kubeconfig = impersonating("nobody", None);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("clone.yaml"),
        clone_of_data("chk-norbac", Some("gp3"), "10Gi"),
    )
    .expect("write");
    assert_eq!(
        run(dir.path(), &kubeconfig, &["check", "-f", "clone.yaml"]),
        (
            2,
            "clone.yaml:1: chk-norbac/clone: could not check: reading persistentvolumeclaims from the API server failed: persistentvolumeclaims \"data\" is forbidden: User \"nobody\" cannot get resource \"persistentvolumeclaims\" in API group \"\" in the namespace \"chk-norbac\"\n".to_owned(),
            "pvc-clone-guard check: 1 claim(s) with a data source in 1 object(s): 0 refused, 0 with warnings, 1 could not be checked\n".to_owned()
        )
    );
}

/// Records a `ProvisioningFailed` event on claim `namespace/claim`, as the external
/// provisioner would (no provisioner runs here).
fn provisioning_failed(namespace: &str, claim: &str, name: &str, at: &str, message: &str) {
    let uid = must(
        kubectl(&[
            "get",
            "pvc",
            claim,
            "-n",
            namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ]),
        "claim uid",
    )
    .stdout;
    apply(&format!(
        "apiVersion: v1\nkind: Event\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         involvedObject: {{apiVersion: v1, kind: PersistentVolumeClaim, name: {claim}, namespace: {namespace}, uid: {uid}}}\n\
         reason: ProvisioningFailed\ntype: Warning\nsource: {{component: ebs.csi.aws.com_ebs-csi-controller-0_1a2b}}\n\
         firstTimestamp: \"{at}\"\nlastTimestamp: \"{at}\"\ncount: 1\nmessage: {message:?}\n"
    ));
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn explain_says_what_keeps_each_pending_claim_waiting() {
    namespace_with_source("chk-explain");
    let kubeconfig = reader_kubeconfig("chk-explain");
    // Admitted while the webhook was failing open (no replica: failurePolicy Ignore), so
    // never judged: a clone too small for its source.
    dev_env("stop-webhook", &[]);
    let admitted = create(
        &clone_yaml(
            "chk-explain",
            "too-small",
            "data",
            Some("gp3"),
            "1Gi",
            "Filesystem",
        ),
        &[],
    );
    dev_env("start-webhook", &[]);
    assert_created(&admitted, "too-small", &[]);
    // Valid clones, Pending because no provisioner runs: one the provisioner failed on (the
    // event a v5 provisioner would record, then a v6 one), one it has not got to.
    apply(&clone_yaml(
        "chk-explain",
        "failing",
        "data",
        Some("gp3"),
        "10Gi",
        "Filesystem",
    ));
    apply(&clone_yaml(
        "chk-explain",
        "waiting",
        "data",
        Some("gp3"),
        "10Gi",
        "Filesystem",
    ));
    provisioning_failed(
        "chk-explain",
        "failing",
        "failing.1",
        "2026-11-30T10:00:00Z",
        "failed to provision volume with StorageClass \"gp3\": rpc error: code = ResourceExhausted desc = volume limit reached",
    );
    provisioning_failed(
        "chk-explain",
        "failing",
        "failing.2",
        "2026-11-30T10:05:00Z",
        "rpc error: code = InvalidArgument desc = Volume provisioning failed with infeasible error: snapshot of vol chk-explain-data is not in zone us-east-1b",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = "\
chk-explain/failing: ProvisioningFailed: rpc error: code = InvalidArgument desc = Volume provisioning failed with infeasible error: snapshot of vol chk-explain-data is not in zone us-east-1b
chk-explain/too-small: [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi
chk-explain/waiting: no rule refuses it: waiting for the provisioner
";
    // The kubeconfig's namespace, then -n, then one claim.
    assert_eq!(
        run(dir.path(), &kubeconfig, &["explain"]),
        (0, expected.to_owned(), String::new())
    );
    assert_eq!(
        run(dir.path(), &kubeconfig, &["explain", "-n", "chk-explain", "too-small"]),
        (
            0,
            "chk-explain/too-small: [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi\n".to_owned(),
            String::new()
        )
    );
    assert_eq!(
        run(dir.path(), &kubeconfig, &["explain", "data"]),
        (
            0,
            "chk-explain/data: has no data source: pvc-clone-guard has nothing to say about it\n"
                .to_owned(),
            String::new()
        )
    );
    // -A lists this namespace's lines among the others'.
    let (code, all, _) = run(dir.path(), &kubeconfig, &["explain", "-A"]);
    assert_eq!(code, 0);
    let ours: String = all
        .lines()
        .filter(|line| line.starts_with("chk-explain/"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(ours, expected);
    // The source bound and the provisioner's event aside, a claim the rules refuse is
    // explained by the rules even when it also has events.
    provisioning_failed(
        "chk-explain",
        "too-small",
        "too-small.1",
        "2026-11-30T10:00:00Z",
        "error getting handle for DataSource Type PersistentVolumeClaim by Name data: requested volume size 1073741824 is less than the size 10737418240 for the source PVC data",
    );
    assert_eq!(
        run(dir.path(), &kubeconfig, &["explain", "too-small"]),
        (
            0,
            "chk-explain/too-small: [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi\n".to_owned(),
            String::new()
        )
    );

    // As a kubectl plugin: `kubectl pvc-clone-guard explain`.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin.join("kubectl-pvc_clone_guard")).expect("symlink");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("kubectl")
        .args(["pvc-clone-guard", "explain", "-n", "chk-explain"])
        .env("PATH", path)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl runs");
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
        ),
        (Some(0), expected.to_owned())
    );
}
