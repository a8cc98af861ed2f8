//! Certificates that cannot surprise: `pvc-clone-guard certs` refuses what would replace or
//! half-use a CA (the real binary, its exact words, nothing written), the rotation procedure
//! of certs/README.md run command by command, and the expiry metric of the running server.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::*;
use common::run_ok;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn certs(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"))
        .arg("certs")
        .args(args)
        .output()
        .expect("pvc-clone-guard runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir` with its bytes: to prove a refusal wrote nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let entry = entry.expect("entry");
            let p = entry.path();
            if p.is_dir() {
                files.extend(snapshot(&p));
            } else {
                files.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    files
}

/// A refusal: exit 1, exactly `message` on stderr, nothing on stdout, nothing written.
fn assert_refused(dir: &Path, args: &[&str], message: &str) {
    let before = snapshot(dir);
    let run = certs(args);
    assert_eq!(run.code, 1, "{args:?} must fail:\n{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!("pvc-clone-guard: {message}\n"),
        "{args:?}"
    );
    assert_eq!(run.stdout, "");
    assert_eq!(snapshot(dir), before, "{args:?} wrote nothing");
}

fn issue(dir: &Path) {
    let run = certs(&["--out-dir", path(dir)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_half_ca_pair_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("certs");
    issue(&dir);
    let (ca, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let saved_key = std::fs::read(&key).expect("key");
    std::fs::remove_file(&key).expect("rm");
    assert_refused(
        &dir,
        &["--out-dir", path(&dir)],
        &format!(
            "{} exists but its key {} does not: restore the key, or move both away to create a new CA \
             (a new CA must be registered in caBundle again)",
            ca.display(),
            key.display()
        ),
    );
    std::fs::write(&key, saved_key).expect("restore");
    std::fs::remove_file(&ca).expect("rm");
    assert_refused(
        &dir,
        &["--out-dir", path(&dir)],
        &format!(
            "{} exists but its certificate {} does not: restore the certificate, or move both away to \
             create a new CA (a new CA must be registered in caBundle again)",
            key.display(),
            ca.display()
        ),
    );
}

#[test]
fn a_ca_key_that_is_not_the_certificates_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let (dir, other) = (work.path().join("certs"), work.path().join("other"));
    issue(&dir);
    issue(&other);
    std::fs::copy(other.join("ca.key"), dir.join("ca.key")).expect("copy");
    assert_refused(
        &dir,
        &["--out-dir", path(&dir)],
        &format!(
            "{} is not the key of {}: put the matching pair back, or move both away to create a new CA",
            dir.join("ca.key").display(),
            dir.join("ca.crt").display()
        ),
    );
}

#[test]
fn an_unreadable_or_unparsable_ca_file_is_named() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("certs");
    issue(&dir);
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    assert_refused(
        &dir,
        &["--out-dir", path(&dir)],
        &format!("{} holds no PEM certificate", ca.display()),
    );
    std::fs::remove_file(&ca).expect("rm");
    std::fs::create_dir(&ca).expect("a directory where the file should be");
    assert_refused(
        &dir,
        &["--out-dir", path(&dir)],
        &format!("cannot read {}: Is a directory (os error 21)", ca.display()),
    );
}

#[test]
fn days_out_of_range_are_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("certs");
    assert_refused(
        work.path(),
        &["--out-dir", path(&dir), "--days", "0"],
        "--days must be at least 1, not 0",
    );
    assert_refused(
        work.path(),
        &["--out-dir", path(&dir), "--days", "400", "--ca-days", "365"],
        "--days 400 is longer than the new CA's --ca-days 365",
    );
    for flag in ["--days", "--ca-days"] {
        assert_refused(
            work.path(),
            &["--out-dir", path(&dir), flag, "4000000"],
            &format!("{flag} 4000000 reaches past the year 9999: lower {flag}"),
        );
    }
    assert!(!dir.exists(), "not even the directory is created");
    let run = certs(&["--out-dir", path(&dir), "--ca-days", "30", "--days", "7"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stderr = {
        let before = snapshot(&dir);
        let run = certs(&["--out-dir", path(&dir), "--days", "31"]);
        assert_eq!(run.code, 1);
        assert_eq!(snapshot(&dir), before, "nothing written");
        run.stderr
    };
    let prefix = format!(
        "pvc-clone-guard: --days 31 is longer than the CA in {} has left (it expires on ",
        dir.join("ca.crt").display()
    );
    assert!(stderr.starts_with(&prefix), "{stderr}");
    assert!(
        stderr.ends_with(", in 29 days): lower --days, or rotate the CA first (certs/README.md)\n")
            || stderr.ends_with(
                ", in 30 days): lower --days, or rotate the CA first (certs/README.md)\n"
            ),
        "{stderr}"
    );
}

#[test]
fn invalid_dns_names_are_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("certs");
    for name in ["bad name!", "-x.example", "a..b", ""] {
        assert_refused(
            work.path(),
            &[
                "--out-dir",
                path(&dir),
                "--dns",
                "localhost",
                &format!("--dns={name}"),
            ],
            &format!(
                "--dns {name:?} is not a valid DNS name (labels of letters, digits and '-', \
                 1-63 characters each, separated by dots; a leading \"*.\" is allowed)"
            ),
        );
    }
}

#[test]
fn success_says_which_ca_signed_and_what_to_run_next() {
    let work = tempfile::tempdir().expect("tempdir");
    let overlay = work.path().join("overlay");
    std::fs::create_dir(&overlay).expect("mkdir");
    std::fs::write(overlay.join("kustomization.yaml"), "resources: []\n").expect("write");
    let dir = overlay.join("certs");
    let first = certs(&["--out-dir", path(&dir)]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.stderr, "");
    let lines: Vec<&str> = first.stdout.lines().collect();
    let ca = dir.join("ca.crt");
    assert!(
        lines[0].starts_with(&format!("created a new CA {} (valid until ", ca.display()))
            && lines[0].ends_with("): register it with the API server (caBundle)"),
        "{}",
        first.stdout
    );
    assert!(
        lines[1].starts_with(&format!(
            "issued {} (valid until ",
            dir.join("tls.crt").display()
        )) && lines[1].ends_with("), signed by that CA"),
        "{}",
        first.stdout
    );
    let files: Vec<String> = [
        "ca.crt",
        "ca.key",
        "tls.crt",
        "tls.key",
        "cabundle-patch.yaml",
    ]
    .iter()
    .map(|f| format!("  {}", dir.join(f).display()))
    .collect();
    assert_eq!(lines[2], "wrote:");
    assert_eq!(lines[3..8], files[..]);
    assert_eq!(
        lines[8],
        format!("next: kubectl apply -k {}", overlay.display())
    );
    assert_eq!(lines.len(), 9);

    let again = certs(&["--out-dir", path(&dir)]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "used the existing CA {} (valid until ",
            ca.display()
        )) && lines[0].ends_with("): caBundle does not change"),
        "{}",
        again.stdout
    );
    assert_eq!(lines[3..6], files[2..]);
    assert_eq!(
        lines[6],
        format!("next: kubectl apply -k {}", overlay.display())
    );

    // Outside an overlay, it says what the files are for.
    let plain = work.path().join("plain");
    let run = certs(&["--out-dir", path(&plain)]);
    assert!(
        run.stdout.ends_with(
            "next: put tls.crt and tls.key into Secret pvc-clone-guard-tls, and apply \
             cabundle-patch.yaml to the ValidatingWebhookConfiguration (it sets caBundle)\n"
        ),
        "{}",
        run.stdout
    );
}

// ---- the rotation procedure of certs/README.md, command by command ---------------------------

/// The `sh` blocks of a Markdown file, in order, without their list indentation.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == "```sh" => current = Some((indent, String::new())),
            Some(_) if trimmed == "```" => {
                blocks.push(current.take().expect("block").1);
            }
            Some((indent, text)) => {
                text.push_str(line.get(*indent..).unwrap_or(""));
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// What one `kubectl apply -k` would have installed: the serving certificate of the Secret
/// and the caBundle of the webhooks (all the same), as PEM files.
struct Applied {
    cert: PathBuf,
    bundle: PathBuf,
}

fn read_applied(rendered: &Path, out: &Path) -> Applied {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = std::fs::read_to_string(rendered).expect("rendered");
    let mut cert = None;
    let mut bundles = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = serde_yaml_ng::Value::deserialize(document).expect("yaml");
        match object["kind"].as_str() {
            Some("Secret") if object["metadata"]["name"] == "pvc-clone-guard-tls" => {
                // Folded over lines in the rendered YAML.
                cert = object["data"]["tls.crt"]
                    .as_str()
                    .map(|text| text.split_whitespace().collect::<String>());
            }
            Some("ValidatingWebhookConfiguration") => {
                for webhook in object["webhooks"].as_sequence().expect("webhooks") {
                    bundles.push(
                        webhook["clientConfig"]["caBundle"]
                            .as_str()
                            .expect("a caBundle for every webhook")
                            .to_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(bundles.len(), 2, "both webhooks");
    assert_eq!(bundles[0], bundles[1], "the same CA for both webhooks");
    let applied = Applied {
        cert: out.with_extension("crt"),
        bundle: out.with_extension("bundle"),
    };
    std::fs::write(
        &applied.cert,
        b64.decode(cert.expect("the Secret's tls.crt"))
            .expect("base64"),
    )
    .expect("write");
    std::fs::write(&applied.bundle, b64.decode(&bundles[0]).expect("base64")).expect("write");
    applied
}

use serde::Deserialize;

/// What the API server checks: `cert` chains to a CA of `bundle`, for a TLS server.
fn trusted(cert: &Path, bundle: &Path) -> bool {
    Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(bundle)
        .arg(cert)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

#[test]
fn the_documented_rotation_keeps_every_served_certificate_trusted() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/README.md"))
            .expect("certs/README.md");
    let blocks = sh_blocks(&readme);
    assert_eq!(
        blocks.len(),
        6,
        "install, a routine rotation, the CA's three steps, a routine rotation"
    );

    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("repo");
    common::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests"),
        &root.join("manifests"),
    );
    let _ = std::fs::remove_dir_all(root.join("manifests/overlays/self-managed/certs"));
    let bin = work.path().join("bin");
    let record = work.path().join("applied");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&record).expect("mkdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_pvc-clone-guard"),
        bin.join("pvc-clone-guard"),
    )
    .expect("symlink");
    let kubectl = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v kubectl"])
            .output()
            .expect("sh")
            .stdout,
    )
    .expect("utf-8");
    // `kubectl apply -k DIR` renders DIR into the record instead of applying it; the waits
    // for the kubelet are not waited.
    let shim = format!(
        "#!/bin/sh\nset -e\n[ \"$1\" = apply ] && [ \"$2\" = -k ] || {{ echo \"unexpected: kubectl $*\" >&2; exit 1; }}\n\
         n=$(ls '{record}' | wc -l)\nexec '{kubectl}' kustomize \"$3\" > '{record}'/$(printf %03d \"$n\").yaml\n",
        record = record.display(),
        kubectl = kubectl.trim(),
    );
    std::fs::write(bin.join("kubectl"), shim).expect("write");
    std::fs::write(bin.join("sleep"), "#!/bin/sh\nexit 0\n").expect("write");
    for tool in ["kubectl", "sleep"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }

    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for block in &blocks {
        // A failure names the command, the block in full.
        run_ok(
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", block])
                .current_dir(&root)
                .env("PATH", &path_var),
        );
    }

    let mut renders: Vec<PathBuf> = std::fs::read_dir(&record)
        .expect("record")
        .map(|e| e.expect("entry").path())
        .collect();
    renders.sort();
    assert_eq!(renders.len(), 6, "one apply per block");
    let applied: Vec<Applied> = renders
        .iter()
        .map(|r| read_applied(r, &r.with_extension("")))
        .collect();
    // The kubelet (the pods' certificate) and the API server (caBundle) take an apply at
    // different moments: each of the two certificates must be trusted by each of the two
    // bundles.
    for (step, pair) in applied.windows(2).enumerate() {
        for cert in [&pair[0].cert, &pair[1].cert] {
            for bundle in [&pair[0].bundle, &pair[1].bundle] {
                assert!(
                    trusted(cert, bundle),
                    "apply {step} -> {}: {} is not trusted by {}",
                    step + 1,
                    cert.display(),
                    bundle.display()
                );
            }
        }
    }
    let (first, last) = (&applied[0], &applied[5]);
    // The check means something: the CA did change, so the first certificate is no longer
    // trusted, and the routine rotation after it signs with the new CA.
    assert!(!trusted(&first.cert, &last.bundle), "the old CA is gone");
    assert!(trusted(&last.cert, &last.bundle));
    assert!(!trusted(&last.cert, &first.bundle), "signed by the new CA");
    assert_ne!(
        std::fs::read(&applied[4].cert).expect("cert"),
        std::fs::read(&last.cert).expect("cert"),
        "the last rotation issued a new certificate"
    );
    let certs_dir = root.join("manifests/overlays/self-managed/certs");
    assert!(!certs_dir.join("next").exists(), "nothing left behind");
    assert!(
        !certs_dir.join("bundle.crt").exists(),
        "nothing left behind"
    );
}

// ---- the expiry metric ------------------------------------------------------------------------

fn not_after(cert: &Path) -> i64 {
    let pem = std::fs::read(cert).expect("cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
    pem.parse_x509()
        .expect("x509")
        .validity()
        .not_after
        .timestamp()
}

async fn expiry_metric(webhook: &Webhook) -> Option<i64> {
    let (_, body) = admin_get(&webhook.admin, "/metrics").await;
    body.lines().find_map(|line| {
        line.strip_prefix("pvc_clone_guard_certificate_expiry_timestamp_seconds ")?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_expiry_metric_is_the_served_certificates_not_after_and_follows_a_reload() {
    let webhook = Webhook::start(&["--cert-reload-interval", "100ms"]).await;
    let cert = webhook.dir.path().join("tls.crt");
    let first = not_after(&cert);
    assert_eq!(expiry_metric(&webhook).await, Some(first));

    // A new certificate, written as `certs` writes it, a second later (notAfter has whole
    // seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // As `certs` writes them for the webhook's name and address, valid for `days`.
    let renew = |days: &[&str]| {
        let names = ["--dns", "localhost", "--ip", "127.0.0.1"];
        certs(&[&["--out-dir", path(webhook.dir.path())], &names[..], days].concat())
    };
    let run = renew(&["--days", "2", "--ca-days", "2"]);
    assert_eq!(
        run.code, 1,
        "the CA of the fixture has less than 2 days left"
    );
    let run = renew(&["--days", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let second = not_after(&cert);
    assert_ne!(first, second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while expiry_metric(&webhook).await != Some(second) {
        assert!(
            std::time::Instant::now() < deadline,
            "the metric follows the reload: {:?}",
            expiry_metric(&webhook).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    webhook.assert_answers().await;
}
