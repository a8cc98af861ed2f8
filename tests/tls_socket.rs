//! The review endpoint over a real TLS socket: handshake, certificate rotation on disk,
//! and clients that are not speaking TLS.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pvc_clone_guard::Webhook;
use pvc_clone_guard::certs::{self, CertsRequest};
use pvc_clone_guard::config::Policy;
use pvc_clone_guard::server;
use pvc_clone_guard::tls::ReloadingCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use common::*;

struct Running {
    addr: SocketAddr,
    cert: Arc<ReloadingCert>,
    _stop: watch::Sender<bool>,
}

async fn start(dir: &Path) -> Running {
    let cert = ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key")).expect("load");
    let tls = cert.server_config().expect("tls config");
    let listener = server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = watch::channel(false);
    let webhook = Webhook::new(
        reviewer(Ok(good_facts()), Policy::default()),
        server::Timeouts::default(),
        server::Limits::default(),
    );
    tokio::spawn(async move { webhook.serve_reviews(listener, tls, stopped).await });
    Running {
        addr,
        cert,
        _stop: stop,
    }
}

fn client_config(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    tls_client(ca, versions)
}

/// POSTs a review over HTTPS/1.1; returns the status line, the body and the leaf certificate.
async fn post(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    body: &[u8],
) -> (String, String, Vec<u8>) {
    let answer = https_request(&addr.to_string(), config, body).await;
    (answer.status_line, answer.body, answer.leaf)
}

fn plain_review() -> Vec<u8> {
    serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json")
}

fn leaf_der(dir: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .expect("cert file")
        .next()
        .expect("a cert")
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn a_review_is_answered_over_tls_1_3_and_1_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let running = start(dir.path()).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (status, body, _) = post(
            running.addr,
            client_config(&dir.path().join("ca.crt"), versions),
            &plain_review(),
        )
        .await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains(UID), "{body}");
    }
}

/// The protocol is chosen by ALPN: a client that asks for h2 is served HTTP/2, one that
/// asks for http/1.1 (or for nothing, as above) HTTP/1.1.
#[tokio::test]
async fn http2_and_http1_are_served_as_alpn_agrees() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let running = start(dir.path()).await;
    for (alpn, version) in [
        (&b"h2"[..], hyper::Version::HTTP_2),
        (&b"http/1.1"[..], hyper::Version::HTTP_11),
    ] {
        let mut config =
            (*client_config(&dir.path().join("ca.crt"), &[&rustls::version::TLS13])).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(running.addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        let request = hyper::Request::post(format!("https://{}/validate", running.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(axum::body::Bytes::from(
                plain_review(),
            )))
            .expect("request");
        let response = if version == hyper::Version::HTTP_2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("h2 response")
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("http1 handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("http1 response")
        };
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), hyper::StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(UID), "{alpn:?}");
    }
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let running = start(dir.path()).await;
    let mut plain = TcpStream::connect(running.addr).await.expect("connect");
    plain
        .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "no review over plaintext"
    );
    let (status, _, _) = post(
        running.addr,
        client_config(&dir.path().join("ca.crt"), &[&rustls::version::TLS13]),
        &plain_review(),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart_and_a_broken_pair_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let running = start(dir.path()).await;
    let config = client_config(&dir.path().join("ca.crt"), &[&rustls::version::TLS13]);
    let first = leaf_der(dir.path());
    let (_, _, served) = post(running.addr, Arc::clone(&config), &plain_review()).await;
    assert_eq!(served, first);

    // Rotation: the same CA issues a new serving certificate.
    issue_certs(dir.path());
    let second = leaf_der(dir.path());
    assert_ne!(first, second);
    assert!(
        running.cert.reload().expect("reload"),
        "a changed pair is picked up"
    );
    let (status, _, served) = post(running.addr, Arc::clone(&config), &plain_review()).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(served, second);
    assert!(
        !running.cert.reload().expect("reload"),
        "an unchanged pair is not reloaded"
    );

    // A half-written certificate keeps the previous pair in service.
    std::fs::write(
        dir.path().join("tls.crt"),
        b"-----BEGIN CERTIFICATE-----\nMIIB",
    )
    .expect("write");
    assert!(running.cert.reload().is_err());
    let (status, _, served) = post(running.addr, Arc::clone(&config), &plain_review()).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(served, second);

    // A key that does not match the certificate, likewise.
    issue_certs(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    issue_certs(other.path());
    std::fs::copy(other.path().join("tls.key"), dir.path().join("tls.key")).expect("copy");
    let error = running.cert.reload().expect_err("mismatch");
    assert!(
        error.to_string().contains("does not match the certificate"),
        "{error}"
    );
    let (_, _, served) = post(running.addr, config, &plain_review()).await;
    assert_eq!(served, second);
}

#[tokio::test]
async fn a_certificate_chain_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let mut chain = std::fs::read(dir.path().join("tls.crt")).expect("leaf");
    chain.extend(std::fs::read(dir.path().join("ca.crt")).expect("ca"));
    std::fs::write(dir.path().join("tls.crt"), chain).expect("chain");
    let running = start(dir.path()).await;
    let (status, _, _) = post(
        running.addr,
        client_config(&dir.path().join("ca.crt"), &[&rustls::version::TLS13]),
        &plain_review(),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn certs_keeps_an_existing_ca_and_writes_the_ca_bundle_patch() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let ca = std::fs::read(dir.path().join("ca.crt")).expect("ca");
    let again = certs::generate(&CertsRequest {
        out_dir: dir.path().to_owned(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
        days: 1,
        ca_days: 1,
    })
    .expect("rotation");
    assert!(!again.created_ca);
    assert_eq!(
        std::fs::read(dir.path().join("ca.crt")).expect("ca"),
        ca,
        "the CA is kept"
    );
    let patch = std::fs::read_to_string(dir.path().join("cabundle-patch.yaml")).expect("patch");
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(&ca);
    assert_eq!(
        patch,
        format!(
            "- op: add\n  path: /webhooks/0/clientConfig/caBundle\n  value: {expected}\n\
             - op: add\n  path: /webhooks/1/clientConfig/caBundle\n  value: {expected}\n"
        )
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private keys are private");
}
