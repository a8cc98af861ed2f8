//! AdmissionReview in, AdmissionResponse out: parse the review, decide whether the rules
//! apply, gather facts, run the rules, and build the response with the request's uid.
//!
//! Two kinds are judged: a claim, and a StatefulSet, whose `volumeClaimTemplates` are the
//! claims it will create (see [`statefulset`]). Both arrive on the same path; `triage`
//! tells them apart by `request.kind`.
//!
//! kube's `AdmissionReview<T>` flattens its type fields, which makes serde buffer the
//! whole body (managedFields included) before parsing it. The envelope here is a plain
//! struct around a slim [`ReviewRequest`] (see there why not kube's `AdmissionRequest`),
//! whose object is a [`ReviewedClaim`], which keeps only what the rules read and skips
//! everything else without building it. serde reads every body.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use kube::core::DynamicObject;
use kube::core::TypeMeta;
use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::lenient::{LenientMap, d_any, lenient_string};

use crate::facts::{FactSource, Freshness, LookupError};
use crate::metrics::Metrics;
use crate::rules::{self, DataSourceRequest, SNAPSHOT_GROUP, SourceKind, SourceReference, Verdict};
use crate::rules::{FailureMode, Policy};

pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
const PVC_KIND: &str = "PersistentVolumeClaim";

/// Why a body is not a review we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not a valid AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "apiVersion {0:?} is not supported: send admission.k8s.io/v1 (set admissionReviewVersions: [v1])"
    )]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// The object under review, reduced to what the rules read: a claim's spec, or a
/// StatefulSet's claim templates (the name stays: a StatefulSet is reviewed for the claims
/// it stands for).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewedClaim {
    metadata: ReviewedMeta,
    spec: ClaimSpec,
    /// A StatefulSet's `spec.volumeClaimTemplates`; empty for a claim.
    templates: Vec<ClaimTemplate>,
}

/// The object's metadata that the review reads (the name, for the log line; the namespace,
/// when the request has none). k8s-openapi's `ObjectMeta` would be ~20 times the size,
/// moved with the review from the parser to the judge.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewedMeta {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    generate_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ClaimSpec {
    data_source: Option<TypedReference>,
    data_source_ref: Option<TypedReference>,
    volume_mode: Option<String>,
    storage_class_name: Option<String>,
    requested_storage: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedReference {
    #[serde(default, deserialize_with = "lenient_string")]
    api_group: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    namespace: Option<String>,
}

/// The review as sent by the API server, without `#[serde(flatten)]`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<WireRequest>,
}

/// The request of a review, reduced to what triage, the log line and the response read.
///
/// STYLE.md asks for kube's `AdmissionRequest` here. Input departs from it for speed: that
/// type builds four `GroupVersionKind`/`GroupVersionResource`s (12 owned strings), the
/// whole `userInfo` (a map of lists) and `options` as a `serde_json::Value` on every review,
/// none of which the webhook reads: about a third of the CPU of parsing a plain review
/// (BENCHMARKS.md). The fields mirror kube's, with the same names, types, defaults and
/// declaration order, so that a review that kube's type refuses is refused here with the
/// same message (a missing `uid`, `resource`, `operation` or `userInfo`, a `kind` that is
/// not a group/version/kind, an unknown operation); the fields not read are checked for
/// their shape and skipped without being built. Responses stay on kube's
/// `AdmissionResponse` (see [`Reviewer::judge`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRequest {
    pub uid: String,
    /// `request.kind`: the group and kind of the object (the version is not read).
    pub kind: ReviewKind,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    /// Boxed, as is the old object: the request is moved from the parser to the judge and
    /// the log line, and ~360 bytes each would be copied with it every time.
    pub object: Option<Box<ReviewedClaim>>,
    /// Read for a StatefulSet UPDATE only (are its templates unchanged?).
    pub old_object: Option<Box<ReviewedClaim>>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReviewKind {
    pub group: String,
    #[serde(rename = "version")]
    _version: WireStr,
    pub kind: String,
}

