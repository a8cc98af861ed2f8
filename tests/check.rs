//! `check` and `explain` with no API server at all: facts from `--state` files, the real
//! binary, outputs and exit codes asserted word for word; malformed input refused with a
//! clear error and exit 2; the binary run as the kubectl plugin `kubectl pvc-clone-guard`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pvc-clone-guard");

/// A cluster's objects as `kubectl get pvc,pv,sc,pods,volumesnapshot,volumesnapshotcontent,events -A -o yaml`
/// writes them: source claim `dev/data` (10Gi, Bound to a CSI volume, mounted by a pod),
/// a Filesystem snapshot `dev/snap` of 4Gi, ready, and one that is not.
const STATE: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: data, namespace: dev, uid: u-data}
  spec:
    accessModes: [ReadWriteOnce]
    storageClassName: gp3
    volumeName: pv-data
    volumeMode: Filesystem
    resources: {requests: {storage: 10Gi}}
  status: {phase: Bound, capacity: {storage: 10Gi}}
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: pv-data}
  spec:
    storageClassName: gp3
    volumeMode: Filesystem
    csi: {driver: ebs.csi.aws.com, volumeHandle: vol-1}
    claimRef: {namespace: dev, name: data, uid: u-data}
  status: {phase: Bound}
- apiVersion: storage.k8s.io/v1
  kind: StorageClass
  metadata: {name: gp3, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
  provisioner: ebs.csi.aws.com
- apiVersion: storage.k8s.io/v1
  kind: StorageClass
  metadata: {name: standard-rwo}
  provisioner: pd.csi.storage.gke.io
- apiVersion: v1
  kind: Pod
  metadata: {name: web-0, namespace: dev}
  spec:
    containers: [{name: c, image: x}]
    volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
  status: {phase: Running}
- apiVersion: snapshot.storage.k8s.io/v1
  kind: VolumeSnapshot
  metadata: {name: snap, namespace: dev, uid: u-snap}
  spec: {source: {persistentVolumeClaimName: data}}
  status: {boundVolumeSnapshotContentName: content-snap, readyToUse: true, restoreSize: 4Gi}
- apiVersion: snapshot.storage.k8s.io/v1
  kind: VolumeSnapshotContent
  metadata: {name: content-snap}
  spec:
    driver: ebs.csi.aws.com
    deletionPolicy: Delete
    sourceVolumeMode: Filesystem
    source: {volumeHandle: vol-1}
    volumeSnapshotRef: {namespace: dev, name: snap, uid: u-snap}
  status: {snapshotHandle: snap-1}
"#;

/// Manifests as a pull request would carry them.
const MANIFESTS: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: small, namespace: dev}
spec:
  dataSource: {kind: PersistentVolumeClaim, name: data}
  resources: {requests: {storage: 5Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: fresh, namespace: dev}
spec:
  resources: {requests: {storage: 5Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: clone-of-fresh, namespace: dev}
spec:
  dataSource: {kind: PersistentVolumeClaim, name: fresh}
  resources: {requests: {storage: 5Gi}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: dev}
spec:
  selector: {matchLabels: {app: web}}
  serviceName: web
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: x}]}}
  volumeClaimTemplates:
  - metadata: {name: copy}
    spec:
      storageClassName: standard-rwo
      dataSource: {kind: PersistentVolumeClaim, name: data}
      resources: {requests: {storage: 10Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restore, namespace: dev}
spec:
  dataSource: {kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io, name: snap}
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: dev}
data: {a: b}
"#;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write");
        path
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A kubeconfig whose server is a closed port: any request fails at once.
    fn closed_kubeconfig(&self) -> PathBuf {
        self.write(
            "kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters: [{name: none, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
             users: [{name: none, user: {token: none}}]\ncontexts: [{name: none, context: {cluster: none, user: none, namespace: dev}}]\ncurrent-context: none\n",
        )
    }
}

/// Runs the binary in `dir` (so that file names in the output are relative), with no
/// kubeconfig of the machine's, and `stdin` on standard input.
fn run(dir: &Dir, args: &[&str], stdin: &str) -> Output {
    run_program(BIN, dir, args, stdin, None)
}

fn run_program(program: &str, dir: &Dir, args: &[&str], stdin: &str, path: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir.path())
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (exit code, stdout, stderr)
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

