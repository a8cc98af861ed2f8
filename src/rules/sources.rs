//! The rules of data sources that are neither a clone nor a restore, and of references to a
//! known kind in the wrong API group: what the provisioner refuses for good, or hands to a
//! populator that never comes.

use super::{GroupSnapshotFact, Input, PopulatorFact, SNAPSHOT_GROUP, Said, SourceKind};

/// How many member snapshots a `group-snapshot` message names before it counts the rest.
const MEMBERS_NAMED: usize = 5;

pub(super) fn source_api_group(input: &Input) -> Option<String> {
    let request = input.request;
    if !request.names_foreign_api_group() {
        return None;
    }
    let source = &request.source;
    let (field, name) = (source.field, &source.name);
    let with_group = match source.api_group.as_deref().filter(|g| !g.is_empty()) {
        Some(group) => format!("with apiGroup {group:?}"),
        None => "with no apiGroup".to_owned(),
    };
    Some(match source.kind {
        SourceKind::Snapshot => format!(
            "spec.{field} names kind VolumeSnapshot {with_group}, but VolumeSnapshots belong to {SNAPSHOT_GROUP}; \
             set apiGroup: {SNAPSHOT_GROUP} to restore VolumeSnapshot {name:?}"
        ),
        _ => format!(
            "spec.{field} names kind PersistentVolumeClaim {with_group}, but claims belong to the core API group; \
             remove apiGroup to clone claim {name:?}"
        ),
    })
}

pub(super) fn group_snapshot(input: &Input) -> Option<String> {
    let request = input.request;
    let (field, name) = (request.source.field, &request.source.name);
    let namespace = request.source_namespace(input.policy)?;
    let detail = match input.facts.map(|f| &f.group_snapshot) {
        Some(GroupSnapshotFact::Found { members }) if !members.is_empty() => {
            let named: Vec<String> = members
                .iter()
                .take(MEMBERS_NAMED)
                .map(|m| format!("{m:?}"))
                .collect();
            let more = match members.len().saturating_sub(MEMBERS_NAMED) {
                0 => String::new(),
                rest => format!(" (+{rest} more)"),
            };
            format!(": {}{more}", named.join(", "))
        }
        Some(GroupSnapshotFact::Missing) => {
            format!(" (VolumeGroupSnapshot {name:?} does not exist in namespace {namespace:?})")
        }
        _ => String::new(),
    };
    Some(format!(
        "spec.{field} names VolumeGroupSnapshot {name:?}, but a claim cannot be restored from a group snapshot; \
         restore each of its member VolumeSnapshots into a claim of its own{detail}"
    ))
}

pub(super) fn populator(input: &Input) -> Option<Said> {
    let request = input.request;
    let kind = request.source_kind();
    match &input.facts?.populator {
        PopulatorFact::NotChecked | PopulatorFact::Registered => None,
        PopulatorFact::NotRegistered => Some(Said::Violation(format!(
            "spec.{field} names kind {kind} of apiGroup {group:?}, but no VolumePopulator registers it, \
             so the claim would wait forever; install the populator of {kind}, or fix kind and apiGroup",
            field = request.source.field,
            group = request.source_group(),
        ))),
        PopulatorFact::NotServed => Some(Said::Notice(format!(
            "populator.storage.k8s.io is not served: no VolumePopulator for {} can be checked",
            request.source_group_kind(),
        ))),
        PopulatorFact::Unknown(cause) => Some(Said::Notice(format!(
            "VolumePopulators could not be read ({cause}); no populator of {} was checked",
            request.source_group_kind(),
        ))),
    }
}