/// kube's `AdmissionRequest` field by field; `WireStr`, `WireGroupVersionKind`,
/// `WireGroupVersionResource` and `WireObject` check a field's shape without building it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // the fields only checked are never read
struct WireRequest {
    uid: String,
    kind: ReviewKind,
    resource: WireGroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<WireGroupVersionKind>,
    #[serde(default)]
    request_resource: Option<WireGroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<WireStr>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: WireObject,
    object: Option<Box<ReviewedClaim>>,
    old_object: Option<Box<ReviewedClaim>>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    options: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct WireGroupVersionKind {
    group: WireStr,
    version: WireStr,
    kind: WireStr,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct WireGroupVersionResource {
    group: WireStr,
    version: WireStr,
    resource: WireStr,
}

/// A JSON string, checked (UTF-8 included) and not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct WireStr;

impl<'de> Deserialize<'de> for WireStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = WireStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<WireStr, E> {
                Ok(WireStr)
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A JSON object (as k8s-openapi's `UserInfo` requires), skipped without being built.
struct WireObject;

impl<'de> Deserialize<'de> for WireObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = WireObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("UserInfo")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(WireObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Parses a review body; every failure is a [`ReviewError`], never a panic.
pub fn parse(body: &[u8]) -> Result<ReviewRequest, ReviewError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        // A request of another version may well not parse; saying which version is wanted
        // helps more than naming the first field that did not fit.
        Err(error) => return Err(header_error(body).unwrap_or(ReviewError::Json(error))),
    };
    check_header(&envelope.api_version, &envelope.kind)?;
    let wire = envelope.request.ok_or(ReviewError::NoRequest)?;
    let is_statefulset = statefulset::is_statefulset_kind(&wire.kind);
    Ok(ReviewRequest {
        uid: wire.uid,
        kind: wire.kind,
        sub_resource: wire.sub_resource,
        name: wire.name,
        namespace: wire.namespace,
        operation: wire.operation,
        object: wire.object,
        old_object: wire.old_object.filter(|_| is_statefulset),
        dry_run: wire.dry_run,
    })
}

fn check_header(api_version: &str, kind: &str) -> Result<(), ReviewError> {
    if api_version != ADMISSION_API_VERSION {
        return Err(ReviewError::Version(api_version.to_owned()));
    }
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_owned()));
    }
    Ok(())
}

/// The header's error, if the body is JSON with a wrong apiVersion or kind.
fn header_error(body: &[u8]) -> Option<ReviewError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Header {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    let header: Header = serde_json::from_slice(body).ok()?;
    check_header(&header.api_version, &header.kind).err()
}

/// What a review is, before any rule runs.
#[derive(Debug, PartialEq)]
pub enum Triage {
    /// Allowed at once; the reason is logged and counted.
    Skip(SkipReason),
    /// A clone (PersistentVolumeClaim) or restore (VolumeSnapshot) data source: the rules
    /// apply.
    Judge(DataSourceRequest),
    /// A StatefulSet: the claims of its templates that have a data source, in order.
    JudgeTemplates(Vec<TemplateRequest>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotCreate,
    NotAClaim,
    NoObject,
    /// Neither a clone nor a restore (for a StatefulSet: no template is).
    NotAClone,
    /// A StatefulSet UPDATE that leaves `volumeClaimTemplates` as they were.
    TemplatesUnchanged,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotCreate => "not-create",
            SkipReason::NotAClaim => "not-a-claim",
            SkipReason::NoObject => "no-object",
            SkipReason::NotAClone => "not-a-clone",
            SkipReason::TemplatesUnchanged => "templates-unchanged",
        }
    }
}

