//! The fact gathering in-process, against a fake API server: kube's own `Client` over a
//! tower service that answers lists, gets and watches from a table of objects, records
//! every request, and can be told to lag, fail or forbid. Each test names the behaviour it
//! proves and asserts its exact outcome (facts, requests made, metrics, readiness).

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::core::admission::AdmissionResponse;
use pvc_clone_guard::config::{Action, Policy, RuleId};
use pvc_clone_guard::facts::{ClusterFacts, FactSource, Freshness, LookupError, WatchOptions};
use pvc_clone_guard::metrics::Metrics;
use pvc_clone_guard::review::Reviewer;
use pvc_clone_guard::rules::{Facts, PodsFact};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;
/// One open watch: its events are written as lines of the response body.
type WatchSender = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// The fake API server's state: objects by collection path, the requests seen, the open
/// watches, and the faults to inject.
#[derive(Default)]
struct FakeApi {
    /// Collection path (e.g. `/api/v1/persistentvolumeclaims`) -> object name -> object.
    /// Namespaced objects are keyed `namespace/name`.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// `GET path?query` of every request, in order.
    requests: Vec<String>,
    /// Open watch streams by collection path.
    watches: BTreeMap<String, Vec<WatchSender>>,
    /// Collections whose every request is refused with 403.
    forbidden: Vec<String>,
    /// Raw items (already JSON text) appended to a collection's list, e.g. undecodable ones.
    raw_list_items: BTreeMap<String, Vec<String>>,
    /// What discovery says: group/version (`populator.storage.k8s.io/v1beta1`) -> the
    /// resources it serves. Any other `/apis/group/version` is not found.
    served: BTreeMap<String, Vec<String>>,
    resource_version: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeApi>>);

const CLAIMS: &str = "/api/v1/persistentvolumeclaims";
const VOLUMES: &str = "/api/v1/persistentvolumes";
const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
const PODS: &str = "/api/v1/pods";

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeApi> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an object without telling the watches (the cache does not see it).
    fn put_quietly(&self, collection: &str, key: &str, mut object: Value) -> Value {
        let mut state = self.state();
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state
            .objects
            .entry(collection.to_owned())
            .or_default()
            .insert(key.to_owned(), object.clone());
        object
    }

    /// Stores an object and sends it to the open watches.
    fn put(&self, collection: &str, key: &str, object: Value) {
        let object = self.put_quietly(collection, key, object);
        self.send(collection, json!({"type": "MODIFIED", "object": object}));
    }

    fn send(&self, collection: &str, event: Value) {
        let mut state = self.state();
        let line = Bytes::from(format!("{event}\n"));
        if let Some(watches) = state.watches.get_mut(collection) {
            watches.retain(|watch| watch.send(Ok(Frame::data(line.clone()))).is_ok());
        }
    }

    /// Ends every open watch of a collection, as an API server restart does.
    fn drop_watches(&self, collection: &str) {
        self.state().watches.remove(collection);
    }

    /// Discovery serves `resource` in `group_version` from now on.
    fn serve(&self, group_version: &str, resource: &str) {
        self.state()
            .served
            .entry(group_version.to_owned())
            .or_default()
            .push(resource.to_owned());
    }

    fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    fn clear_requests(&self) {
        self.state().requests.clear();
    }

    fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.answer(&request)) }
        });
        kube::Client::new(service, "default")
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let mut state = self.state();
        state.requests.push(format!("GET {path}?{query}"));
        if let Some(group_version) = discovery_path(&path) {
            return match state.served.get(group_version) {
                Some(resources) => {
                    json_response(StatusCode::OK, resource_list(group_version, resources))
                }
                // As kube-apiserver answers a group version it does not serve: a bare
                // text 404, no Status object.
                None => {
                    let mut response = Response::new(
                        Full::new(Bytes::from_static(b"404 page not found\n")).boxed(),
                    );
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                }
            };
        }
        let (collection, key) = split(&path);
        if state.forbidden.contains(&collection) {
            let resource = collection.rsplit('/').next().unwrap_or("");
            return status(
                StatusCode::FORBIDDEN,
                &format!(
                    "{resource} is forbidden: User \"pvc-clone-guard\" cannot list resource \"{resource}\""
                ),
                "Forbidden",
            );
        }
        if query.contains("watch=true") {
            let (sender, receiver) = mpsc::unbounded_channel();
            state.watches.entry(collection).or_default().push(sender);
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|frame| (frame, receiver))
            });
            return Response::new(StreamBody::new(stream).boxed());
        }
        let objects = state.objects.get(&collection).cloned().unwrap_or_default();
        match key {
            Some(key) => match objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, object.to_string()),
                None => status(
                    StatusCode::NOT_FOUND,
                    &format!("\"{}\" not found", key.rsplit('/').next().unwrap_or("")),
                    "NotFound",
                ),
            },
            None => {
                // A list: of one namespace if the path names one.
                let mut items: Vec<String> = objects
                    .iter()
                    .filter(|(key, _)| match namespace_of(&path) {
                        Some(namespace) => key.starts_with(&format!("{namespace}/")),
                        None => true,
                    })
                    .map(|(_, object)| object.to_string())
                    .collect();
                items.extend(
                    state
                        .raw_list_items
                        .get(&collection)
                        .cloned()
                        .unwrap_or_default(),
                );
                json_response(
                    StatusCode::OK,
                    format!(
                        r#"{{"kind":"List","apiVersion":"v1","metadata":{{"resourceVersion":"{}"}},"items":[{}]}}"#,
                        state.resource_version.max(1),
                        items.join(",")
                    ),
                )
            }
        }
    }
}

