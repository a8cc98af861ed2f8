//! The real binary under hostile input, slow clients, SIGTERM and certificate rotation under
//! load. Its kubeconfig points at a closed port: plain reviews need no API server, and clone
//! reviews then fail closed, which these tests do not depend on.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::binary::*;
use common::*;

/// Raw bytes over TLS: (status code or 0 when the server closed without answering, text).
async fn raw_exchange(addr: &str, ca: &Path, request: &[u8]) -> (u16, String) {
    let config = tls_client(ca, &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let _ = tls.write_all(request).await;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post_request(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn review_with(mutate: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = create(claim("clone", Some(claim_source("data")), "10Gi"));
    mutate(&mut review);
    serde_json::to_vec(&review).expect("json")
}

/// The review without the field at JSON pointer `pointer` (e.g. `/request/uid`).
fn review_without(pointer: &str) -> Vec<u8> {
    let (parent, field) = pointer.rsplit_once('/').expect("a JSON pointer");
    review_with(|r| {
        if let Some(object) = r.pointer_mut(parent).and_then(Value::as_object_mut) {
            object.remove(field);
        }
    })
}

#[tokio::test]
async fn hostile_reviews_get_a_clear_answer_and_the_server_stays_up() {
    let webhook = Webhook::start(&[]).await;
    let valid = serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json");
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // 50,000 levels inside a field the webhook skips (built as text: serde_json itself
    // would recurse to write it).
    let deep_object = String::from_utf8(review_with(|r| {
        r["request"]["object"]["metadata"]["annotations"] = json!("DEEP")
    }))
    .expect("utf-8")
    .replace(
        "\"DEEP\"",
        &format!("{}\"leaf\"{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)),
    )
    .into_bytes();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "truncated JSON",
            valid[..valid.len() / 2].to_vec(),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: EOF while parsing",
        ),
        (
            "deeply nested arrays",
            nested.into_bytes(),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: invalid type: sequence",
        ),
        (
            "a deeply nested object inside the claim",
            deep_object,
            "application/json",
            200,
            "\"uid\":\"705ab4f5",
        ),
        (
            "10 MiB of body",
            vec![b' '; 10 * 1024 * 1024],
            "application/json",
            413,
            "the review is larger than 4 MiB",
        ),
        (
            "the wrong apiVersion",
            review_with(|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            "application/json",
            400,
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported",
        ),
        (
            "no request",
            review_without("/request"),
            "application/json",
            400,
            "the AdmissionReview has no request",
        ),
        (
            "no uid",
            review_without("/request/uid"),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: missing field `uid`",
        ),
        (
            "a uid that is a number",
            review_with(|r| r["request"]["uid"] = json!(42)),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: invalid type: integer `42`, expected a string",
        ),
        (
            "null",
            b"null".to_vec(),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: invalid type: null",
        ),
        (
            "an array",
            b"[1,2,3]".to_vec(),
            "application/json",
            400,
            "the body is not a valid AdmissionReview: invalid type: integer `1`, expected a string",
        ),
        (
            "binary garbage",
            (0..=255u8).cycle().take(5000).collect(),
            "application/json",
            400,
            "the body is not a valid AdmissionReview",
        ),
        (
            "YAML",
            b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n".to_vec(),
            "application/yaml",
            415,
            "send the AdmissionReview as Content-Type: application/json",
        ),
        (
            "absurd quantities",
            review_with(|r| {
                r["request"]["object"]["spec"]["resources"]["requests"]["storage"] =
                    json!("1e999999999999999999Ei")
            }),
            "application/json",
            200,
            "\"uid\":\"705ab4f5",
        ),
        (
            "a quantity that is not a string",
            review_with(|r| {
                r["request"]["object"]["spec"]["resources"]["requests"]["storage"] = json!(1e300)
            }),
            "application/json",
            200,
            "\"uid\":\"705ab4f5",
        ),
        (
            "unicode names",
            review_with(|r| {
                r["request"]["object"]["metadata"]["name"] = json!("données-ß-😀-\u{202e}");
                r["request"]["object"]["spec"]["dataSource"]["name"] = json!("источник\u{0}");
            }),
            "application/json",
            200,
            "\"uid\":\"705ab4f5",
        ),
        (
            "a ConfigMap",
            review_with(|r| {
                r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
                r["request"]["object"] = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}, "data": {"spec": "nope"}});
            }),
            "application/json",
            200,
            "\"allowed\":true",
        ),
    ];
    for (what, body, content_type, status, expected) in cases {
        let (got, text) = raw_exchange(
            &webhook.addr,
            &webhook.ca(),
            &post_request(content_type, &body),
        )
        .await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(expected),
            "{what}: expected {expected:?} in {text}"
        );
        webhook.assert_answers().await;
    }
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off_while_others_are_served() {
    let webhook = Webhook::start(&["--header-read-timeout", "1s"]).await;
    let config = tls_client(&webhook.ca(), &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(&webhook.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut slow = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        started.elapsed()
    });
    // Meanwhile, others are served at once.
    for _ in 0..5 {
        let begun = Instant::now();
        webhook.assert_answers().await;
        assert!(begun.elapsed() < Duration::from_millis(500));
    }
    let cut_after = trickle.await.expect("trickler");
    assert!(
        cut_after < Duration::from_secs(4),
        "the trickler was cut off after {cut_after:?}"
    );
}

