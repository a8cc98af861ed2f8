//! The rules outside the webhook: `check` judges manifests before they reach a cluster, and
//! `explain` says what keeps claims that already exist Pending.
//!
//! Both reach the rules the way the webhook does: each object becomes the AdmissionReview
//! (a CREATE) that the API server would send, and the webhook's own
//! [`Reviewer`](crate::review::Reviewer) judges it, over the webhook's own fact gathering
//! ([`ClusterFacts`]) without watches: reading the live API, or files of objects served as
//! one ([`state`]). No rule, message or lookup is written a second time here.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::facts::ClusterFacts;
use crate::metrics::Metrics;
use crate::review::{self, ReviewRequest, Reviewer, Triage};
use crate::rules::DataSourceRequest;

pub mod check;
pub mod explain;
pub mod manifests;
pub mod state;

/// The webhook's reviewer over the webhook's fact gathering, answering from the API server.
pub type OfflineReviewer = Reviewer<ClusterFacts>;

/// What `check` and `explain` start from: the policy of `--config` (the defaults without
/// one) and a runtime on the calling thread, or the message to exit 2 with.
pub fn policy_and_runtime(
    config: Option<&std::path::Path>,
) -> Result<(crate::config::Policy, tokio::runtime::Runtime), String> {
    let policy = match config {
        Some(path) => crate::config::Policy::from_file(path).map_err(|error| error.to_string())?,
        None => crate::config::Policy::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    Ok((policy, runtime))
}

/// Where facts come from: `--state` files, or the cluster of the usual kubeconfig.
pub async fn client(state: &[PathBuf]) -> Result<kube::Client, String> {
    if !state.is_empty() {
        let input = manifests::read_paths(state).map_err(|error| error.to_string())?;
        return Ok(state::State::new(input.documents).client("default"));
    }
    // kube and the webhook share one TLS library; name its crypto provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    kube::Client::try_default().await.map_err(|error| {
        format!(
            "no cluster to read facts from: {}; pass --state FILE to check against files of objects instead",
            crate::cli::kube_config_error(error)
        )
    })
}

pub fn reviewer(policy: crate::config::Policy, client: kube::Client) -> OfflineReviewer {
    let metrics = Metrics::new();
    Reviewer::new(
        policy,
        ClusterFacts::lookups_only(client, metrics.clone()),
        metrics,
    )
}

/// The resource of a kind the webhook judges: a claim (core) or a StatefulSet (apps).
fn judged_kind(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "PersistentVolumeClaim") => Some("persistentvolumeclaims"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        _ => None,
    }
}

/// The review the API server would send for a CREATE of `object` in `namespace`, parsed by
/// the webhook's own parser; `None` for a kind the webhook does not judge.
pub fn create_review(object: &Value, namespace: &str) -> Option<ReviewRequest> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = judged_kind(group, kind)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let body = json!({
        "apiVersion": review::ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": "pvc-clone-guard-offline",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {},
            "object": object,
            "dryRun": true,
        }
    });
    review::parse(body.to_string().as_bytes()).ok()
}

/// The claims a review stands for that the rules judge (a claim: one, unlabelled; a
/// StatefulSet: one per template with a data source), or none.
pub fn judged_claims(request: &ReviewRequest) -> Vec<(Option<String>, DataSourceRequest)> {
    match review::triage(request) {
        Triage::Skip(_) => Vec::new(),
        Triage::Judge(claim) => vec![(None, claim)],
        Triage::JudgeTemplates(templates) => templates
            .into_iter()
            .map(|template| (Some(template.label), template.request))
            .collect(),
    }
}