/// `/api/v1/namespaces/dev/persistentvolumeclaims/data` -> (`/api/v1/persistentvolumeclaims`,
/// `Some("dev/data")`); `/api/v1/persistentvolumes` -> (that, `None`).
fn split(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let prefix_len = if parts.first() == Some(&"api") { 2 } else { 3 };
    let prefix = parts[..prefix_len.min(parts.len())].join("/");
    let rest = &parts[prefix_len.min(parts.len())..];
    match rest {
        ["namespaces", _, resource] => (format!("/{prefix}/{resource}"), None),
        ["namespaces", namespace, resource, name] => (
            format!("/{prefix}/{resource}"),
            Some(format!("{namespace}/{name}")),
        ),
        [resource] => (format!("/{prefix}/{resource}"), None),
        [resource, name] => (format!("/{prefix}/{resource}"), Some((*name).to_owned())),
        _ => (path.to_owned(), None),
    }
}

/// `/apis/group/version` -> `group/version`: a discovery request.
fn discovery_path(path: &str) -> Option<&str> {
    let group_version = path.strip_prefix("/apis/")?;
    (group_version.split('/').count() == 2).then_some(group_version)
}

/// The APIResourceList discovery answers for `group_version`.
fn resource_list(group_version: &str, resources: &[String]) -> String {
    let resources: Vec<Value> = resources
        .iter()
        .map(|name| {
            json!({"name": name, "singularName": "", "namespaced": false, "kind": "",
                   "verbs": ["get", "list", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
           "resources": resources})
    .to_string()
}

fn namespace_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    parts.find(|p| *p == "namespaces")?;
    parts.next()
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

fn status(code: StatusCode, message: &str, reason: &str) -> Response<Body> {
    json_response(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()})
        .to_string(),
    )
}

// ---- objects ------------------------------------------------------------------------------

fn source_claim(phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "dev", "uid": "uid-1"},
        "spec": {"storageClassName": "gp3", "volumeName": "pv-1", "volumeMode": "Filesystem",
                 "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": phase, "capacity": {"storage": "10Gi"}}
    })
}

fn source_volume() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv-1"},
        "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
                 "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "gp3", "volumeMode": "Filesystem",
                 "claimRef": {"namespace": "dev", "name": "data", "uid": "uid-1"}},
        "status": {"phase": "Bound"}
    })
}

fn class(name: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": name}, "provisioner": "ebs.csi.aws.com"})
}

fn pod(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "dev"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
           "status": {"phase": "Running"}})
}

/// A cluster with a healthy source "dev/data" on pv-1 and the class gp3.
fn healthy_cluster() -> Fake {
    let fake = Fake::default();
    fake.put_quietly(CLAIMS, "dev/data", source_claim("Bound"));
    fake.put_quietly(VOLUMES, "pv-1", source_volume());
    fake.put_quietly(CLASSES, "gp3", class("gp3"));
    fake
}

fn start(fake: &Fake, policy: &Policy) -> (ClusterFacts, Metrics) {
    let metrics = Metrics::new();
    let facts = ClusterFacts::start(
        fake.client(),
        metrics.clone(),
        policy,
        WatchOptions {
            page_size: 2,
            sync_wait: Duration::from_secs(2),
            ..WatchOptions::default()
        },
    );
    (facts, metrics)
}

fn clone_review(source: &str) -> Value {
    let mut review = common::create(common::claim(
        "clone",
        Some(common::claim_source(source)),
        "10Gi",
    ));
    review["request"]["namespace"] = json!("dev");
    review
}