const EXPECTED_REPORT: &str = "\
manifests.yaml:1: dev/small: [size] this claim requests 5Gi but source claim \"data\" requests 10Gi; request at least 10Gi
manifests.yaml:1: dev/small: warning: [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent
manifests.yaml:14: dev/clone-of-fresh: [source-exists] source claim \"fresh\" is defined in these manifests (manifests.yaml:8) but does not exist in namespace \"dev\" yet; it must exist and be Bound before the clone is created: apply it first, wait until it is Bound, then apply the clone
manifests.yaml:21: dev/web: volumeClaimTemplates[0] \"copy\": [same-driver] StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-data\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\"
manifests.yaml:21: dev/web: warning: volumeClaimTemplates[0] \"copy\": [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent
manifests.yaml:35: dev/restore: [restore-size] this claim requests 1Gi but snapshot \"snap\" needs at least 4Gi (its restoreSize); request at least 4Gi
";

#[test]
fn check_with_state_files_reports_every_refusal_and_warning_and_exits_1() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    dir.write("manifests.yaml", MANIFESTS);
    let output = run(
        &dir,
        &["check", "-f", "manifests.yaml", "--state", "state.yaml"],
        "",
    );
    assert_eq!(
        outcome(&output),
        (
            Some(1),
            EXPECTED_REPORT.to_owned(),
            "pvc-clone-guard check: 4 claim(s) with a data source in 6 object(s): 4 refused, 2 with warnings, 0 could not be checked\n".to_owned()
        )
    );
}

#[test]
fn check_reads_standard_input_as_kubectl_kustomize_writes_it() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    let output = run(
        &dir,
        &["check", "-f", "-", "--state", "state.yaml"],
        MANIFESTS,
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stdout),
        EXPECTED_REPORT.replace("manifests.yaml", "<stdin>")
    );
}

