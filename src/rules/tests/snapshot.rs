//! Restores from a VolumeSnapshot: every branch, with the exact text.

use super::*;

pub(super) fn snapshot(s: &mut Setup) -> &mut SnapshotInfo {
    match &mut s.facts().snapshot {
        SnapshotFact::Found { snapshot, .. } => snapshot,
        _ => panic!("the case has a snapshot"),
    }
}

pub(super) fn content(s: &mut Setup) -> &mut Option<ContentInfo> {
    match &mut s.facts().snapshot {
        SnapshotFact::Found { content, .. } => content,
        _ => panic!("the case has a snapshot"),
    }
}

pub(super) fn content_info(s: &mut Setup) -> &mut ContentInfo {
    content(s).as_mut().expect("the case has a content")
}

/// A snapshot of 1Gi restored into a claim asking for `asked`.
fn restore_size(s: &mut Setup, asked: Option<&str>) {
    snapshot(s).restore_size = Some("1Gi".into());
    s.request.spec.requested_storage = asked.map(Into::into);
}

#[test]
fn restore_cases() {
    run(Setup::a_restore, &[
        case("a valid restore", |_| {}),
        case("a restore is judged by no clone rule: no source claim, volume or pods", |s| {
            s.facts().pods = PodsFact::Unknown("forbidden".into());
        }),
        case("snapshot-exists: a missing snapshot stops the snapshot rules", |s| s.facts().snapshot = SnapshotFact::Missing)
            .denies(&["[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"]),
        case("snapshot-exists says when the snapshot API is not served", |s| {
            s.facts().snapshot = SnapshotFact::NotServed;
            s.request.source.field = "dataSourceRef";
        }).denies(&["[snapshot-exists] the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served by this cluster; install the external-snapshotter CRDs and controller, or remove spec.dataSourceRef"]),
        case("snapshot-deleting says since when", |s| {
            snapshot(s).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
        }).denies(&["[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted (since 2026-11-21T10:00:00Z); restore from a snapshot that is not being deleted"]),
        case("snapshot-deleting admits, with a warning, a snapshot a restore holds (the source-protection finalizer)", |s| {
            snapshot(s).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
            snapshot(s).protected = true;
        }).warns(&["[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted but a restore holds it: this one proceeds while it lasts"]),
        case("snapshot-deleting set to warn warns either way", |s| {
            snapshot(s).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
            s.policy.set_action(RuleId::SnapshotDeleting, Action::Warn);
        }).warns(&["[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted (since 2026-11-21T10:00:00Z); restore from a snapshot that is not being deleted"]),
        case("snapshot-deleting off says nothing of a protected snapshot", |s| {
            snapshot(s).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
            snapshot(s).protected = true;
            s.policy.set_action(RuleId::SnapshotDeleting, Action::Off);
        }),
        case("snapshot-bound: no content name", |s| {
            snapshot(s).bound_content_name = None;
            *content(s) = None;
        }).denies(&["[snapshot-bound] VolumeSnapshot \"snap-1\" is not bound to a VolumeSnapshotContent (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim"]),
        case("snapshot-bound: an empty content name", |s| {
            snapshot(s).bound_content_name = Some(String::new());
            *content(s) = None;
        }).denies(&["[snapshot-bound] VolumeSnapshot \"snap-1\" is not bound to a VolumeSnapshotContent (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim"]),
        case("snapshot-bound: a missing content", |s| *content(s) = None)
            .denies(&["[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" of VolumeSnapshot \"snap-1\" does not exist; restore from another snapshot"]),
        case("snapshot-bound: a content that points at another namespace", |s| {
            content_info(s).snapshot_ref.namespace = Some("prod".into());
        }).denies(&["[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" points at VolumeSnapshot \"prod/snap-1\" (uid snap-uid), not at \"dev/snap-1\" (uid snap-uid); repair the binding or restore from another snapshot"]),
        case("snapshot-bound: a content that points at another snapshot", |s| {
            content_info(s).snapshot_ref.name = Some("snap-2".into());
        }).denies(&["[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" points at VolumeSnapshot \"dev/snap-2\" (uid snap-uid), not at \"dev/snap-1\" (uid snap-uid); repair the binding or restore from another snapshot"]),
        case("snapshot-bound: a content that points at an earlier snapshot", |s| {
            content_info(s).snapshot_ref.uid = Some("old".into());
        }).denies(&["[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" points at VolumeSnapshot \"dev/snap-1\" (uid old), not at \"dev/snap-1\" (uid snap-uid); repair the binding or restore from another snapshot"]),
        case("snapshot-bound: a content that points at no uid", |s| content_info(s).snapshot_ref.uid = None)
            .denies(&["[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" points at VolumeSnapshot \"dev/snap-1\" (uid none), not at \"dev/snap-1\" (uid snap-uid); repair the binding or restore from another snapshot"]),
        case("snapshot-driver refuses a class of another driver", |s| s.facts().class = class("standard-rwo", "pd.csi.storage.gke.io"))
            .denies(&["[snapshot-driver] VolumeSnapshot \"snap-1\" was taken by CSI driver ebs.csi.aws.com but StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("snapshot-driver leaves a no-provisioner class to dynamic-provisioning", |s| s.facts().class = class("local", NO_PROVISIONER))
            .denies(&["[dynamic-provisioning] StorageClass \"local\" has provisioner kubernetes.io/no-provisioner, which cannot provision a restore; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("dynamic-provisioning applies to restores", |s| s.facts().class = ClassFact::Disabled)
            .denies(&["[dynamic-provisioning] storageClassName is \"\", which turns off dynamic provisioning, and a restore must be provisioned; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("dynamic-provisioning: only when the snapshot exists", |s| {
            s.facts().class = ClassFact::Disabled;
            s.facts().snapshot = SnapshotFact::Missing;
        }).denies(&["[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"]),
        case("snapshot-ready: readyToUse false", |s| snapshot(s).ready_to_use = Some(false))
            .denies(&["[snapshot-ready] VolumeSnapshot \"snap-1\" is not ready to use (status.readyToUse is false); wait until it is, then create the claim"]),
        case("snapshot-ready: readyToUse not set", |s| snapshot(s).ready_to_use = None)
            .denies(&["[snapshot-ready] VolumeSnapshot \"snap-1\" is not ready to use (status.readyToUse is not set); wait until it is, then create the claim"]),
        case("snapshot-ready: a content without snapshotHandle", |s| content_info(s).snapshot_handle = None)
            .denies(&["[snapshot-ready] VolumeSnapshotContent \"snapcontent-1\" of VolumeSnapshot \"snap-1\" has no status.snapshotHandle; wait until the snapshot is cut, then create the claim"]),
        case("snapshot-ready: a content with an empty snapshotHandle", |s| content_info(s).snapshot_handle = Some(String::new()))
            .denies(&["[snapshot-ready] VolumeSnapshotContent \"snapcontent-1\" of VolumeSnapshot \"snap-1\" has no status.snapshotHandle; wait until the snapshot is cut, then create the claim"]),
        case("restore-size: 100Mi < 1Gi", |s| restore_size(s, Some("100Mi")))
            .denies(&["[restore-size] this claim requests 100Mi but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"]),
        case("restore-size: 1000Mi < 1Gi", |s| restore_size(s, Some("1000Mi")))
            .denies(&["[restore-size] this claim requests 1000Mi but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"]),
        case("restore-size: 1G < 1Gi", |s| restore_size(s, Some("1G")))
            .denies(&["[restore-size] this claim requests 1G but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"]),
        case("restore-size: 1Gi", |s| restore_size(s, Some("1Gi"))),
        case("restore-size: 1024Mi", |s| restore_size(s, Some("1024Mi"))),
        case("restore-size: 2Gi", |s| restore_size(s, Some("2Gi"))),
        case("restore-size: no request", |s| restore_size(s, None))
            .denies(&["[restore-size] this claim requests no storage (spec.resources.requests.storage) but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"]),
        case("restore-size is not checked when unset", |s| {
            s.request.spec.requested_storage = Some("1Mi".into());
            snapshot(s).restore_size = None;
        }),
        case("restore-size is not checked when unparseable", |s| {
            s.request.spec.requested_storage = Some("1Mi".into());
            snapshot(s).restore_size = Some("lots".into());
        }),
        case("restore-size is not checked against an unparseable request", |s| restore_size(s, Some("lots"))),
        case("snapshot-volume-mode refuses a change the content does not allow", |s| {
            content_info(s).source_volume_mode = Some("Block".into());
        }).denies(&["[snapshot-volume-mode] VolumeSnapshot \"snap-1\" was taken of a Block volume but this claim asks for Filesystem; set spec.volumeMode: Block, or annotate VolumeSnapshotContent \"snapcontent-1\" with snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\""]),
        case("snapshot-volume-mode: the same mode", |s| {
            content_info(s).source_volume_mode = Some("Block".into());
            s.request.spec.volume_mode = Some("Block".into());
        }),
        case("snapshot-volume-mode: allowed by the content", |s| {
            content_info(s).source_volume_mode = Some("Block".into());
            content_info(s).allow_volume_mode_change = true;
        }),
        case("snapshot-volume-mode: unset, no check", |s| {
            content_info(s).source_volume_mode = None;
            s.request.spec.volume_mode = Some("Block".into());
        }),
        case("every violated restore rule is reported, in the provisioner's order", |s| {
            snapshot(s).deletion_timestamp = Some("t".into());
            snapshot(s).ready_to_use = Some(false);
            snapshot(s).restore_size = Some("20Gi".into());
            content_info(s).driver = "other.csi".into();
            content_info(s).source_volume_mode = Some("Block".into());
        }).denies(&[
            "[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted (since t); restore from a snapshot that is not being deleted",
            "[snapshot-driver] VolumeSnapshot \"snap-1\" was taken by CSI driver other.csi but StorageClass \"gp3\" is provisioned by ebs.csi.aws.com; set spec.storageClassName to a class provisioned by other.csi, e.g. \"gp3\"",
            "[snapshot-ready] VolumeSnapshot \"snap-1\" is not ready to use (status.readyToUse is false); wait until it is, then create the claim",
            "[restore-size] this claim requests 10Gi but snapshot \"snap-1\" needs at least 20Gi (its restoreSize); request at least 20Gi",
            "[snapshot-volume-mode] VolumeSnapshot \"snap-1\" was taken of a Block volume but this claim asks for Filesystem; set spec.volumeMode: Block, or annotate VolumeSnapshotContent \"snapcontent-1\" with snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\"",
        ]),
    ]);
}