fn clone_request(source: &str) -> pvc_clone_guard::rules::DataSourceRequest {
    let body = serde_json::to_vec(&clone_review(source)).expect("json");
    let request = pvc_clone_guard::review::parse(&body).expect("parses");
    match pvc_clone_guard::review::triage(&request) {
        pvc_clone_guard::review::Triage::Judge(clone) => clone,
        other => panic!("not a clone: {other:?}"),
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Waits until the facts are ready and the claims watch is open.
/// The facts of a clone of claim `source`, gathered from the caches where they serve.
async fn cached_facts(
    facts: &ClusterFacts,
    source: &str,
    policy: &Policy,
) -> Result<Facts, LookupError> {
    facts
        .gather(&clone_request(source), policy, Freshness::Cached)
        .await
}

/// [`healthy_cluster`], refusing every request for `collection`, and its facts under the
/// default policy, just started.
fn start_refusing(collection: &str) -> (Fake, Policy, ClusterFacts, Metrics) {
    let fake = healthy_cluster();
    fake.state().forbidden.push(collection.to_owned());
    let policy = Policy::default();
    let (facts, metrics) = start(&fake, &policy);
    (fake, policy, facts, metrics)
}

/// [`healthy_cluster`] and its facts under the default policy, once they are ready.
async fn ready_healthy_cluster() -> (Fake, Policy, ClusterFacts, Metrics) {
    let fake = healthy_cluster();
    let policy = Policy::default();
    let (facts, metrics) = start(&fake, &policy);
    eventually("ready", || facts.ready()).await;
    (fake, policy, facts, metrics)
}

/// [`ready_healthy_cluster`], once its claims watch is open too.
async fn healthy_cluster_watching_claims() -> (Fake, Policy, ClusterFacts, Metrics) {
    let (fake, policy, facts, metrics) = ready_healthy_cluster().await;
    eventually("the claims watch is open", || {
        fake.state().watches.contains_key(CLAIMS)
    })
    .await;
    (fake, policy, facts, metrics)
}

/// The series of metric `pvc_clone_guard_cache_synced` for `resource`.
fn cache_synced(resource: &str) -> String {
    format!("pvc_clone_guard_cache_synced{{resource=\"{resource}\"}}")
}

/// The series of metric `pvc_clone_guard_cached_objects` for `resource`.
fn cached_objects(resource: &str) -> String {
    format!("pvc_clone_guard_cached_objects{{resource=\"{resource}\"}}")
}

/// The series of metric `pvc_clone_guard_watch_errors_total` for `resource`.
fn watch_errors(resource: &str) -> String {
    format!("pvc_clone_guard_watch_errors_total{{resource=\"{resource}\"}}")
}

/// The series of metric `pvc_clone_guard_denial_confirmations_total` for `outcome`.
fn confirmations(outcome: &str) -> String {
    format!("pvc_clone_guard_denial_confirmations_total{{outcome=\"{outcome}\"}}")
}

/// Waits until the pods index, listed once the facts are ready, is listed.
async fn pods_listed(metrics: &Metrics) {
    eventually("the pods index is listed", || {
        metric(metrics, &cache_synced("pods")).as_deref() == Some("1")
    })
    .await;
}

/// Asserts the value of the metric line that starts with `line_start`.
#[track_caller]
fn assert_metric(metrics: &Metrics, line_start: &str, value: &str) {
    assert_eq!(
        metric(metrics, line_start).as_deref(),
        Some(value),
        "{line_start}"
    );
}

fn metric(metrics: &Metrics, line_start: &str) -> Option<String> {
    metrics
        .encode()
        .lines()
        .find(|line| line.starts_with(line_start))
        .map(|line| line[line_start.len()..].trim().to_owned())
}

fn lookups(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .cloned()
        .collect()
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn a_synced_cache_answers_a_clone_review_without_an_api_request() {
    let fake = healthy_cluster();
    let policy = Policy::default();
    let (facts, _) = start(&fake, &policy);
    assert!(!facts.ready(), "not ready before the first sync");
    eventually("ready", || facts.ready()).await;
    // Lists are paged (page size 2 here) and every watch is open.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/v1/persistentvolumeclaims?") && r.contains("limit=2")),
        "{requests:?}"
    );
    eventually("the watches are open", || {
        fake.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
            == 4
    })
    .await;
    fake.clear_requests();

    let gathered = cached_facts(&facts, "data", &policy).await.expect("facts");
    // The same facts, read at once without a future, as a review reads them.
    assert_eq!(
        facts.cached(&clone_request("data"), &policy).as_ref(),
        Some(&gathered)
    );
    let source = gathered.source.expect("source found");
    assert_eq!(source.phase.as_deref(), Some("Bound"));
    assert_eq!(
        gathered.volume.and_then(|v| v.csi_driver).as_deref(),
        Some("ebs.csi.aws.com")
    );
    assert_eq!(fake.requests(), Vec::<String>::new(), "no API request");
}

#[tokio::test]
async fn a_cache_miss_reads_the_api_server() {
    let (fake, policy, facts, metrics) = ready_healthy_cluster().await;
    pods_listed(&metrics).await;
    // Created after the list, and its watch event not delivered yet.
    let mut young = source_claim("Bound");
    young["metadata"]["name"] = json!("young");
    fake.put_quietly(CLAIMS, "dev/young", young);
    fake.clear_requests();
    assert_eq!(
        facts.cached(&clone_request("young"), &policy),
        None,
        "a miss is left to gather"
    );
    let gathered = cached_facts(&facts, "young", &policy).await.expect("facts");
    assert!(gathered.source.is_some(), "found through a GET");
    assert_eq!(
        lookups(&fake.requests()),
        ["GET /api/v1/namespaces/dev/persistentvolumeclaims/young?"]
    );
}

#[tokio::test]
async fn live_freshness_reads_everything_from_the_api_server() {
    let (fake, policy, facts, metrics) = ready_healthy_cluster().await;
    pods_listed(&metrics).await;
    fake.clear_requests();
    facts
        .gather(&clone_request("data"), &policy, Freshness::Live)
        .await
        .expect("facts");
    assert_eq!(
        lookups(&fake.requests()),
        [
            "GET /api/v1/namespaces/dev/persistentvolumeclaims/data?",
            "GET /api/v1/persistentvolumes/pv-1?",
            "GET /apis/storage.k8s.io/v1/storageclasses?",
            "GET /api/v1/namespaces/dev/pods?",
        ]
    );
}

#[tokio::test]
async fn a_denial_from_a_lagging_cache_is_confirmed_and_overturned() {
    let fake = Fake::default();
    fake.put_quietly(CLAIMS, "dev/data", source_claim("Pending"));
    fake.put_quietly(VOLUMES, "pv-1", source_volume());
    fake.put_quietly(CLASSES, "gp3", class("gp3"));
    let policy = Policy::default();
    let (facts, metrics) = start(&fake, &policy);
    eventually("ready", || facts.ready()).await;
    // Bound on the API server; the watch event has not reached the cache.
    fake.put_quietly(CLAIMS, "dev/data", source_claim("Bound"));
    let reviewer = Reviewer::new(policy, facts, metrics.clone());
    let body = serde_json::to_vec(&clone_review("data")).expect("json");
    let response = reviewer.review(&body).await.expect("answered");
    assert!(response.allowed, "{:?}", response.result.message);
    assert_metric(&metrics, &confirmations("overturned"), "1");
}

#[tokio::test]
async fn a_true_denial_is_confirmed_and_given() {
    let (_fake, policy, facts, metrics) = ready_healthy_cluster().await;
    let reviewer = Reviewer::new(policy, facts, metrics.clone());
    let body = serde_json::to_vec(&clone_review("ghost")).expect("json");
    let response = reviewer.review(&body).await.expect("answered");
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "[source-exists] source claim \"ghost\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"
    );
    assert_metric(&metrics, &confirmations("confirmed"), "1");
}

#[tokio::test]
async fn watch_events_update_the_cache() {
    let (fake, policy, facts, metrics) = healthy_cluster_watching_claims().await;
    fake.put(CLAIMS, "dev/data", source_claim("Lost"));
    let mut phase = None;
    for _ in 0..200 {
        let gathered = cached_facts(&facts, "data", &policy).await.expect("facts");
        phase = gathered.source.and_then(|s| s.phase);
        if phase.as_deref() == Some("Lost") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        phase.as_deref(),
        Some("Lost"),
        "the event reached the cache"
    );
    assert_metric(&metrics, &cached_objects("persistentvolumeclaims"), "1");
}

#[tokio::test]
async fn a_failed_watch_keeps_the_webhook_ready_and_sends_lookups_to_the_api_server() {
    let (fake, _policy, facts, metrics) = healthy_cluster_watching_claims().await;
    // The watch ends with an error event (the API server no longer has our version).
    fake.send(
        CLAIMS,
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "too old resource version", "reason": "Expired", "code": 410}}),
    );
    eventually("the watch error is counted", || {
        metric(&metrics, &watch_errors("persistentvolumeclaims")).is_some_and(|n| n != "0")
    })
    .await;
    assert!(
        facts.ready(),
        "a failed watch does not make the webhook unready"
    );
    // kube's watcher relists (with its backoff) and the cache is served again.
    eventually("relisted", || {
        metric(&metrics, &cache_synced("persistentvolumeclaims")).as_deref() == Some("1")
    })
    .await;
}

