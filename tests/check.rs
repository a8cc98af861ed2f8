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
const STATE: &str = include_str!("data/check/state.yaml");

/// Manifests as a pull request would carry them.
const MANIFESTS: &str = include_str!("data/check/manifests.yaml");

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    /// A directory holding the cluster's objects as `state.yaml` ([`STATE`]).
    fn with_state() -> Dir {
        let dir = Dir::new();
        dir.write("state.yaml", STATE);
        dir
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

/// [`run`] with the arguments of `command_line` (split at spaces) and no standard input.
fn run_line(dir: &Dir, command_line: &str) -> Output {
    run(dir, &command_line.split(' ').collect::<Vec<_>>(), "")
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

/// Asserts the exit code and the standard output of `output`, word for word.
fn assert_code_and_stdout(output: &Output, code: i32, stdout: &str) {
    assert_eq!(
        (output.status.code(), text(&output.stdout).as_str()),
        (Some(code), stdout)
    );
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
    let dir = Dir::with_state();
    dir.write("manifests.yaml", MANIFESTS);
    let output = run_line(&dir, "check -f manifests.yaml --state state.yaml");
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
    let dir = Dir::with_state();
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
    let dir = Dir::with_state();
    dir.write("manifests.yaml", MANIFESTS);
    let output = run_line(&dir, "check -f manifests.yaml --state state.yaml -o json");
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
    let dir = Dir::with_state();
    dir.write(
        "clone.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: copy, namespace: dev}\nspec:\n  dataSource: {kind: PersistentVolumeClaim, name: data}\n  resources: {requests: {storage: 10Gi}}\n",
    );
    let message = "[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent";
    let output = run_line(&dir, "check -f clone.yaml --state state.yaml");
    let warning = format!("clone.yaml:1: dev/copy: warning: {message}\n");
    assert_code_and_stdout(&output, 0, &warning);
    dir.write("config.yaml", "rules:\n  source-in-use: deny\n");
    let output = run_line(
        &dir,
        "check -f clone.yaml --state state.yaml --config config.yaml",
    );
    assert_code_and_stdout(&output, 1, &format!("clone.yaml:1: dev/copy: {message}\n"));
}

#[test]
fn manifests_without_a_data_source_need_no_cluster() {
    let dir = Dir::new();
    dir.write(
        "plain.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: plain}\nspec:\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let output = run_line(&dir, "check -f plain.yaml");
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
    let output = run_line(&dir, "check -f manifests.yaml");
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
    let dir = Dir::with_state();
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
    let output = run_line(&dir, "check -f rendered --state state.yaml");
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
const PENDING: &str = include_str!("data/check/pending.yaml");

#[test]
fn explain_from_state_files_gives_rule_lines_the_latest_event_or_waiting() {
    let dir = Dir::with_state();
    dir.write("pending.yaml", PENDING);
    let output = run_line(
        &dir,
        "explain -n dev --state state.yaml --state pending.yaml",
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
    let one = run_line(
        &dir,
        "explain data -n dev --state state.yaml --state pending.yaml",
    );
    assert_eq!(
        (one.status.code(), text(&one.stdout)),
        (
            Some(0),
            "dev/data: has no data source: pvc-clone-guard has nothing to say about it\n"
                .to_owned()
        )
    );
    let none = run_line(&dir, "explain -n prod --state state.yaml");
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
    assert_code_and_stdout(&output, 1, EXPECTED_REPORT);
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