#[tokio::test]
async fn a_client_that_stalls_the_handshake_or_the_body_is_cut_off() {
    let webhook =
        Webhook::start(&["--header-read-timeout", "1s", "--body-read-timeout", "1s"]).await;
    // A TCP connection that never starts TLS.
    let mut silent = TcpStream::connect(&webhook.addr).await.expect("connect");
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not left open: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Headers on time, then a body that never comes.
    let head = b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"";
    let (status, text) = raw_exchange(&webhook.addr, &webhook.ca(), head).await;
    assert_eq!(status, 408, "{text}");
    assert!(
        text.ends_with("the body was not received within 1s\n"),
        "{text}"
    );
    webhook.assert_answers().await;
}

/// Requests that each open a new TLS connection until stopped; returns
/// (answered with 200, sent but not answered with 200, never sent: connection refused).
async fn load(
    addr: String,
    ca: PathBuf,
    stop: Arc<AtomicBool>,
    leaf_seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    answered: Arc<AtomicUsize>,
) -> (usize, Vec<String>, usize) {
    let body = serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json");
    let config = tls_client(&ca, &[&rustls::version::TLS13]);
    let (mut ok, mut failed, mut refused) = (0, Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(&addr).await else {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        // A handshake that fails never carried a request: like a refused connection.
        let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(name, tcp)
            .await
        else {
            refused += 1;
            continue;
        };
        if let Some(certs) = tls.get_ref().1.peer_certificates() {
            let mut seen = leaf_seen.lock().expect("lock");
            if seen.last() != Some(&certs[0].to_vec()) {
                seen.push(certs[0].to_vec());
            }
        }
        if tls
            .write_all(&post_request("application/json", &body))
            .await
            .is_err()
        {
            refused += 1;
            continue;
        }
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        if text.starts_with("HTTP/1.1 200 OK") && text.contains("\"allowed\":true") {
            ok += 1;
            answered.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.push(text.chars().take(200).collect());
        }
    }
    (ok, failed, refused)
}

/// Eight clients running [`load`] against a webhook until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    leaves: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    answered: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<(usize, Vec<String>, usize)>>,
}

/// What the clients saw: answered, sent but not answered, never sent; and the distinct
/// certificates served, in order.
struct Tally {
    ok: usize,
    failed: Vec<String>,
    refused: usize,
    leaves: Vec<Vec<u8>>,
}

impl Tally {
    /// Asserts that the load ran (over 100 reviews answered) and that none failed; `failed`
    /// says what a failure was, for the message.
    fn assert_ran_and_none_failed(&self, failed: &str) {
        assert!(self.ok > 100, "the load ran ({} reviews)", self.ok);
        assert!(
            self.failed.is_empty(),
            "{} {failed}: {:?}",
            self.failed.len(),
            &self.failed[..self.failed.len().min(3)]
        );
    }
}

