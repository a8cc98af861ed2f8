//! Errors said once: the real binary's start-up errors, word for word. Each names the file
//! or the flag, says its cause once, and uses no library's enum names.

mod common;

use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stderr: String,
}

/// `pvc-clone-guard serve ARGS` with `env` (and no inherited kubeconfig or in-cluster
/// settings); it is expected to stop at start-up.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .expect("pvc-clone-guard runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `serve` with a missing certificate and a config file of `yaml`: the config is read (and
/// refused) first. The file's path comes back for the expected message.
fn serve_with_config(yaml: &str) -> (Run, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).expect("write");
    let run = serve(
        &[
            "--tls-cert",
            "/nope.crt",
            "--tls-key",
            "/nope.key",
            "--config",
            p(&config),
        ],
        &[],
    );
    (run, dir, config)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn assert_stops(run: Run, message: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr, format!("pvc-clone-guard: {message}\n"));
}

#[test]
fn a_missing_certificate_is_named_once() {
    assert_stops(
        serve(&["--tls-cert", "/nope.crt", "--tls-key", "/nope.key"], &[]),
        "cannot read /nope.crt: No such file or directory (os error 2)",
    );
}

#[test]
fn a_key_that_does_not_match_says_so_in_words() {
    let (one, two) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    common::issue_certs(one.path());
    common::issue_certs(two.path());
    let (cert, key) = (one.path().join("tls.crt"), two.path().join("tls.key"));
    assert_stops(
        serve(&["--tls-cert", p(&cert), "--tls-key", p(&key)], &[]),
        &format!(
            "the key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        ),
    );
}

#[test]
fn a_yaml_error_is_said_once_with_its_place() {
    let (run, _dir, config) = serve_with_config("rules:\n  size: block\n");
    assert_stops(
        run,
        &format!(
            "{} is not a valid configuration: rules.size: unknown variant `block`, expected one of \
             `deny`, `warn`, `off` at line 2 column 9",
            config.display()
        ),
    );
}

#[test]
fn an_unknown_rule_names_the_file_and_the_known_rules() {
    let (run, _dir, config) = serve_with_config("rules:\n  sizes: deny\n");
    let known: Vec<&str> = pvc_clone_guard::config::RuleId::ALL
        .iter()
        .map(|rule| rule.as_str())
        .collect();
    assert_stops(
        run,
        &format!(
            "{}: unknown rule \"sizes\" (known rules: {})",
            config.display(),
            known.join(", ")
        ),
    );
}

#[test]
fn a_missing_kubeconfig_is_one_short_line() {
    let dir = tempfile::tempdir().expect("dir");
    common::issue_certs(dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let args = ["--tls-cert", p(&cert), "--tls-key", p(&key)];
    assert_stops(
        serve(&args, &[("KUBECONFIG", "/nope/kubeconfig")]),
        "cannot read the kubeconfig /nope/kubeconfig (KUBECONFIG): No such file or directory (os error 2)",
    );
    // No KUBECONFIG, no ~/.kube/config, not in a pod.
    let home = tempfile::tempdir().expect("home");
    assert_stops(
        serve(&args, &[("HOME", p(home.path()))]),
        "no Kubernetes configuration: set KUBECONFIG, create ~/.kube/config, or run in a pod",
    );
}

#[test]
fn a_lookup_timeout_not_below_timeout_seconds_is_warned_about_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    common::issue_certs(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "lookupTimeout: 5s\n").expect("write");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    // It stops at the kubeconfig, after the policy is read and the warning logged.
    let run = serve(
        &[
            "--tls-cert",
            p(&cert),
            "--tls-key",
            p(&key),
            "--config",
            p(&config),
            "--log-format",
            "text",
        ],
        &[("KUBECONFIG", "/nope/kubeconfig"), ("RUST_LOG", "warn")],
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].ends_with(
            "lookupTimeout 5s is not below the webhook registration's timeoutSeconds 5: when the \
             API server is slow it gives up first and applies failurePolicy, not failureMode; set \
             lookupTimeout below 5s"
        ) && lines[0].contains("WARN"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        "pvc-clone-guard: cannot read the kubeconfig /nope/kubeconfig (KUBECONFIG): No such file or directory (os error 2)"
    );
}

#[test]
fn an_unreachable_api_server_is_reported_once_per_watch_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    common::issue_certs(dir.path());
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 9 on loopback: nothing listens, every request is refused at once.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n\
         clusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: x, context: {cluster: c, user: u}}]\n",
    )
    .expect("write");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"))
        .arg("serve")
        .args(["--tls-cert", p(&dir.path().join("tls.crt"))])
        .args(["--tls-key", p(&dir.path().join("tls.key"))])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin-listen", &admin.to_string()])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .env("KUBECONFIG", &kubeconfig)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pvc-clone-guard runs");
    // Long enough for every watch to retry several times (kube's backoff starts below 1 s).
    std::thread::sleep(std::time::Duration::from_secs(4));
    let metrics = std::net::TcpStream::connect(admin)
        .and_then(|mut stream| {
            use std::io::{Read, Write};
            stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
        .expect("metrics answer");
    child.kill().expect("kill");
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("cache watch failed"))
        .collect();
    assert!(!failed.is_empty(), "{stderr}");
    for resource in [
        "persistentvolumeclaims",
        "persistentvolumes",
        "storageclasses",
    ] {
        let lines = failed
            .iter()
            .filter(|line| line.contains(&format!("\"resource\":\"{resource}\"")))
            .count();
        assert_eq!(
            lines, 1,
            "one line for the {resource} watch's streak:\n{stderr}"
        );
        let errors: u64 = metrics
            .lines()
            .find(|line| {
                line.starts_with("pvc_clone_guard_watch_errors_total{")
                    && line.contains(&format!("resource=\"{resource}\""))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0);
        assert!(
            errors >= 2,
            "the {resource} watch failed {errors} time(s), folded into one line"
        );
    }
    for line in &failed {
        assert!(
            line.contains("\"api_server\":\"https://127.0.0.1:9/\""),
            "the line names the API server: {line}"
        );
    }
    assert!(
        !stderr.contains("kube_client"),
        "kube-client's per-request errors are not logged:\n{stderr}"
    );
}