/// The kind of source a data source reference names, if the rules judge it: a claim (any
/// API group: `source-api-group` refuses a non-empty one) or a VolumeSnapshot of
/// `snapshot.storage.k8s.io`.
fn source_kind(reference: &TypedReference) -> Option<SourceKind> {
    match (reference.kind.as_deref(), reference.api_group.as_deref()) {
        (Some(PVC_KIND), _) => Some(SourceKind::Claim),
        (Some("VolumeSnapshot"), Some(SNAPSHOT_GROUP)) => Some(SourceKind::Snapshot),
        _ => None,
    }
}

/// Decides whether the rules apply (SPEC §2): only CREATE of a core/v1 claim whose
/// `dataSource` (read first) or `dataSourceRef` names a claim (a clone) or a VolumeSnapshot
/// (a restore).
pub fn triage(request: &ReviewRequest) -> Triage {
    if statefulset::is_statefulset(request) {
        return statefulset::triage(request);
    }
    if request.operation != Operation::Create {
        return Triage::Skip(SkipReason::NotCreate);
    }
    if !request.kind.group.is_empty()
        || request.kind.kind != PVC_KIND
        || request.sub_resource.is_some()
    {
        return Triage::Skip(SkipReason::NotAClaim);
    }
    let Some(claim) = request.object.as_ref() else {
        return Triage::Skip(SkipReason::NoObject);
    };
    match claim_request(|| review_namespace(request, claim), &claim.spec) {
        Some(judged) => Triage::Judge(judged),
        None => Triage::Skip(SkipReason::NotAClone),
    }
}

/// The namespace the claims are created in: the request's, else the object's.
fn review_namespace(request: &ReviewRequest, object: &ReviewedClaim) -> String {
    request
        .namespace
        .clone()
        .or_else(|| object.metadata.namespace.clone())
        .unwrap_or_default()
}

/// What the rules judge about a claim with this spec in `namespace`, if it is a clone or a
/// restore.
fn claim_request(
    namespace: impl FnOnce() -> String,
    spec: &ClaimSpec,
) -> Option<DataSourceRequest> {
    let (reference, kind, field) = match (spec.data_source.as_ref(), spec.data_source_ref.as_ref())
    {
        (Some(source), _) => (source, source_kind(source)?, "dataSource"),
        (None, Some(source)) => (source, source_kind(source)?, "dataSourceRef"),
        (None, None) => return None,
    };
    // Only dataSourceRef can name a namespace; the API server fills both fields alike.
    let source_namespace = spec
        .data_source_ref
        .as_ref()
        .filter(|r| source_kind(r) == Some(kind) && r.name == reference.name)
        .and_then(|r| r.namespace.clone());
    Some(DataSourceRequest {
        namespace: namespace(),
        source: SourceReference {
            kind,
            name: reference.name.clone().unwrap_or_default(),
            namespace: source_namespace,
            api_group: reference.api_group.clone(),
            field,
        },
        volume_mode: spec.volume_mode.clone(),
        storage_class: spec.storage_class_name.clone(),
        requested_storage: spec.requested_storage.clone(),
    })
}

/// The verdict of one review, for the response, the log line and the metrics.
#[derive(Debug)]
pub struct Outcome {
    pub response: AdmissionResponse,
    pub kind: OutcomeKind,
    pub verdict: Option<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    Skipped(SkipReason),
    Allowed,
    Warned,
    Denied,
    /// The facts could not be gathered; the failure mode decided.
    LookupFailed {
        allowed: bool,
        cause: String,
    },
}

impl OutcomeKind {
    /// The `verdict` label of the review counter.
    pub fn label(&self) -> &'static str {
        match self {
            OutcomeKind::Skipped(_) => "skipped",
            OutcomeKind::Allowed => "allowed",
            OutcomeKind::Warned => "warned",
            OutcomeKind::Denied => "denied",
            OutcomeKind::LookupFailed { allowed: true, .. } => "failed-open",
            OutcomeKind::LookupFailed { allowed: false, .. } => "failed-closed",
        }
    }
}

/// A review that parsed, waiting to be judged.
pub struct ParsedReview {
    request: ReviewRequest,
    started: Instant,
}

/// Judges reviews: the one place where parsing, facts and rules meet.
pub struct Reviewer<F> {
    policy: Policy,
    facts: F,
    metrics: Metrics,
}