#[tokio::test]
async fn a_cache_whose_watch_failed_is_not_served_until_it_delivers_again() {
    let (fake, policy, facts, metrics) = healthy_cluster_watching_claims().await;
    // Every later request for claims is refused: the watch cannot resume.
    fake.state().forbidden.push(CLAIMS.to_owned());
    fake.drop_watches(CLAIMS);
    eventually("the cache is no longer served", || {
        metric(&metrics, &cache_synced("persistentvolumeclaims")).as_deref() == Some("0")
    })
    .await;
    fake.clear_requests();
    let error = cached_facts(&facts, "data", &policy)
        .await
        .expect_err("the lookup goes to the API server, which refuses it");
    assert_eq!(
        error.to_string(),
        "reading persistentvolumeclaims from the API server failed: persistentvolumeclaims is forbidden: User \"pvc-clone-guard\" cannot list resource \"persistentvolumeclaims\""
    );
    assert!(facts.ready(), "still ready");
}

#[tokio::test]
async fn readiness_gives_up_on_a_cache_that_never_syncs() {
    let (fake, _policy, facts, metrics) = start_refusing(VOLUMES);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !facts.ready(),
        "the volumes cache has not synced, and the wait is not over"
    );
    let requests = fake.requests();
    assert!(
        !requests.iter().any(|r| r.contains("/api/v1/pods?")),
        "the pods index is listed once ready, not before: {requests:?}"
    );
    eventually("ready after the bounded wait", || facts.ready()).await;
    pods_listed(&metrics).await;
    assert_metric(&metrics, &cache_synced("persistentvolumes"), "0");
    assert!(metric(&metrics, &watch_errors("persistentvolumes")).is_some_and(|n| n != "0"));
}

