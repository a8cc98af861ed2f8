//! `explain [-n NS | -A] [CLAIM]`: for claims that exist and are Pending with a data source,
//! what keeps each one Pending now: the `[rule]` lines the webhook would give it today, else
//! the provisioner's latest `ProvisioningFailed` event, else that no rule refuses it.
//!
//! Claims get here without the webhook's verdict at create time: created before it was
//! installed, while it failed open, in a namespace it skips, or by a controller. Each is
//! judged as the CREATE it was (the webhook's reviewer, the same lookups), so the lines are
//! the webhook's own.

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use kube::api::{Api, ListParams};

use super::{OfflineReviewer, create_review, judged_claims};
use crate::config::Policy;
use crate::review::OutcomeKind;

/// Which claims to explain.
#[derive(Clone, Debug)]
pub struct ExplainOptions {
    /// `None`: the kubeconfig's namespace.
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub claim: Option<String>,
    pub config: Option<PathBuf>,
    pub state: Vec<PathBuf>,
}

/// What v5 of the external-provisioner put before every `ProvisioningFailed` message (v6
/// sends the bare error).
const V5_PREFIX: &str = "failed to provision volume with StorageClass ";

pub const WAITING: &str = "no rule refuses it: waiting for the provisioner";

/// Runs `explain`; prints one line per reason and returns the exit code: 0 when every claim
/// was explained, 2 when the claims or their facts could not be read.
pub fn run(options: ExplainOptions) -> ExitCode {
    let fail = |message: String| {
        eprintln!("pvc-clone-guard explain: {message}");
        ExitCode::from(2)
    };
    let (policy, runtime) = match super::policy_and_runtime(options.config.as_deref()) {
        Ok(started) => started,
        Err(message) => return fail(message),
    };
    match runtime.block_on(explain(&options, policy)) {
        Ok((lines, complete)) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::from(if complete { 0 } else { 2 })
        }
        Err(message) => fail(message),
    }
}

/// The lines `explain` prints, and whether every claim could be judged.
pub async fn explain(
    options: &ExplainOptions,
    policy: Policy,
) -> Result<(Vec<String>, bool), String> {
    let client = super::client(&options.state).await?;
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let claims_api: Api<PersistentVolumeClaim> = if options.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &namespace)
    };
    let read_error = |error: kube::Error| match error {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    };
    let mut claims = match &options.claim {
        Some(name) => {
            let claim = claims_api.get_opt(name).await.map_err(read_error)?;
            let claim = claim
                .ok_or_else(|| format!("claim {name:?} not found in namespace {namespace:?}"))?;
            vec![claim]
        }
        None => {
            claims_api
                .list(&ListParams::default())
                .await
                .map_err(read_error)?
                .items
        }
    };
    claims.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let reviewer = super::reviewer(policy, client.clone());
    let mut lines = Vec::new();
    let mut complete = true;
    for claim in &claims {
        let claim_namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let who = format!("{claim_namespace}/{name}");
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let spec = claim.spec.as_ref();
        let has_source =
            spec.is_some_and(|s| s.data_source.is_some() || s.data_source_ref.is_some());
        if phase != "Pending" || !has_source {
            if options.claim.is_some() {
                let why = if has_source {
                    format!("{phase}, not Pending: nothing keeps it waiting")
                } else {
                    "has no data source: pvc-clone-guard has nothing to say about it".to_owned()
                };
                lines.push(format!("{who}: {why}"));
            }
            continue;
        }
        match reasons(&reviewer, &client, claim, &claim_namespace).await {
            Ok(reasons) => lines.extend(reasons.into_iter().map(|r| format!("{who}: {r}"))),
            Err(cause) => {
                complete = false;
                lines.push(format!("{who}: could not check it: {cause}"));
            }
        }
    }
    if lines.is_empty() {
        lines.push(if options.all_namespaces {
            "no claim with a data source is Pending in any namespace".to_owned()
        } else {
            format!("no claim with a data source is Pending in namespace {namespace:?}")
        });
    }
    Ok((lines, complete))
}

/// What keeps one Pending claim waiting, one reason per line (without the claim's name).
async fn reasons(
    reviewer: &OfflineReviewer,
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    namespace: &str,
) -> Result<Vec<String>, String> {
    let object = serde_json::to_value(claim).map_err(|e| e.to_string())?;
    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    if let Some(request) = create_review(&object, namespace)
        && !judged_claims(&request).is_empty()
    {
        let outcome = reviewer.judge(&request).await;
        if let OutcomeKind::LookupFailed { cause, .. } = outcome.kind {
            return Err(cause);
        }
        if let Some(verdict) = outcome.verdict {
            denials = verdict.denials.iter().map(ToString::to_string).collect();
            warnings = verdict
                .warnings
                .iter()
                .map(|w| format!("warning: {w}"))
                .collect();
        }
    }
    let mut reasons = denials;
    if reasons.is_empty() {
        let event = latest_provisioning_failure(client, claim, namespace).await?;
        reasons.push(match event {
            Some(message) => format!("ProvisioningFailed: {message}"),
            None => WAITING.to_owned(),
        });
    }
    reasons.extend(warnings);
    Ok(reasons)
}

/// The message of the claim's latest `ProvisioningFailed` event, without v5's prefix.
async fn latest_provisioning_failure(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    namespace: &str,
) -> Result<Option<String>, String> {
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let mut selector = format!(
        "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name},reason=ProvisioningFailed"
    );
    if let Some(uid) = &claim.metadata.uid {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) => format!("reading events failed: {}", status.message),
            other => format!("reading events failed: {other}"),
        })?;
    let latest = list.items.into_iter().max_by_key(|event| {
        let when = event
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.event_time.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        (when, event.count.unwrap_or_default())
    });
    Ok(latest
        .and_then(|event| event.message)
        .map(|m| without_v5_prefix(&m)))
}

/// `failed to provision volume with StorageClass "gp3": X` -> `X`.
fn without_v5_prefix(message: &str) -> String {
    message
        .strip_prefix(V5_PREFIX)
        .and_then(|rest| {
            let rest = rest.strip_prefix('"')?;
            let end = rest.find("\": ")?;
            Some(rest[end + 3..].to_owned())
        })
        .unwrap_or_else(|| message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v5_prefix_is_dropped_and_v6_messages_kept() {
        assert_eq!(
            without_v5_prefix(
                "failed to provision volume with StorageClass \"gp3\": error getting handle for DataSource Type PersistentVolumeClaim by Name src: claim in dataSource not bound or invalid"
            ),
            "error getting handle for DataSource Type PersistentVolumeClaim by Name src: claim in dataSource not bound or invalid"
        );
        let v6 = "snapshot snap-1 is being deleted";
        assert_eq!(without_v5_prefix(v6), v6);
    }
}