impl<F: FactSource> Reviewer<F> {
    pub fn new(policy: Policy, facts: F, metrics: Metrics) -> Self {
        Reviewer {
            policy,
            facts,
            metrics,
        }
    }

    pub fn facts(&self) -> &F {
        &self.facts
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers one review body. `Err` means the body could not be parsed (HTTP 400).
    pub async fn review(&self, body: &[u8]) -> Result<AdmissionResponse, ReviewError> {
        let parsed = self.parse(body)?;
        Ok(self.answer(parsed).await)
    }

    /// The first half of [`Reviewer::review`]: the body is no longer needed afterwards, so
    /// the server can free it (and let another body in) before the facts are gathered.
    pub fn parse(&self, body: &[u8]) -> Result<ParsedReview, ReviewError> {
        let started = Instant::now();
        match parse(body) {
            Ok(request) => Ok(ParsedReview { request, started }),
            Err(error) => {
                self.metrics.record_malformed();
                tracing::warn!(%error, "refused a review that does not parse");
                Err(error)
            }
        }
    }

    /// The second half of [`Reviewer::review`]: judge, record, respond.
    pub async fn answer(&self, parsed: ParsedReview) -> AdmissionResponse {
        let outcome = self.judge(&parsed.request).await;
        self.record(&parsed.request, &outcome, parsed.started.elapsed());
        outcome.response
    }

    /// Decides a parsed review.
    pub async fn judge(&self, request: &ReviewRequest) -> Outcome {
        // The response is made where it is needed, not before the lookups: the future of
        // a review would otherwise carry it (448 bytes) across them.
        let response = || allowed_response(&request.uid);
        // Each claim judged, with the template it comes from (a StatefulSet). A claim is
        // one, and is not put in a list of its own.
        let (claim, templates) = match triage(request) {
            Triage::Skip(reason) => {
                return Outcome {
                    response: response(),
                    kind: OutcomeKind::Skipped(reason),
                    verdict: None,
                };
            }
            Triage::Judge(judged) => (Some((None, judged)), Vec::new()),
            Triage::JudgeTemplates(templates) => (None, templates),
        };
        let claims = claim.into_iter().chain(
            templates
                .into_iter()
                .map(|template| (Some(template.label), template.request)),
        );
        // One deadline for the whole lookup, confirmation and every template included:
        // shorter than the webhook's timeoutSeconds, so the failure mode, not the API
        // server, decides.
        let deadline = tokio::time::Instant::now() + self.policy.lookup_timeout;
        let mut verdict = Verdict::default();
        for (template, judged) in claims {
            let what = if judged.is_restore() {
                "restore"
            } else {
                "clone"
            };
            let found = match self.verdict_for(&judged, deadline).await {
                Ok(found) => found,
                Err(error) => {
                    return match template {
                        None => {
                            self.lookup_failed(response(), what, self.policy.failure_mode, &error)
                        }
                        // Every claim the StatefulSet creates is judged by the claim
                        // webhook with the configured failure mode: refusing the
                        // StatefulSet over a lookup would block it without keeping any
                        // bad clone out.
                        Some(template) => self.lookup_failed(
                            response(),
                            &format!("{what} template {template}"),
                            FailureMode::FailOpen,
                            &error,
                        ),
                    };
                }
            };
            match template {
                None => verdict = found,
                Some(template) => verdict.append(found, &template),
            }
        }
        let mut response = response();
        if !verdict.warnings.is_empty() {
            response.warnings = Some(verdict.warning_lines());
        }
        let kind = if !verdict.allowed() {
            response = deny(response, verdict.denial_message());
            OutcomeKind::Denied
        } else if verdict.warnings.is_empty() {
            OutcomeKind::Allowed
        } else {
            OutcomeKind::Warned
        };
        response.audit_annotations = audit_annotations(&kind, Some(&verdict));
        Outcome {
            response,
            kind,
            verdict: Some(verdict),
        }
    }

    /// The rules' verdict on one claim; a denial read from the caches is confirmed live.
    async fn verdict_for(
        &self,
        judged: &DataSourceRequest,
        deadline: tokio::time::Instant,
    ) -> Result<Verdict, LookupError> {
        if !judged.needs_facts(&self.policy) {
            return Ok(rules::decide(judged, None, &self.policy));
        }
        // The cached facts go out of scope before the confirmation's await, so the future
        // does not hold them and the live ones at once.
        let verdict = {
            let facts = self.gather(judged, Freshness::Cached, deadline).await?;
            rules::decide(judged, Some(&facts), &self.policy)
        };
        if verdict.allowed() {
            return Ok(verdict);
        }
        // A denial is never based on a cache alone: the facts are read again from the API
        // server, and the rules decide on those.
        let live = self.gather(judged, Freshness::Live, deadline).await?;
        let confirmed = rules::decide(judged, Some(&live), &self.policy);
        self.metrics.record_confirmation(if confirmed.allowed() {
            "overturned"
        } else {
            "confirmed"
        });
        Ok(confirmed)
    }

    /// Gathers facts before `deadline`; `Err` is the cause for the failure mode.
    async fn gather(
        &self,
        request: &DataSourceRequest,
        freshness: Freshness,
        deadline: tokio::time::Instant,
    ) -> Result<rules::Facts, LookupError> {
        if freshness == Freshness::Cached
            && let Some(facts) = self.facts.cached(request, &self.policy)
        {
            return Ok(facts);
        }
        // Boxed: a lookup that goes to the API server is a large future (kube's requests),
        // which would otherwise make every review's future that large, plain ones included,
        // and be copied with it (hyper moves each request's future into place).
        let mut gathering = Box::pin(self.facts.gather(request, &self.policy, freshness));
        // Facts read from the caches are there at the first poll: no timer is set for them
        // (setting and clearing one was ~2 % of a cached clone review's CPU).
        if let Some(facts) = futures::FutureExt::now_or_never(gathering.as_mut()) {
            return facts;
        }
        tokio::time::timeout_at(deadline, gathering)
            .await
            .unwrap_or(Err(LookupError::Timeout(self.policy.lookup_timeout)))
    }

    fn lookup_failed(
        &self,
        response: AdmissionResponse,
        what: &str,
        failure_mode: FailureMode,
        error: &LookupError,
    ) -> Outcome {
        self.metrics.record_lookup_error(error.resource());
        let cause = error.to_string();
        let (response, allowed) = match failure_mode {
            FailureMode::FailClosed => (
                deny(
                    response,
                    format!(
                        "pvc-clone-guard could not check this {what}: {cause}; \
                         the webhook fails closed, so retry in a moment or ask an administrator to check pvc-clone-guard"
                    ),
                ),
                false,
            ),
            FailureMode::FailOpen => {
                let mut response = response;
                response.warnings = Some(vec![format!(
                    "pvc-clone-guard could not check this {what} ({cause}); admitted unchecked"
                )]);
                (response, true)
            }
        };
        let kind = OutcomeKind::LookupFailed { allowed, cause };
        let mut response = response;
        response.audit_annotations = audit_annotations(&kind, None);
        Outcome {
            response,
            kind,
            verdict: None,
        }
    }

    fn record(&self, request: &ReviewRequest, outcome: &Outcome, elapsed: Duration) {
        let operation = operation_label(&request.operation);
        self.metrics
            .record_review(operation, outcome.kind.label(), elapsed);
        let rules: Vec<&str> = outcome
            .verdict
            .iter()
            .flat_map(|v| v.denials.iter().chain(&v.warnings))
            .map(|f| f.rule.as_str())
            .collect();
        if let Some(verdict) = &outcome.verdict {
            for finding in &verdict.denials {
                self.metrics.record_violation(finding.rule.as_str(), "deny");
            }
            for finding in &verdict.warnings {
                self.metrics.record_violation(finding.rule.as_str(), "warn");
            }
        }
        let name = request
            .object
            .as_ref()
            .and_then(|o| {
                o.metadata
                    .name
                    .as_deref()
                    .or(o.metadata.generate_name.as_deref())
            })
            .unwrap_or(request.name.as_str());
        let skipped = match &outcome.kind {
            OutcomeKind::Skipped(reason) => reason.as_str(),
            _ => "",
        };
        let cause = match &outcome.kind {
            OutcomeKind::LookupFailed { cause, .. } => cause.as_str(),
            _ => "",
        };
        tracing::info!(
            uid = request.uid.as_str(),
            operation,
            kind = request.kind.kind.as_str(),
            namespace = request.namespace.as_deref().unwrap_or(""),
            name,
            dry_run = request.dry_run,
            verdict = outcome.kind.label(),
            skipped,
            rules = %Joined(&rules),
            cause,
            elapsed_us = elapsed.as_micros() as u64,
            "review"
        );
    }
}

/// What a judged review leaves in the API server's audit log (skipped reviews leave
/// nothing). Keys are plain names: the API server prefixes each with the webhook's name,
/// e.g. `validate.pvc-clone-guard.io/verdict`. Rule lists are present only when non-empty,
/// so an audit query can test for a key's presence.
fn audit_annotations(kind: &OutcomeKind, verdict: Option<&Verdict>) -> HashMap<String, String> {
    let mut annotations = HashMap::from([("verdict".to_owned(), kind.label().to_owned())]);
    if let Some(verdict) = verdict {
        let rule_ids = |findings: &[rules::Finding]| {
            findings
                .iter()
                .map(|f| f.rule.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if !verdict.denials.is_empty() {
            annotations.insert("denied-rules".to_owned(), rule_ids(&verdict.denials));
        }
        if !verdict.warnings.is_empty() {
            annotations.insert("warned-rules".to_owned(), rule_ids(&verdict.warnings));
        }
    }
    if let OutcomeKind::LookupFailed { cause, .. } = kind {
        annotations.insert("cause".to_owned(), cause.clone());
    }
    annotations
}

/// The response to a review, allowed until the rules say otherwise, with the request's uid
/// echoed. kube's `AdmissionResponse` is `#[non_exhaustive]` and made from an
/// `AdmissionRequest`, which the slim [`ReviewRequest`] is not: it is made from kube's own
/// constructor once, set to what `AdmissionResponse::from(&request)` gives for a v1 review
/// (allowed, default status), and cloned with the uid of each review.
fn allowed_response(uid: &str) -> AdmissionResponse {
    static TEMPLATE: std::sync::LazyLock<AdmissionResponse> = std::sync::LazyLock::new(|| {
        let mut response = AdmissionResponse::invalid("");
        response.types = TypeMeta {
            api_version: ADMISSION_API_VERSION.to_owned(),
            kind: "AdmissionReview".to_owned(),
        };
        response.allowed = true;
        response.result = Default::default();
        response
    });
    let mut response = TEMPLATE.clone();
    uid.clone_into(&mut response.uid);
    response
}

/// Refuses with 403 Forbidden, as SPEC §4 asks.
fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    response
}

pub fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

struct Joined<'a>(&'a [&'a str]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, item) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}

/// Serializes a response as the AdmissionReview the API server expects.
pub fn to_body(mut response: AdmissionResponse) -> Vec<u8> {
    thread_local! {
        /// Where answers are written, kept from review to review (shrunk past 64 KiB).
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // What `into_review` makes, with the response's type fields moved, not cloned.
    let review = AdmissionReview::<DynamicObject> {
        types: std::mem::take(&mut response.types),
        request: None,
        response: Some(response),
    };
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        // Serializing plain strings, maps and numbers cannot fail; fall back to a valid
        // (if uid-less) refusal rather than panicking should it ever do so.
        let body = match serde_json::to_writer(&mut *buffer, &review) {
            // One allocation of the exact size: hyper sends it without another (a `Vec`
            // with room to spare costs `Bytes` a second allocation).
            Ok(()) => buffer.to_vec(),
            Err(_) => br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false}}"#
                .to_vec(),
        };
        if buffer.capacity() > 64 * 1024 {
            buffer.shrink_to(64 * 1024);
        }
        body
    })
}

