//! Triage: what a parsed review is before any rule runs (skipped, a claim to judge, or a
//! StatefulSet's claim templates), and the request the rules judge for each claim.

use kube::core::admission::Operation;

use super::envelope::{PVC_KIND, ReviewRequest, ReviewedClaim};
use super::statefulset::{self, TemplateRequest};
use crate::rules::{
    ClaimSpec, DataSourceRequest, GROUP_SNAPSHOT_GROUP, SourceKind, SourceReference, TypedReference,
};

/// What a review is, before any rule runs.
#[derive(Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per review, matched at once: boxing the request would add an allocation to every judged review"
)]
pub enum Triage {
    /// Allowed at once; the reason is logged and counted.
    Skip(SkipReason),
    /// A claim with a data source: the rules apply.
    Judge(DataSourceRequest),
    /// A StatefulSet: the claims of its templates that have a data source, in order.
    JudgeTemplates(Vec<TemplateRequest>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotCreate,
    NotAClaim,
    NoObject,
    /// No data source (for a StatefulSet: no template has one).
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

/// The kind of source a data source reference names: a claim or a VolumeSnapshot (in any
/// API group: `source-api-group` refuses the wrong one), a VolumeGroupSnapshot, or any other
/// kind, which a populator must handle. `None` without a kind.
fn source_kind(reference: &TypedReference) -> Option<SourceKind> {
    match (reference.kind.as_deref(), reference.api_group.as_deref()) {
        (None | Some(""), _) => None,
        (Some(PVC_KIND), _) => Some(SourceKind::Claim),
        (Some("VolumeSnapshot"), _) => Some(SourceKind::Snapshot),
        (Some("VolumeGroupSnapshot"), Some(GROUP_SNAPSHOT_GROUP)) => {
            Some(SourceKind::GroupSnapshot)
        }
        (Some(_), _) => Some(SourceKind::Populator),
    }
}

/// Decides whether the rules apply (SPEC §2): only CREATE of a core/v1 claim whose
/// `dataSource` (read first) or `dataSourceRef` names a source.
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
pub(super) fn review_namespace(request: &ReviewRequest, object: &ReviewedClaim) -> String {
    request
        .namespace
        .clone()
        .or_else(|| object.metadata.namespace.clone())
        .unwrap_or_default()
}

/// What the rules judge about a claim with this spec in `namespace`, if it has a data
/// source.
pub(super) fn claim_request(
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
        spec: spec.clone(),
    })
}