#[tokio::test]
async fn readiness_does_not_wait_for_the_pods_index() {
    let (_fake, policy, facts, metrics) = start_refusing(PODS);
    eventually("ready without the pods index", || facts.ready()).await;
    assert_metric(&metrics, &cache_synced("pods"), "0");
    // Pods are then read per namespace, and when that is refused too, the rule says so.
    let gathered = cached_facts(&facts, "data", &policy).await.expect("facts");
    assert!(
        matches!(&gathered.pods, PodsFact::Unknown(cause) if cause.starts_with("pods is forbidden")),
        "{:?}",
        gathered.pods
    );
}

#[tokio::test]
async fn pods_are_not_watched_while_source_in_use_is_off() {
    let fake = healthy_cluster();
    let mut policy = Policy::default();
    policy.set_action(RuleId::SourceInUse, Action::Off);
    let (facts, _) = start(&fake, &policy);
    eventually("ready", || facts.ready()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = fake.requests();
    assert!(
        !requests.iter().any(|r| r.contains("/pods")),
        "no pod request: {requests:?}"
    );
}

#[tokio::test]
async fn pods_that_mount_the_source_are_found_in_the_cache() {
    let fake = healthy_cluster();
    fake.put_quietly(PODS, "dev/web-0", pod("web-0", "data"));
    fake.put_quietly(PODS, "dev/other", pod("other", "logs"));
    let policy = Policy::default();
    let (facts, metrics) = start(&fake, &policy);
    eventually("ready", || facts.ready()).await;
    pods_listed(&metrics).await;
    let gathered = cached_facts(&facts, "data", &policy).await.expect("facts");
    assert_eq!(gathered.pods, PodsFact::Known(vec!["web-0".into()]));
}

#[tokio::test]
async fn an_object_that_does_not_decode_is_skipped_and_counted() {
    let fake = healthy_cluster();
    // A volume read leniently: fields of the wrong type read as absent, and the one
    // without a name is skipped and counted; the watch goes on.
    fake.state().raw_list_items.insert(
        VOLUMES.to_owned(),
        vec![
            r#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":42,"resourceVersion":"1"},"spec":{}}"#.to_owned(),
            r#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"odd","resourceVersion":"1"},"spec":{"csi":"not an object","capacity":{"storage":{"not":"a quantity"}},"nodeAffinity":[1,2]},"status":7}"#.to_owned(),
        ],
    );
    let policy = Policy::default();
    let (facts, metrics) = start(&fake, &policy);
    eventually("ready", || facts.ready()).await;
    assert_metric(
        &metrics,
        "pvc_clone_guard_watch_undecodable_objects_total{resource=\"persistentvolumes\"}",
        "1",
    );
    assert_eq!(
        metric(&metrics, &cached_objects("persistentvolumes")).as_deref(),
        Some("2"),
        "the other volumes are cached, the odd one with what could be read"
    );
    assert_metric(&metrics, &cache_synced("persistentvolumes"), "1");
}

// ---- APIs a cluster may not serve: populators, attribute classes, group snapshots, grants ---

const POPULATORS: &str = "/apis/populator.storage.k8s.io/v1beta1/volumepopulators";
const ATTRIBUTES_CLASSES: &str = "/apis/storage.k8s.io/v1/volumeattributesclasses";
const GROUP_SNAPSHOTS_BETA: &str =
    "/apis/groupsnapshot.storage.k8s.io/v1beta1/volumegroupsnapshots";
const SNAPSHOTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshots";

fn populator(group: &str, kind: &str) -> Value {
    json!({"apiVersion": "populator.storage.k8s.io/v1beta1", "kind": "VolumePopulator",
           "metadata": {"name": format!("{kind}.{group}").to_lowercase()},
           "sourceKind": {"group": group, "kind": kind}})
}

/// Puts VolumeAttributesClass `name` of `driver`, as `storage.k8s.io/{version}` serves it.
fn put_attributes_class(fake: &Fake, version: &str, name: &str, driver: &str) {
    let class = json!({"apiVersion": format!("storage.k8s.io/{version}"), "kind": "VolumeAttributesClass",
           "metadata": {"name": name}, "driverName": driver, "parameters": {"iops": "3000"}});
    let collection = format!("/apis/storage.k8s.io/{version}/volumeattributesclasses");
    fake.put_quietly(&collection, name, class);
}

/// A review of claim `restored` in `dev` whose `dataSourceRef` is `source`.
fn review_from(source: Value) -> Vec<u8> {
    let mut review = common::create(common::claim("restored", None, "10Gi"));
    review["request"]["namespace"] = json!("dev");
    review["request"]["object"]["spec"]["dataSourceRef"] = source;
    serde_json::to_vec(&review).expect("json")
}

fn hello_review() -> Vec<u8> {
    review_from(json!({"apiGroup": "hello.example.com", "kind": "Hello", "name": "src"}))
}

/// A clone of `data` naming VolumeAttributesClass `gold`.
/// The answer to a clone of "data" that names VolumeAttributesClass `gold`.
async fn review_clone_with_attributes_class(
    reviewer: &Reviewer<ClusterFacts>,
) -> AdmissionResponse {
    let mut review = clone_review("data");
    review["request"]["object"]["spec"]["volumeAttributesClassName"] = json!("gold");
    let body = serde_json::to_vec(&review).expect("json");
    reviewer.review(&body).await.expect("answered")
}

/// Reviews [`hello_review`] and asserts it is admitted with exactly `warning` (or none).
async fn assert_hello_admitted(reviewer: &Reviewer<ClusterFacts>, warning: Option<&str>) {
    let response = reviewer.review(&hello_review()).await.expect("answered");
    assert!(response.allowed, "{:?}", response.result.message);
    assert_eq!(response.warnings, warning.map(|w| vec![w.to_owned()]));
}

/// A reviewer on `fake`, once its facts are ready.
async fn ready_reviewer(fake: &Fake, policy: Policy) -> (Reviewer<ClusterFacts>, Metrics) {
    let (facts, metrics) = start(fake, &policy);
    eventually("ready", || facts.ready()).await;
    (Reviewer::new(policy, facts, metrics.clone()), metrics)
}

/// Asserts that a request starting with `start` (`GET path?`) was made.
#[track_caller]
fn assert_asked(fake: &Fake, start: &str) {
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.starts_with(start)),
        "{start}: {requests:?}"
    );
}

