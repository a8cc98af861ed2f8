//! Restores from a VolumeSnapshot: every branch, with the exact text.

use super::*;

pub(super) fn restore_request() -> DataSourceRequest {
    DataSourceRequest {
        namespace: "dev".into(),
        source: SourceReference {
            kind: SourceKind::Snapshot,
            name: "snap-1".into(),
            namespace: None,
            api_group: Some(SNAPSHOT_GROUP.into()),
            field: "dataSource",
        },
        volume_mode: None,
        storage_class: Some("gp3".into()),
        requested_storage: Some("10Gi".into()),
    }
}

pub(super) fn restore_facts() -> Facts {
    Facts {
        class: ClassFact::Found {
            name: "gp3".into(),
            provisioner: DRIVER.into(),
            is_default: false,
            allowed_topologies: vec![],
            parameters: BTreeMap::new(),
        },
        classes_for_source_driver: vec!["gp3".into()],
        snapshot: SnapshotFact::Found {
            snapshot: SnapshotInfo {
                uid: Some("snap-uid".into()),
                deletion_timestamp: None,
                bound_content_name: Some("snapcontent-1".into()),
                ready_to_use: Some(true),
                restore_size: Some("10Gi".into()),
            },
            content: Some(ContentInfo {
                name: "snapcontent-1".into(),
                driver: DRIVER.into(),
                snapshot_handle: Some("snap-0abc".into()),
                source_volume_mode: Some("Filesystem".into()),
                allow_volume_mode_change: false,
                snapshot_ref: ClaimRef {
                    namespace: Some("dev".into()),
                    name: Some("snap-1".into()),
                    uid: Some("snap-uid".into()),
                },
            }),
        },
        ..Facts::default()
    }
}

pub(super) fn snapshot(f: &mut Facts) -> &mut SnapshotInfo {
    match &mut f.snapshot {
        SnapshotFact::Found { snapshot, .. } => snapshot,
        _ => panic!("fixture has a snapshot"),
    }
}

pub(super) fn content(f: &mut Facts) -> &mut Option<ContentInfo> {
    match &mut f.snapshot {
        SnapshotFact::Found { content, .. } => content,
        _ => panic!("fixture has a snapshot"),
    }
}

fn content_info(f: &mut Facts) -> &mut ContentInfo {
    content(f).as_mut().expect("fixture has a content")
}

fn restore_denied(f: &Facts) -> Vec<String> {
    denied(&restore_request(), f)
}

#[test]
fn a_valid_restore_is_allowed_and_judged_by_no_clone_rule() {
    assert_eq!(
        judge(&restore_request(), &restore_facts()),
        (vec![], vec![])
    );
    // No source claim, volume or pods: the clone rules do not apply to a restore.
    let mut f = restore_facts();
    f.pods = PodsFact::Unknown("forbidden".into());
    assert_eq!(judge(&restore_request(), &f), (vec![], vec![]));
}

#[test]
fn snapshot_exists_a_missing_snapshot_stops_the_snapshot_rules() {
    let mut f = restore_facts();
    f.snapshot = SnapshotFact::Missing;
    assert_eq!(
        restore_denied(&f),
        [
            "[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"
        ]
    );
}

#[test]
fn snapshot_exists_says_when_the_snapshot_api_is_not_served() {
    let mut f = restore_facts();
    f.snapshot = SnapshotFact::NotServed;
    let mut r = restore_request();
    r.source.field = "dataSourceRef";
    assert_eq!(
        denied(&r, &f),
        [
            "[snapshot-exists] the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served by this cluster; install the external-snapshotter CRDs and controller, or remove spec.dataSourceRef"
        ]
    );
}

#[test]
fn snapshot_deleting_reports_since_when() {
    let mut f = restore_facts();
    snapshot(&mut f).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
    assert_eq!(
        restore_denied(&f),
        [
            "[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted (since 2026-11-21T10:00:00Z); restore from a snapshot that is not being deleted"
        ]
    );
}

#[test]
fn snapshot_bound_an_unbound_snapshot() {
    for name in [None, Some(String::new())] {
        let mut f = restore_facts();
        snapshot(&mut f).bound_content_name = name;
        *content(&mut f) = None;
        assert_eq!(
            restore_denied(&f),
            [
                "[snapshot-bound] VolumeSnapshot \"snap-1\" is not bound to a VolumeSnapshotContent (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim"
            ]
        );
    }
}

#[test]
fn snapshot_bound_a_missing_content() {
    let mut f = restore_facts();
    *content(&mut f) = None;
    assert_eq!(
        restore_denied(&f),
        [
            "[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" of VolumeSnapshot \"snap-1\" does not exist; restore from another snapshot"
        ]
    );
}

#[test]
fn snapshot_bound_a_content_that_points_elsewhere() {
    type Change = fn(&mut ClaimRef);
    let cases: [(Change, &str); 4] = [
        (
            |r| r.namespace = Some("prod".into()),
            "prod/snap-1\" (uid snap-uid)",
        ),
        (
            |r| r.name = Some("snap-2".into()),
            "dev/snap-2\" (uid snap-uid)",
        ),
        (|r| r.uid = Some("old".into()), "dev/snap-1\" (uid old)"),
        (|r| r.uid = None, "dev/snap-1\" (uid none)"),
    ];
    for (change, shown) in cases {
        let mut f = restore_facts();
        change(&mut content_info(&mut f).snapshot_ref);
        assert_eq!(
            restore_denied(&f),
            [format!(
                "[snapshot-bound] VolumeSnapshotContent \"snapcontent-1\" points at VolumeSnapshot \"{shown}, not at \"dev/snap-1\" (uid snap-uid); repair the binding or restore from another snapshot"
            )]
        );
    }
}

