//! `--state`: files of objects (`kubectl get pvc,pv,sc,volumesnapshot,... -A -o yaml`)
//! served as a read-only Kubernetes API, in process, to kube's own `Client`.
//!
//! The webhook's fact gathering ([`ClusterFacts`](crate::facts::ClusterFacts)) then reads
//! them with exactly the requests it sends a cluster: no second copy of the lookups, and a
//! fact a rule starts reading is served from the files without a change here. A request is
//! answered from the objects by its path alone: `/api/v1/...` or `/apis/GROUP/VERSION/...`,
//! an optional `namespaces/NS/`, the resource (the kind's plural), an optional name. The
//! version asked for is not compared (the stored object is served as written), and field
//! selectors are applied to lists (`explain` reads events by `involvedObject`).
//!
//! An API group counts as served when the files hold an object of it; the core,
//! `storage.k8s.io` and `snapshot.storage.k8s.io` groups are always served, so a restore
//! whose snapshot is missing from the files reads as "does not exist", not as "the
//! VolumeSnapshot API is not served".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::manifests::Document;
use crate::rules::SNAPSHOT_GROUP;

/// Groups served even when the files hold none of their objects.
const ALWAYS_SERVED: [&str; 3] = ["", "storage.k8s.io", SNAPSHOT_GROUP];

/// The objects of the files, by group and resource, then `namespace/name` (`name` for
/// cluster-scoped objects).
#[derive(Clone, Debug, Default)]
pub struct State {
    objects: BTreeMap<(String, String), BTreeMap<String, Value>>,
    /// Kind and scope of each resource seen, for discovery.
    resources: BTreeMap<(String, String), (String, bool)>,
}

impl State {
    pub fn new(documents: impl IntoIterator<Item = Document>) -> Self {
        let mut state = State::default();
        for document in documents {
            let (group, _) = document.group_version();
            let group = group.to_owned();
            let kind = document.kind().to_owned();
            let plural = plural(&kind);
            let key = match document.namespace() {
                Some(namespace) => format!("{namespace}/{}", document.name()),
                None => document.name().to_owned(),
            };
            state.resources.insert(
                (group.clone(), plural.clone()),
                (kind, document.namespace().is_some()),
            );
            state
                .objects
                .entry((group, plural))
                .or_default()
                .insert(key, document.object);
        }
        state
    }

    /// A kube client whose every request is answered from these objects.
    pub fn client(self, default_namespace: &str) -> kube::Client {
        kube::Client::new(StateService(Arc::new(self)), default_namespace)
    }

    fn served(&self, group: &str) -> bool {
        ALWAYS_SERVED.contains(&group) || self.resources.keys().any(|(g, _)| g == group)
    }

    fn answer(&self, method: &str, path: &str, query: &str) -> (StatusCode, Value) {
        if method != "GET" {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} is not allowed: --state is read-only"),
            );
        }
        let Some(request) = parse_path(path) else {
            return not_served(path);
        };
        if !self.served(request.group) {
            return not_served(path);
        }
        let Some(resource) = request.resource else {
            return (
                StatusCode::OK,
                self.discovery(request.group, request.version),
            );
        };
        let objects = self
            .objects
            .get(&(request.group.to_owned(), resource.to_owned()));
        if query_value(query, "watch").is_some_and(|w| w == "true" || w == "1") {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "watch is not served from --state files",
            );
        }
        match request.name {
            Some(name) => {
                let key = match request.namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name.to_owned(),
                };
                match objects.and_then(|o| o.get(&key)) {
                    Some(object) => (StatusCode::OK, object.clone()),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{resource} \"{name}\" not found"),
                    ),
                }
            }
            None => {
                let selector = query_value(query, "fieldSelector").unwrap_or_default();
                let items: Vec<Value> = objects
                    .into_iter()
                    .flat_map(|o| o.values())
                    .filter(|object| {
                        request.namespace.is_none_or(|namespace| {
                            object["metadata"]["namespace"].as_str() == Some(namespace)
                        })
                    })
                    .filter(|object| matches_fields(object, &selector))
                    .cloned()
                    .collect();
                let kind = self
                    .resources
                    .get(&(request.group.to_owned(), resource.to_owned()))
                    .map_or_else(
                        || format!("{resource}List"),
                        |(kind, _)| format!("{kind}List"),
                    );
                (
                    StatusCode::OK,
                    json!({
                        "apiVersion": request.api_version(),
                        "kind": kind,
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    }),
                )
            }
        }
    }

    fn discovery(&self, group: &str, version: &str) -> Value {
        let mut resources: BTreeMap<String, (String, bool)> = self
            .resources
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, plural), kind)| (plural.clone(), kind.clone()))
            .collect();
        if group == SNAPSHOT_GROUP {
            for (plural, kind, namespaced) in [
                ("volumesnapshots", "VolumeSnapshot", true),
                ("volumesnapshotcontents", "VolumeSnapshotContent", false),
            ] {
                resources
                    .entry(plural.to_owned())
                    .or_insert((kind.to_owned(), namespaced));
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources.iter().map(|(plural, (kind, namespaced))| json!({
                "name": plural,
                "singularName": kind.to_ascii_lowercase(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "list"],
            })).collect::<Vec<_>>(),
        })
    }
}