/// Asserts that no request contains `part`.
#[track_caller]
fn assert_not_asked(fake: &Fake, part: &str) {
    let requests = fake.requests();
    assert!(
        !requests.iter().any(|r| r.contains(part)),
        "{part}: {requests:?}"
    );
}

#[tokio::test]
async fn a_populator_source_is_judged_by_the_volume_populators_the_cluster_serves() {
    let fake = healthy_cluster();
    let (reviewer, metrics) = ready_reviewer(&fake, Policy::default()).await;
    // Without the CRD: a warning, never a denial.
    assert_hello_admitted(&reviewer, Some("[populator] populator.storage.k8s.io is not served: no VolumePopulator for Hello.hello.example.com can be checked")).await;
    // The CRD installed later is seen at once, without a restart; no registration: refused,
    // after a confirmation against the API server.
    fake.serve("populator.storage.k8s.io/v1beta1", "volumepopulators");
    fake.put_quietly(POPULATORS, "other", populator("other.example.com", "Hello"));
    let response = reviewer.review(&hello_review()).await.expect("answered");
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "[populator] spec.dataSourceRef names kind Hello of apiGroup \"hello.example.com\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of Hello, or fix kind and apiGroup"
    );
    assert_metric(&metrics, &confirmations("confirmed"), "1");
    // Once discovered, the VolumePopulators are watched; a registration admits the claim.
    eventually("the volumepopulators watch is open", || {
        fake.state().watches.contains_key(POPULATORS)
    })
    .await;
    fake.put(POPULATORS, "hello", populator("hello.example.com", "Hello"));
    eventually("the populator is cached", || {
        metric(&metrics, &cached_objects("volumepopulators")).as_deref() == Some("2")
    })
    .await;
    fake.clear_requests();
    assert_hello_admitted(&reviewer, None).await;
    assert_eq!(
        lookups(&fake.requests()),
        Vec::<String>::new(),
        "from the cache"
    );
}