#[test]
fn check_json_output_carries_file_line_object_rule_and_severity() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    dir.write("manifests.yaml", MANIFESTS);
    let output = run(
        &dir,
        &[
            "check",
            "-f",
            "manifests.yaml",
            "--state",
            "state.yaml",
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        report["lines"][4],
        serde_json::json!({
            "file": "manifests.yaml",
            "line": 21,
            "kind": "StatefulSet",
            "namespace": "dev",
            "name": "web",
            "template": "volumeClaimTemplates[0] \"copy\"",
            "severity": "warning",
            "rule": "source-in-use",
            "message": "source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent"
        })
    );
    assert_eq!(report["lines"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        (
            &report["checked"],
            &report["refused"],
            &report["warned"],
            &report["unchecked"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(4),
            &serde_json::json!(2),
            &serde_json::json!(0)
        )
    );
}

#[test]
fn warnings_alone_exit_0_and_the_config_is_the_webhooks() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    dir.write(
        "clone.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: copy, namespace: dev}\nspec:\n  dataSource: {kind: PersistentVolumeClaim, name: data}\n  resources: {requests: {storage: 10Gi}}\n",
    );
    let output = run(
        &dir,
        &["check", "-f", "clone.yaml", "--state", "state.yaml"],
        "",
    );
    assert_eq!(
        (output.status.code(), text(&output.stdout)),
        (
            Some(0),
            "clone.yaml:1: dev/copy: warning: [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent\n".to_owned()
        )
    );
    dir.write("config.yaml", "rules:\n  source-in-use: deny\n");
    let output = run(
        &dir,
        &[
            "check",
            "-f",
            "clone.yaml",
            "--state",
            "state.yaml",
            "--config",
            "config.yaml",
        ],
        "",
    );
    assert_eq!(
        (output.status.code(), text(&output.stdout)),
        (
            Some(1),
            "clone.yaml:1: dev/copy: [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent\n".to_owned()
        )
    );
}

#[test]
fn manifests_without_a_data_source_need_no_cluster() {
    let dir = Dir::new();
    dir.write(
        "plain.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: plain}\nspec:\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let output = run(&dir, &["check", "-f", "plain.yaml"], "");
    assert_eq!(
        outcome(&output),
        (
            Some(0),
            String::new(),
            "pvc-clone-guard check: 0 claim(s) with a data source in 1 object(s): 0 refused, 0 with warnings, 0 could not be checked\n".to_owned()
        )
    );
}

#[test]
fn no_cluster_or_an_unreachable_one_exits_2() {
    let dir = Dir::new();
    dir.write("manifests.yaml", MANIFESTS);
    let output = run(&dir, &["check", "-f", "manifests.yaml"], "");
    let (code, stdout, stderr) = outcome(&output);
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert_eq!(
        stderr,
        format!(
            "pvc-clone-guard check: no cluster to read facts from: cannot read the kubeconfig {} (KUBECONFIG): No such file or directory (os error 2); pass --state FILE to check against files of objects instead\n",
            dir.path().join("no-kubeconfig").display()
        )
    );

    let kubeconfig = dir.closed_kubeconfig();
    let output = Command::new(BIN)
        .args(["check", "-f", "manifests.yaml"])
        .current_dir(dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run");
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("manifests.yaml:1: dev/small: could not check: reading persistentvolumeclaims from the API server failed: ")
            && first.contains("Connection refused"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        4,
        "every claim to judge says so: {stdout}"
    );
}

#[test]
fn malformed_input_is_named_and_exits_2() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    dir.write("notes.txt", "Remember to clone the data claim.\n");
    dir.write("values.yaml", "replicas: 3\nimage: nginx\n");
    dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: a\n",
    );
    dir.write("rendered/ok.yaml", MANIFESTS);
    dir.write("rendered/README.md", "# rendered by CI\n");
    dir.write(
        "rendered/charts/app-0.1.0.tgz",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
    );
    dir.write("image.yaml", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    let cases: [(&[&str], String); 6] = [
        (
            &["notes.txt"],
            "notes.txt:1: not a Kubernetes object (a string); every document needs apiVersion and kind".into(),
        ),
        (
            &["values.yaml"],
            "values.yaml:1: not a Kubernetes object (it has no kind); every document needs apiVersion and kind".into(),
        ),
        (
            &["broken.yaml"],
            "broken.yaml:4: not valid YAML: did not find expected ',' or '}', while parsing a flow mapping".into(),
        ),
        (
            &["rendered"],
            "rendered/charts/app-0.1.0.tgz: binary content, not a YAML or JSON manifest; point -f at the rendered manifests".into(),
        ),
        (
            &["image.yaml"],
            "image.yaml: binary content, not a YAML or JSON manifest; point -f at the rendered manifests".into(),
        ),
        (
            &["missing.yaml"],
            "missing.yaml: cannot read it: No such file or directory (os error 2)".into(),
        ),
    ];
    for (files, expected) in cases {
        let mut args = vec!["check", "--state", "state.yaml"];
        for file in files {
            args.extend(["-f", file]);
        }
        let output = run(&dir, &args, "");
        assert_eq!(
            outcome(&output),
            (
                Some(2),
                String::new(),
                format!("pvc-clone-guard check: {expected}\n")
            ),
            "{files:?}"
        );
    }
    // Without the archive, the directory is read (its README skipped, and said so).
    std::fs::remove_file(dir.path().join("rendered/charts/app-0.1.0.tgz")).expect("rm");
    let output = run(
        &dir,
        &["check", "-f", "rendered", "--state", "state.yaml"],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stdout),
        EXPECTED_REPORT.replace("manifests.yaml", "rendered/ok.yaml")
    );
    assert!(
        text(&output.stderr).starts_with(
            "pvc-clone-guard check: skipped rendered/README.md (not .yaml, .yml or .json)\n"
        ),
        "{}",
        text(&output.stderr)
    );
}

/// Claims as they sit in a cluster: Pending clones and restores, their events.
const PENDING: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: too-small, namespace: dev, uid: u-small}
  spec:
    storageClassName: gp3
    dataSource: {kind: PersistentVolumeClaim, name: data}
    resources: {requests: {storage: 1Gi}}
  status: {phase: Pending}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: restored, namespace: dev, uid: u-restored}
  spec:
    storageClassName: gp3
    dataSource: {kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io, name: snap}
    resources: {requests: {storage: 4Gi}}
  status: {phase: Pending}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: waiting, namespace: dev, uid: u-waiting}
  spec:
    storageClassName: gp3
    dataSource: {kind: PersistentVolumeClaim, name: data}
    resources: {requests: {storage: 10Gi}}
  status: {phase: Pending}
