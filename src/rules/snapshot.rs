//! The rules of a restore from a VolumeSnapshot, in the order the external-provisioner
//! checks a snapshot source (`getSnapshotSource`).

use super::{FoundClass, Input, NO_PROVISIONER, Said, SnapshotFact};
use crate::quantity;

pub(super) fn snapshot_exists(input: &Input) -> Option<String> {
    let namespace = input.request.source_namespace(input.policy)?;
    let field = input.request.source.field;
    match &input.facts?.snapshot {
        SnapshotFact::Found { .. } => None,
        SnapshotFact::NotServed => Some(format!(
            "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served by this cluster; \
             install the external-snapshotter CRDs and controller, or remove spec.{field}"
        )),
        SnapshotFact::Missing => Some(format!(
            "VolumeSnapshot {name:?} does not exist in namespace {namespace:?}; \
             create it first, or fix spec.{field}.name",
            name = input.source_name(),
        )),
    }
}

/// A snapshot being deleted is refused, unless it carries the source-protection finalizer:
/// a restore from it is then under way, and the provisioner (v6.1.2, v6.2+) lets this one
/// proceed too.
pub(super) fn snapshot_deleting(input: &Input) -> Option<Said> {
    let snapshot = input.snapshot()?.0;
    let since = snapshot.deletion_timestamp.as_deref()?;
    let name = input.source_name();
    Some(if snapshot.protected {
        Said::Notice(format!(
            "VolumeSnapshot {name:?} is being deleted but a restore holds it: this one proceeds while it lasts"
        ))
    } else {
        Said::Violation(format!(
            "VolumeSnapshot {name:?} is being deleted (since {since}); restore from a snapshot that is not being deleted"
        ))
    })
}

pub(super) fn snapshot_bound(input: &Input) -> Option<String> {
    let (snapshot, content) = input.snapshot()?;
    let name = input.source_name();
    let Some(content_name) = snapshot
        .bound_content_name
        .as_deref()
        .filter(|c| !c.is_empty())
    else {
        return Some(format!(
            "VolumeSnapshot {name:?} is not bound to a VolumeSnapshotContent \
             (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim"
        ));
    };
    let Some(content) = content else {
        return Some(format!(
            "VolumeSnapshotContent {content_name:?} of VolumeSnapshot {name:?} does not exist; \
             restore from another snapshot"
        ));
    };
    let namespace = input.request.source_namespace(input.policy)?;
    let reference = &content.snapshot_ref;
    let points_back = reference.namespace.as_deref() == Some(namespace)
        && reference.name.as_deref() == Some(name)
        && reference.uid.is_some()
        && reference.uid.as_deref() == snapshot.uid.as_deref();
    (!points_back).then(|| {
        format!(
            "VolumeSnapshotContent {content_name:?} points at VolumeSnapshot \"{}/{}\" (uid {}), \
             not at {:?} (uid {}); repair the binding or restore from another snapshot",
            reference.namespace.as_deref().unwrap_or(""),
            reference.name.as_deref().unwrap_or(""),
            reference.uid.as_deref().unwrap_or("none"),
            format!("{namespace}/{name}"),
            snapshot.uid.as_deref().unwrap_or("none"),
        )
    })
}

pub(super) fn snapshot_driver(input: &Input) -> Option<String> {
    let driver = input.snapshot()?.1?.driver.as_str();
    let FoundClass {
        name, provisioner, ..
    } = input.class()?;
    // A no-provisioner class is `dynamic-provisioning`'s to report.
    if provisioner == driver || provisioner == NO_PROVISIONER {
        return None;
    }
    Some(format!(
        "VolumeSnapshot {snapshot:?} was taken by CSI driver {driver} but StorageClass {name:?} is provisioned by \
         {provisioner}; {hint}",
        snapshot = input.source_name(),
        hint = input.class_hint(),
    ))
}

pub(super) fn snapshot_ready(input: &Input) -> Option<String> {
    let (snapshot, content) = input.snapshot()?;
    let name = input.source_name();
    if snapshot.ready_to_use != Some(true) {
        let state = match snapshot.ready_to_use {
            Some(_) => "false",
            None => "not set",
        };
        return Some(format!(
            "VolumeSnapshot {name:?} is not ready to use (status.readyToUse is {state}); \
             wait until it is, then create the claim"
        ));
    }
    let content = content?;
    content
        .snapshot_handle
        .as_deref()
        .is_none_or(str::is_empty)
        .then(|| {
            format!(
                "VolumeSnapshotContent {content:?} of VolumeSnapshot {name:?} has no status.snapshotHandle; \
                 wait until the snapshot is cut, then create the claim",
                content = content.name,
            )
        })
}

pub(super) fn restore_size(input: &Input) -> Option<String> {
    let needed_text = input.snapshot()?.0.restore_size.as_deref()?;
    // The API server only stores valid quantities: one that does not parse is not checked.
    let needed = quantity::parse(needed_text).ok()?.whole_units();
    let name = input.source_name();
    let needs = format!(
        "snapshot {name:?} needs at least {needed_text} (its restoreSize); request at least {needed_text}"
    );
    let Some(text) = input.request.spec.requested_storage.as_deref() else {
        return Some(format!(
            "this claim requests no storage (spec.resources.requests.storage) but {needs}"
        ));
    };
    // An invalid request is refused by the API server before any webhook sees it.
    let requested = quantity::parse(text).ok()?.whole_units();
    (requested < needed).then(|| format!("this claim requests {text} but {needs}"))
}

pub(super) fn snapshot_volume_mode(input: &Input) -> Option<String> {
    let content = input.snapshot()?.1?;
    let source_mode = content.source_volume_mode.as_deref()?;
    let claim_mode = input
        .request
        .spec
        .volume_mode
        .as_deref()
        .unwrap_or("Filesystem");
    (source_mode != claim_mode && !content.allow_volume_mode_change).then(|| {
        format!(
            "VolumeSnapshot {name:?} was taken of a {source_mode} volume but this claim asks for {claim_mode}; \
             set spec.volumeMode: {source_mode}, or annotate VolumeSnapshotContent {content:?} with \
             snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\"",
            name = input.source_name(),
            content = content.name,
        )
    })
}