#[tokio::test]
async fn volume_populators_are_not_read_while_populator_is_off() {
    let fake = healthy_cluster();
    fake.serve("populator.storage.k8s.io/v1beta1", "volumepopulators");
    let mut policy = Policy::default();
    policy.set_action(RuleId::Populator, Action::Off);
    let (reviewer, _) = ready_reviewer(&fake, policy).await;
    assert_hello_admitted(&reviewer, None).await;
    assert_not_asked(&fake, "populator.storage.k8s.io");
}

#[tokio::test]
async fn volume_populators_that_cannot_be_read_only_warn() {
    let fake = healthy_cluster();
    fake.serve("populator.storage.k8s.io/v1beta1", "volumepopulators");
    fake.state().forbidden.push(POPULATORS.to_owned());
    let (reviewer, _) = ready_reviewer(&fake, Policy::default()).await;
    assert_hello_admitted(&reviewer, Some("[populator] VolumePopulators could not be read (volumepopulators is forbidden: User \"pvc-clone-guard\" cannot list resource \"volumepopulators\"); no populator of Hello.hello.example.com was checked")).await;
}

#[tokio::test]
async fn a_volume_attributes_class_is_not_read_where_the_cluster_cannot_serve_it() {
    // Kubernetes 1.20 serves neither v1 nor v1beta1: nothing is checked, nothing is asked.
    let fake = healthy_cluster();
    let (reviewer, _) = ready_reviewer(&fake, Policy::default()).await;
    let response = review_clone_with_attributes_class(&reviewer).await;
    assert!(response.allowed, "{:?}", response.result.message);
    assert_not_asked(&fake, "/volumeattributesclasses");
}

#[tokio::test]
async fn a_volume_attributes_class_of_another_driver_is_refused_as_v1() {
    let fake = healthy_cluster();
    fake.serve("storage.k8s.io/v1", "volumeattributesclasses");
    fake.serve("storage.k8s.io/v1beta1", "volumeattributesclasses");
    put_attributes_class(&fake, "v1", "gold", "pd.csi.storage.gke.io");
    let (reviewer, metrics) = ready_reviewer(&fake, Policy::default()).await;
    eventually("the v1 watch is open", || {
        fake.state().watches.contains_key(ATTRIBUTES_CLASSES)
    })
    .await;
    let response = review_clone_with_attributes_class(&reviewer).await;
    assert_eq!(
        response.result.message,
        "[volume-attributes-class] VolumeAttributesClass \"gold\" is for CSI driver pd.csi.storage.gke.io but StorageClass \"gp3\" is provisioned by ebs.csi.aws.com; set spec.volumeAttributesClassName to a class of driver ebs.csi.aws.com"
    );
    assert_metric(&metrics, &confirmations("confirmed"), "1");
    assert_asked(
        &fake,
        "GET /apis/storage.k8s.io/v1/volumeattributesclasses/gold?",
    );
    assert_not_asked(&fake, "v1beta1/volumeattributesclasses");
}