- apiVersion: v1
  kind: Event
  metadata: {name: restored.1, namespace: dev, creationTimestamp: "2026-11-30T10:00:00Z"}
  involvedObject: {kind: PersistentVolumeClaim, name: restored, namespace: dev, uid: u-restored}
  reason: ProvisioningFailed
  type: Warning
  lastTimestamp: "2026-11-30T10:00:00Z"
  message: 'failed to provision volume with StorageClass "gp3": rpc error: code = ResourceExhausted desc = quota exceeded'
- apiVersion: v1
  kind: Event
  metadata: {name: restored.2, namespace: dev, creationTimestamp: "2026-11-30T10:05:00Z"}
  involvedObject: {kind: PersistentVolumeClaim, name: restored, namespace: dev, uid: u-restored}
  reason: ProvisioningFailed
  type: Warning
  lastTimestamp: "2026-11-30T10:05:00Z"
  message: 'rpc error: code = Internal desc = snapshot snap-1 is not restorable in us-east-1b'
- apiVersion: v1
  kind: Event
  metadata: {name: restored.3, namespace: dev, creationTimestamp: "2026-11-30T10:06:00Z"}
  involvedObject: {kind: PersistentVolumeClaim, name: restored, namespace: dev, uid: u-restored}
  reason: Provisioning
  type: Normal
  lastTimestamp: "2026-11-30T10:06:00Z"
  message: 'External provisioner is provisioning volume for claim "dev/restored"'
"#;

#[test]
fn explain_from_state_files_gives_rule_lines_the_latest_event_or_waiting() {
    let dir = Dir::new();
    dir.write("state.yaml", STATE);
    dir.write("pending.yaml", PENDING);
    let output = run(
        &dir,
        &[
            "explain",
            "-n",
            "dev",
            "--state",
            "state.yaml",
            "--state",
            "pending.yaml",
        ],
        "",
    );
    assert_eq!(
        outcome(&output),
        (
            Some(0),
            "\
dev/restored: ProvisioningFailed: rpc error: code = Internal desc = snapshot snap-1 is not restorable in us-east-1b
dev/too-small: [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi
dev/too-small: warning: [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent
dev/waiting: no rule refuses it: waiting for the provisioner
dev/waiting: warning: [source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent
"
            .to_owned(),
            String::new()
        )
    );
    let one = run(
        &dir,
        &[
            "explain",
            "data",
            "-n",
            "dev",
            "--state",
            "state.yaml",
            "--state",
            "pending.yaml",
        ],
        "",
    );
    assert_eq!(
        (one.status.code(), text(&one.stdout)),
        (
            Some(0),
            "dev/data: has no data source: pvc-clone-guard has nothing to say about it\n"
                .to_owned()
        )
    );
    let none = run(
        &dir,
        &["explain", "-n", "prod", "--state", "state.yaml"],
        "",
    );
    assert_eq!(
        (none.status.code(), text(&none.stdout)),
        (
            Some(0),
            "no claim with a data source is Pending in namespace \"prod\"\n".to_owned()
        )
    );
}

#[test]
fn installed_as_a_kubectl_plugin_it_is_kubectl_pvc_clone_guard() {
    let Some(kubectl) = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .find(|k| Path::new(k).exists())
    else {
        panic!("kubectl is needed for this test (it is on the project's machines)");
    };
    let dir = Dir::new();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin.join("kubectl-pvc_clone_guard")).expect("symlink");
    dir.write("state.yaml", STATE);
    dir.write("manifests.yaml", MANIFESTS);
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let output = run_program(
        kubectl,
        &dir,
        &[
            "pvc-clone-guard",
            "check",
            "-f",
            "manifests.yaml",
            "--state",
            "state.yaml",
        ],
        "",
        Some(&path),
    );
    assert_eq!(
        (output.status.code(), text(&output.stdout)),
        (Some(1), EXPECTED_REPORT.to_owned())
    );
    let help = run_program(
        kubectl,
        &dir,
        &["pvc-clone-guard", "explain", "--help"],
        "",
        Some(&path),
    );
    assert_eq!(help.status.code(), Some(0));
    assert!(
        text(&help.stdout).contains("Usage: kubectl pvc-clone-guard explain [OPTIONS] [CLAIM]"),
        "{}",
        text(&help.stdout)
    );
}
