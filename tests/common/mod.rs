//! Shared fixtures: reviews shaped like the ones kube-apiserver sends, and facts.
#![allow(dead_code)]

pub mod binary;
pub mod cluster;
pub mod delay_proxy;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use pvc_clone_guard::config::Policy;
use pvc_clone_guard::facts::StaticFacts;
use pvc_clone_guard::metrics::Metrics;
use pvc_clone_guard::review::Reviewer;
use pvc_clone_guard::rules::Facts;
/// The facts of a healthy source "data" in "dev" (10Gi, CSI) and of a healthy restore from
/// VolumeSnapshot "snap-1": the library's fixtures, shared with its unit tests and benches.
// Not every test crate that includes this module uses both.
#[allow(unused_imports)]
pub use pvc_clone_guard::rules::fixtures::{good_facts, good_restore_facts};
use serde_json::{Value, json};

/// Copies directory `from` into `to`, recursively: a tree (the manifests) a test may change.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

pub const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// A claim's spec as the API server defaults it: class gp3, Filesystem, `storage` requested.
fn claim_spec(storage: &str) -> Value {
    json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage}},
        "storageClassName": "gp3",
        "volumeMode": "Filesystem"
    })
}

/// A PVC as the API server sends it to a webhook: defaulted, with managedFields.
pub fn claim(name: &str, data_source: Option<Value>, storage: &str) -> Value {
    let mut spec = claim_spec(storage);
    if let Some(source) = data_source {
        spec["dataSource"] = source.clone();
        spec["dataSourceRef"] = source;
    }
    json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "dev",
            "uid": "5d2a4c0e-7f31-4a5e-9c1b-1f0a2b3c4d5e",
            "creationTimestamp": "2026-11-21T10:00:00Z",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"PersistentVolumeClaim\"}\n"
            },
            "managedFields": [{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-21T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:accessModes": {}, "f:dataSource": {".": {}, "f:kind": {}, "f:name": {}},
                              "f:resources": {"f:requests": {".": {}, "f:storage": {}}},
                              "f:storageClassName": {}, "f:volumeMode": {}}}
            }]
        },
        "spec": spec,
        "status": {"phase": "Pending"}
    })
}

/// A StatefulSet "db" in "dev" as the API server sends it (pod template, managedFields),
/// with these `volumeClaimTemplates`.
pub fn statefulset(templates: Value) -> Value {
    json!({
        "kind": "StatefulSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": "db",
            "namespace": "dev",
            "uid": "9b1f3c2a-1e4d-4f6a-8c7b-2d3e4f5a6b7c",
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:volumeClaimTemplates": {}}}
            }]
        },
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "postgres:16",
                                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
            },
            "volumeClaimTemplates": templates,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        },
        "status": {"replicas": 0}
    })
}

/// A `volumeClaimTemplates` entry: a claim "name" of `storage` cloning `data_source`.
pub fn claim_template(name: &str, data_source: Option<Value>, storage: &str) -> Value {
    let mut spec = claim_spec(storage);
    if let Some(source) = data_source {
        spec["dataSource"] = source;
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
        "status": {"phase": "Pending"}
    })
}

pub fn claim_source(name: &str) -> Value {
    json!({"apiGroup": null, "kind": "PersistentVolumeClaim", "name": name})
}

/// An AdmissionReview v1 as kube-apiserver sends it.
pub fn review(operation: &str, object: Value, old_object: Value, dry_run: bool) -> Value {
    let kind = object["kind"]
        .as_str()
        .unwrap_or("PersistentVolumeClaim")
        .to_owned();
    let (group, resource) = match kind.as_str() {
        "PersistentVolumeClaim" => ("", "persistentvolumeclaims"),
        "Pod" => ("", "pods"),
        "VolumeSnapshot" => ("snapshot.storage.k8s.io", "volumesnapshots"),
        "StatefulSet" => ("apps", "statefulsets"),
        _ => ("", "persistentvolumeclaims"),
    };
    let kind = if object.is_null() {
        "PersistentVolumeClaim".to_owned()
    } else {
        kind
    };
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": resource},
            "name": "clone",
            "namespace": "dev",
            "operation": operation,
            "userInfo": {"username": "alice", "uid": "u-alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

pub fn create(object: Value) -> Value {
    review("CREATE", object, Value::Null, false)
}

pub fn reviewer(facts: Result<Facts, String>, policy: Policy) -> Arc<Reviewer<StaticFacts>> {
    Arc::new(Reviewer::new(policy, StaticFacts { facts }, Metrics::new()))
}

/// The answer of [`https_post`].
pub struct HttpsAnswer {
    /// e.g. "HTTP/1.1 200 OK".
    pub status_line: String,
    pub body: String,
    /// The DER of the certificate the server presented.
    pub leaf: Vec<u8>,
}

impl HttpsAnswer {
    pub fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// A TLS client trusting only `ca`; no session resumption, so every connection shows the
/// certificate served at that moment.
pub fn tls_client(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// POSTs a review to `addr` (host:port) at /validate over HTTPS/1.1.
pub async fn https_request(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    body: &[u8],
) -> HttpsAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("peer certs")[0].to_vec();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    HttpsAnswer {
        status_line: head.lines().next().unwrap_or("").to_owned(),
        body: body.to_owned(),
        leaf,
    }
}

/// POSTs over TLS 1.3 trusting `ca`; returns the status code and body.
pub async fn https_post(addr: &str, ca: &Path, body: &[u8]) -> (u16, String) {
    let answer = https_request(addr, tls_client(ca, &[&rustls::version::TLS13]), body).await;
    (answer.status(), answer.body)
}

/// Runs a command to its end; fails the test, with its stderr, unless it exits 0.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not run: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A CA and a serving certificate for localhost and 127.0.0.1 in `dir` (the CA is kept if
/// there is one: calling it again rotates the serving certificate).
pub fn issue_certs(dir: &Path) {
    pvc_clone_guard::certs::generate(&pvc_clone_guard::certs::CertsRequest {
        out_dir: dir.to_owned(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        days: 1,
        ca_days: 2,
    })
    .expect("certificates");
}