// ---- Tolerant deserialization of the reviewed object -------------------------------------
//
// The webhook is registered for claims, but anything may be posted to it. A field of an
// unexpected type is treated as absent instead of failing the whole review, so that a
// non-claim object is allowed (SPEC §2) rather than refused as malformed.

impl<'de> Deserialize<'de> for ReviewedClaim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct Wire {
            #[serde(default, deserialize_with = "lenient_meta")]
            metadata: ReviewedMeta,
            #[serde(default, deserialize_with = "lenient_spec")]
            spec: ObjectSpec,
        }
        fn lenient_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ReviewedMeta, D::Error> {
            d.deserialize_any(LenientMap::<ReviewedMeta>::new())
        }
        fn lenient_spec<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectSpec, D::Error> {
            d.deserialize_any(LenientMap::<ObjectSpec>::new())
        }

        let wire = d_any(deserializer)?;
        let Wire { metadata, spec } = wire;
        Ok(ReviewedClaim {
            metadata,
            spec: spec.claim,
            templates: spec.templates,
        })
    }
}

/// A `spec`: a claim's fields and a StatefulSet's templates, read in one pass (a review
/// holds one or the other; reading both keeps the parser free of the kind).
#[derive(Default)]
struct ObjectSpec {
    claim: ClaimSpec,
    templates: Vec<ClaimTemplate>,
}