#[tokio::test]
async fn a_missing_volume_attributes_class_is_refused_as_v1beta1_where_only_that_is_served() {
    let fake = healthy_cluster();
    fake.serve("storage.k8s.io/v1beta1", "volumeattributesclasses");
    put_attributes_class(&fake, "v1beta1", "silver", "ebs.csi.aws.com");
    let (reviewer, _) = ready_reviewer(&fake, Policy::default()).await;
    let response = review_clone_with_attributes_class(&reviewer).await;
    assert_eq!(
        response.result.message,
        "[volume-attributes-class] VolumeAttributesClass \"gold\" does not exist, and the provisioner would retry for ever while holding the source; create it, or fix spec.volumeAttributesClassName"
    );
    assert_asked(
        &fake,
        "GET /apis/storage.k8s.io/v1beta1/volumeattributesclasses/gold?",
    );
}

#[tokio::test]
async fn a_group_snapshot_is_refused_naming_its_members_in_the_version_served() {
    let fake = healthy_cluster();
    fake.serve(
        "groupsnapshot.storage.k8s.io/v1beta1",
        "volumegroupsnapshots",
    );
    fake.put_quietly(
        GROUP_SNAPSHOTS_BETA,
        "dev/group-1",
        json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta1", "kind": "VolumeGroupSnapshot",
        "metadata": {"name": "group-1", "namespace": "dev", "uid": "group-uid"}}),
    );
    // VolumeSnapshot `dev/{name}`, with `extra` fields (`ownerReferences` in its metadata).
    let put_member = |name: &str, extra: Value| {
        let mut snapshot = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                  "metadata": {"name": name, "namespace": "dev"}});
        for (key, value) in extra.as_object().cloned().unwrap_or_default() {
            match key.as_str() {
                "ownerReferences" => snapshot["metadata"]["ownerReferences"] = value,
                _ => snapshot[key] = value,
            }
        }
        fake.put_quietly(SNAPSHOTS, &format!("dev/{name}"), snapshot);
    };
    let owned_by = |version: &str, uid: &str| {
        json!({"ownerReferences": [
            {"apiVersion": format!("groupsnapshot.storage.k8s.io/{version}"), "kind": "VolumeGroupSnapshot",
             "name": "group-1", "uid": uid}]})
    };
    let listed = json!({"status": {"volumeGroupSnapshotName": "group-1"}});
    put_member("snap-b", listed);
    put_member("snap-a", owned_by("v1beta2", "group-uid"));
    put_member("stale", owned_by("v1beta1", "an-earlier-group"));
    put_member("alone", json!({}));
    let (reviewer, _) = ready_reviewer(&fake, Policy::default()).await;
    let group = |name: &str| {
        review_from(
            json!({"apiGroup": "groupsnapshot.storage.k8s.io", "kind": "VolumeGroupSnapshot", "name": name}),
        )
    };
    let response = reviewer.review(&group("group-1")).await.expect("answered");
    assert_eq!(
        response.result.message,
        "[group-snapshot] spec.dataSourceRef names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own: \"snap-a\", \"snap-b\""
    );
    assert_asked(
        &fake,
        "GET /apis/groupsnapshot.storage.k8s.io/v1beta1/namespaces/dev/volumegroupsnapshots/group-1?",
    );
    let response = reviewer.review(&group("nope")).await.expect("answered");
    assert_eq!(
        response.result.message,
        "[group-snapshot] spec.dataSourceRef names VolumeGroupSnapshot \"nope\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own (VolumeGroupSnapshot \"nope\" does not exist in namespace \"dev\")"
    );
}

#[tokio::test]
async fn reference_grants_are_read_as_v1_where_served_else_v1beta1() {
    for (served, expected) in [
        (
            vec!["v1", "v1beta1"],
            "/apis/gateway.networking.k8s.io/v1/namespaces/prod/referencegrants",
        ),
        (
            vec!["v1beta1"],
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/prod/referencegrants",
        ),
    ] {
        let fake = healthy_cluster();
        for version in &served {
            fake.serve(
                &format!("gateway.networking.k8s.io/{version}"),
                "referencegrants",
            );
        }
        let mut policy = Policy::default();
        policy.cross_namespace = pvc_clone_guard::config::CrossNamespace::ReferenceGrant;
        let (facts, _) = start(&fake, &policy);
        eventually("ready", || facts.ready()).await;
        let mut request = clone_request("data");
        request.source.namespace = Some("prod".into());
        request.source.field = "dataSourceRef";
        let gathered = facts
            .gather(&request, &policy, Freshness::Cached)
            .await
            .expect("facts");
        assert_eq!(gathered.grant, pvc_clone_guard::rules::GrantFact::NotFound);
        assert_asked(&fake, &format!("GET {expected}?"));
    }
}