#[test]
fn snapshot_driver_refuses_a_class_of_another_driver() {
    let mut f = restore_facts();
    f.class = ClassFact::Found {
        name: "standard-rwo".into(),
        provisioner: "pd.csi.storage.gke.io".into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    assert_eq!(
        restore_denied(&f),
        [
            "[snapshot-driver] VolumeSnapshot \"snap-1\" was taken by CSI driver ebs.csi.aws.com but StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""
        ]
    );
}

#[test]
fn dynamic_provisioning_applies_to_restores() {
    let mut f = restore_facts();
    f.class = ClassFact::Found {
        name: "local".into(),
        provisioner: NO_PROVISIONER.into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    assert_eq!(
        restore_denied(&f),
        [
            "[dynamic-provisioning] StorageClass \"local\" has provisioner kubernetes.io/no-provisioner, which cannot provision a restore; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""
        ],
        "snapshot-driver leaves a no-provisioner class to dynamic-provisioning"
    );
    f.class = ClassFact::Disabled;
    assert_eq!(
        restore_denied(&f),
        [
            "[dynamic-provisioning] storageClassName is \"\", which turns off dynamic provisioning, and a restore must be provisioned; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""
        ]
    );
    f.snapshot = SnapshotFact::Missing;
    assert_eq!(
        restore_denied(&f),
        [
            "[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"
        ],
        "only when the snapshot exists"
    );
}

#[test]
fn snapshot_ready_a_snapshot_not_ready_to_use() {
    for (ready, shown) in [(Some(false), "false"), (None, "not set")] {
        let mut f = restore_facts();
        snapshot(&mut f).ready_to_use = ready;
        assert_eq!(
            restore_denied(&f),
            [format!(
                "[snapshot-ready] VolumeSnapshot \"snap-1\" is not ready to use (status.readyToUse is {shown}); wait until it is, then create the claim"
            )]
        );
    }
}

#[test]
fn snapshot_ready_a_content_without_snapshot_handle() {
    for handle in [None, Some(String::new())] {
        let mut f = restore_facts();
        content_info(&mut f).snapshot_handle = handle;
        assert_eq!(
            restore_denied(&f),
            [
                "[snapshot-ready] VolumeSnapshotContent \"snapcontent-1\" of VolumeSnapshot \"snap-1\" has no status.snapshotHandle; wait until the snapshot is cut, then create the claim"
            ]
        );
    }
}

#[test]
fn restore_size_compares_whole_bytes_with_the_restore_size() {
    let mut f = restore_facts();
    snapshot(&mut f).restore_size = Some("1Gi".into());
    let mut r = restore_request();
    for asked in ["100Mi", "1000Mi", "1G"] {
        r.requested_storage = Some(asked.into());
        assert_eq!(
            denied(&r, &f),
            [format!(
                "[restore-size] this claim requests {asked} but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"
            )]
        );
    }
    for asked in ["1Gi", "1024Mi", "2Gi"] {
        r.requested_storage = Some(asked.into());
        assert_eq!(denied(&r, &f), Vec::<String>::new(), "{asked}");
    }
    r.requested_storage = None;
    assert_eq!(
        denied(&r, &f),
        [
            "[restore-size] this claim requests no storage (spec.resources.requests.storage) but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi"
        ]
    );
}

#[test]
fn restore_size_is_not_checked_when_unset_or_unparseable() {
    let mut r = restore_request();
    r.requested_storage = Some("1Mi".into());
    for size in [None, Some("lots".to_owned())] {
        let mut f = restore_facts();
        snapshot(&mut f).restore_size = size;
        assert_eq!(denied(&r, &f), Vec::<String>::new());
    }
    let mut f = restore_facts();
    r.requested_storage = Some("lots".into());
    snapshot(&mut f).restore_size = Some("1Gi".into());
    assert_eq!(denied(&r, &f), Vec::<String>::new());
}

#[test]
fn snapshot_volume_mode_refuses_a_change_the_content_does_not_allow() {
    let mut f = restore_facts();
    content_info(&mut f).source_volume_mode = Some("Block".into());
    let expected = "[snapshot-volume-mode] VolumeSnapshot \"snap-1\" was taken of a Block volume but this claim asks for Filesystem; set spec.volumeMode: Block, or annotate VolumeSnapshotContent \"snapcontent-1\" with snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\"";
    assert_eq!(restore_denied(&f), [expected]);
    let mut r = restore_request();
    r.volume_mode = Some("Block".into());
    assert_eq!(denied(&r, &f), Vec::<String>::new(), "same mode");
    content_info(&mut f).allow_volume_mode_change = true;
    assert_eq!(
        restore_denied(&f),
        Vec::<String>::new(),
        "allowed by the content"
    );
    content_info(&mut f).source_volume_mode = None;
    content_info(&mut f).allow_volume_mode_change = false;
    assert_eq!(denied(&r, &f), Vec::<String>::new(), "unset: no check");
}

#[test]
fn every_violated_restore_rule_is_reported_in_provisioner_order() {
    let mut f = restore_facts();
    snapshot(&mut f).deletion_timestamp = Some("t".into());
    snapshot(&mut f).ready_to_use = Some(false);
    snapshot(&mut f).restore_size = Some("20Gi".into());
    content_info(&mut f).driver = "other.csi".into();
    content_info(&mut f).source_volume_mode = Some("Block".into());
    let rules: Vec<RuleId> = decide(&restore_request(), Some(&f), &Policy::default())
        .denials
        .iter()
        .map(|d| d.rule)
        .collect();
    assert_eq!(
        rules,
        [
            RuleId::SnapshotDeleting,
            RuleId::SnapshotDriver,
            RuleId::SnapshotReady,
            RuleId::RestoreSize,
            RuleId::SnapshotVolumeMode
        ]
    );
}