impl<'de> Deserialize<'de> for ClaimSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A template's spec: templates within it, if anyone wrote any, are not read.
        ObjectSpec::deserialize(deserializer).map(|spec| spec.claim)
    }
}

impl<'de> Deserialize<'de> for ObjectSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct Requests {
            #[serde(default, deserialize_with = "lenient_string")]
            storage: Option<String>,
        }
        #[derive(Deserialize, Default)]
        struct Resources {
            #[serde(default, deserialize_with = "lenient_requests")]
            requests: Requests,
        }
        fn lenient_requests<'de, D: Deserializer<'de>>(d: D) -> Result<Requests, D::Error> {
            d_any(d)
        }
        fn lenient_resources<'de, D: Deserializer<'de>>(d: D) -> Result<Resources, D::Error> {
            d_any(d)
        }
        fn lenient_reference<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<TypedReference>, D::Error> {
            d.deserialize_any(LenientMap::<OptionalReference>::new())
                .map(|r| r.0)
        }
        #[derive(Default)]
        struct OptionalReference(Option<TypedReference>);
        impl<'de> Deserialize<'de> for OptionalReference {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                TypedReference::deserialize(d).map(|r| OptionalReference(Some(r)))
            }
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default, deserialize_with = "lenient_reference")]
            data_source: Option<TypedReference>,
            #[serde(default, deserialize_with = "lenient_reference")]
            data_source_ref: Option<TypedReference>,
            #[serde(default, deserialize_with = "lenient_string")]
            volume_mode: Option<String>,
            #[serde(default, deserialize_with = "lenient_string")]
            storage_class_name: Option<String>,
            #[serde(default, deserialize_with = "lenient_resources")]
            resources: Resources,
            #[serde(default, deserialize_with = "statefulset::lenient_templates")]
            volume_claim_templates: Vec<ClaimTemplate>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(ObjectSpec {
            claim: ClaimSpec {
                data_source: wire.data_source,
                data_source_ref: wire.data_source_ref,
                volume_mode: wire.volume_mode,
                storage_class_name: wire.storage_class_name,
                requested_storage: wire.resources.requests.storage,
            },
            templates: wire.volume_claim_templates,
        })
    }
}

mod statefulset;
use statefulset::ClaimTemplate;
pub use statefulset::TemplateRequest;