/// The plural of a kind as the API names its resource (`StorageClass` -> `storageclasses`).
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

struct ApiPath<'a> {
    group: &'a str,
    version: &'a str,
    namespace: Option<&'a str>,
    resource: Option<&'a str>,
    name: Option<&'a str>,
}

impl ApiPath<'_> {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn parse_path(path: &str) -> Option<ApiPath<'_>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        rest => (None, rest),
    };
    let (resource, name) = match rest {
        [] => (None, None),
        [resource] => (Some(*resource), None),
        [resource, name] => (Some(*resource), Some(*name)),
        _ => return None,
    };
    Some(ApiPath {
        group,
        version,
        namespace,
        resource,
        name,
    })
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = match bytes.get(index..index + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            None => {
                out.push(if bytes[index] == b'+' {
                    b' '
                } else {
                    bytes[index]
                });
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a.b=c,d=e`: every field (a path of object keys) equals its value.
fn matches_fields(object: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            let (path, expected, equal) = match term.split_once("!=") {
                Some((path, expected)) => (path, expected, false),
                None => match term.split_once('=') {
                    Some((path, expected)) => (path, expected.trim_start_matches('='), true),
                    None => return false,
                },
            };
            let value = path
                .split('.')
                .try_fold(object, |value, key| value.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default();
            (value == expected) == equal
        })
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn not_served(path: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({path} is not in the --state files)"
        ),
    )
}

/// The tower service kube's client sends its requests to.
#[derive(Clone)]
struct StateService(Arc<State>);

impl<B> tower::Service<Request<B>> for StateService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        let (code, body) = self.0.answer(
            request.method().as_str(),
            uri.path(),
            uri.query().unwrap_or_default(),
        );
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = code;
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::manifests::parse;

    fn state() -> State {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: data, namespace: dev}
- apiVersion: storage.k8s.io/v1
  kind: StorageClass
  metadata: {name: gp3}
  provisioner: ebs.csi.aws.com
- apiVersion: v1
  kind: Event
  metadata: {name: e1, namespace: dev}
  reason: ProvisioningFailed
  involvedObject: {kind: PersistentVolumeClaim, name: clone}
- apiVersion: v1
  kind: Event
  metadata: {name: e2, namespace: dev}
  reason: Provisioning
  involvedObject: {kind: PersistentVolumeClaim, name: clone}
"#;
        State::new(parse("state.yaml", text.as_bytes()).expect("state"))
    }

    #[test]
    fn requests_are_answered_from_the_objects_by_path() {
        let state = state();
        let (code, claim) = state.answer(
            "GET",
            "/api/v1/namespaces/dev/persistentvolumeclaims/data",
            "",
        );
        assert_eq!(
            (code, claim["metadata"]["name"].as_str()),
            (StatusCode::OK, Some("data"))
        );
        let (code, missing) = state.answer(
            "GET",
            "/api/v1/namespaces/prod/persistentvolumeclaims/data",
            "",
        );
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            missing["message"],
            "persistentvolumeclaims \"data\" not found"
        );
        let (code, classes) = state.answer("GET", "/apis/storage.k8s.io/v1/storageclasses", "");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(classes["kind"], "StorageClassList");
        assert_eq!(classes["items"][0]["provisioner"], "ebs.csi.aws.com");
        let (code, pods) = state.answer("GET", "/api/v1/namespaces/dev/pods", "");
        assert_eq!(
            (code, pods["items"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(0))
        );
        let (code, _) = state.answer(
            "GET",
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/dev/referencegrants",
            "",
        );
        assert_eq!(
            code,
            StatusCode::NOT_FOUND,
            "a group with no object in the files is not served"
        );
        let (code, discovery) = state.answer("GET", "/apis/snapshot.storage.k8s.io/v1", "");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(discovery["resources"][0]["name"], "volumesnapshotcontents");
        assert_eq!(discovery["resources"][1]["name"], "volumesnapshots");
        let (code, _) = state.answer(
            "DELETE",
            "/api/v1/namespaces/dev/persistentvolumeclaims/data",
            "",
        );
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let (_, events) = state.answer(
            "GET",
            "/api/v1/namespaces/dev/events",
            "fieldSelector=involvedObject.name%3Dclone%2Creason%3DProvisioningFailed",
        );
        assert_eq!(events["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(events["items"][0]["metadata"]["name"], "e1");
    }

    #[test]
    fn plurals_are_the_api_resource_names() {
        for (kind, resource) in [
            ("PersistentVolumeClaim", "persistentvolumeclaims"),
            ("StorageClass", "storageclasses"),
            ("VolumeSnapshot", "volumesnapshots"),
            ("VolumeAttributesClass", "volumeattributesclasses"),
            ("ReferenceGrant", "referencegrants"),
            ("Policy", "policies"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }
}