impl Load {
    fn start(webhook: &Webhook) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let leaves = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let clients = (0..8)
            .map(|_| {
                tokio::spawn(load(
                    webhook.addr.clone(),
                    webhook.ca(),
                    Arc::clone(&stop),
                    Arc::clone(&leaves),
                    Arc::clone(&answered),
                ))
            })
            .collect();
        Load {
            stop,
            leaves,
            answered,
            clients,
        }
    }

    /// Waits until `more` reviews beyond those answered so far are answered (at most a
    /// minute): the tests act on a load that has run, however slow the machine is (a debug
    /// build on two busy cores answers fewer than 100 new-connection reviews a second).
    async fn answered_more(&self, more: usize) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        let start = Instant::now();
        while self.answered.load(Ordering::Relaxed) < target
            && start.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally {
            ok: 0,
            failed: Vec::new(),
            refused: 0,
            leaves: Vec::new(),
        };
        for client in self.clients {
            let (ok, failed, refused) = client.await.expect("client");
            tally.ok += ok;
            tally.failed.extend(failed);
            tally.refused += refused;
        }
        tally.leaves = std::mem::take(&mut *self.leaves.lock().expect("lock"));
        tally
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_every_sent_review_and_exits_zero() {
    let mut webhook = Webhook::start(&[]).await;
    let load = Load::start(&webhook);
    load.answered_more(101).await;
    let code = webhook.terminate_and_wait().await;
    let tally = load.finish().await;
    assert_eq!(code, Some(0), "exit status");
    tally.assert_ran_and_none_failed("sent reviews were not answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_certificate_under_load_fails_no_review() {
    let webhook = Webhook::start(&["--cert-reload-interval", "100ms"]).await;
    let load = Load::start(&webhook);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        load.answered_more(34).await;
        issue_certs(webhook.dir.path());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.answered_more(34).await;
    let tally = load.finish().await;
    tally.assert_ran_and_none_failed("reviews failed");
    assert_eq!(tally.refused, 0, "no handshake failed during rotation");
    let distinct = tally
        .leaves
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(
        distinct, 4,
        "the original and the three rotated certificates were served"
    );
}

/// The review line is one JSON object with the review's fields at the top level, in the
/// order they are recorded; and what is logged during the SIGTERM drain, down to the last
/// line, is written out before the process exits.
#[tokio::test]
async fn the_review_line_keeps_its_fields_and_the_last_lines_survive_sigterm() {
    let mut webhook = Webhook::start_logging(&[]).await;
    webhook.assert_answers().await;
    assert_eq!(webhook.terminate_and_wait().await, Some(0), "exit status");
    let log = webhook.log();
    let lines: Vec<&str> = log.lines().collect();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let review = lines
        .iter()
        .zip(&parsed)
        .find(|(_, value)| value["message"] == "review")
        .map(|(line, _)| *line)
        .unwrap_or_else(|| panic!("no review line in:\n{log}"));
    let keys = [
        "timestamp",
        "level",
        "uid",
        "operation",
        "kind",
        "namespace",
        "name",
        "dry_run",
        "verdict",
        "skipped",
        "rules",
        "cause",
        "elapsed_us",
        "target",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|key| {
            review
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("no {key} in {review}"))
        })
        .collect();
    assert!(positions.is_sorted(), "fields out of order: {review}");
    assert!(review.starts_with("{\"timestamp\":\""), "{review}");
    let value: Value = serde_json::from_str(review).expect("json");
    let object = value.as_object().expect("an object");
    assert_eq!(
        object.len(),
        keys.len() + 1,
        "only the fields and the message: {review}"
    );
    assert_eq!(value["level"], "INFO");
    assert_eq!(value["uid"], UID);
    assert_eq!(value["operation"], "CREATE");
    assert_eq!(value["kind"], "PersistentVolumeClaim");
    assert_eq!(value["namespace"], "dev");
    assert_eq!(value["dry_run"], false);
    assert!(value["elapsed_us"].is_u64(), "{review}");
    assert_eq!(value["target"], "pvc_clone_guard::review::judge");
    let messages: Vec<&str> = parsed
        .iter()
        .filter_map(|value| value["message"].as_str())
        .collect();
    let drain = [
        "shutting down: unready, draining in-flight reviews",
        "all connections drained",
        "stopped",
    ]
    .map(|line| {
        messages
            .iter()
            .position(|message| *message == line)
            .unwrap_or_else(|| panic!("no {line:?} in:\n{log}"))
    });
    assert!(drain.is_sorted(), "the drain's lines in order:\n{log}");
    assert_eq!(
        messages.last(),
        Some(&"stopped"),
        "the last line logged is written out:\n{log}"
    );
}
