//! The requests and facts that the tests and benchmarks start from: a healthy clone and a
//! healthy restore, which each case then breaks in one place. One module for the unit
//! tests, the integration tests (`tests/common`) and the benchmarks, so the three cannot
//! drift apart.
//!
//! Public (but hidden from the docs) rather than behind a cargo feature: integration tests
//! and benchmarks link the library as a user would, and a feature would have to be turned on
//! for every test build (or the crate made a dev-dependency of itself) and would build the
//! library twice, once with it and once without. These are a few plain constructors; the
//! binary, which never calls them, does not keep them.

use std::collections::BTreeMap;

use super::{
    ClaimRef, ClaimSpec, ClassFact, ContentInfo, DataSourceRequest, Facts, FoundClass,
    GROUP_SNAPSHOT_GROUP, GroupSnapshotFact, PodsFact, PopulatorFact, SNAPSHOT_GROUP, SnapshotFact,
    SnapshotInfo, SourceClaim, SourceKind, SourceReference, SourceVolume, TypedReference,
};

/// The CSI driver of the source volume, the snapshot content and the StorageClass `gp3`.
pub const DRIVER: &str = "ebs.csi.aws.com";

/// The namespace of the claims under review and of their sources.
pub const NAMESPACE: &str = "dev";

/// A claim in [`NAMESPACE`] asking for 10Gi of class `gp3`, Filesystem (nil), cloned from
/// claim `data` (`spec.dataSource`).
pub fn clone_request() -> DataSourceRequest {
    DataSourceRequest {
        namespace: NAMESPACE.into(),
        source: SourceReference {
            kind: SourceKind::Claim,
            name: "data".into(),
            namespace: None,
            api_group: None,
            field: "dataSource",
        },
        spec: ClaimSpec {
            storage_class: Some("gp3".into()),
            requested_storage: Some("10Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            ..ClaimSpec::default()
        },
    }
}

/// [`clone_request`], restored from VolumeSnapshot `snap-1` instead.
pub fn restore_request() -> DataSourceRequest {
    clone_request_from(SourceKind::Snapshot, "snap-1", SNAPSHOT_GROUP)
}

/// [`clone_request`], from VolumeGroupSnapshot `group-1` (`spec.dataSource`) instead.
pub fn group_snapshot_request() -> DataSourceRequest {
    clone_request_from(SourceKind::GroupSnapshot, "group-1", GROUP_SNAPSHOT_GROUP)
}

/// [`clone_request`] with `spec.dataSource` naming `kind` `name` of `api_group` instead.
fn clone_request_from(kind: SourceKind, name: &str, api_group: &str) -> DataSourceRequest {
    let mut request = clone_request();
    request.source = SourceReference {
        kind,
        name: name.into(),
        namespace: None,
        api_group: Some(api_group.into()),
        field: "dataSource",
    };
    request
}

/// [`clone_request`], populated from `Hello` `src` of `hello.example.com`
/// (`spec.dataSourceRef`) instead.
pub fn populator_request() -> DataSourceRequest {
    let mut request = clone_request();
    request.spec.data_source_ref = Some(Box::new(TypedReference {
        api_group: Some("hello.example.com".into()),
        kind: Some("Hello".into()),
        name: Some("src".into()),
        namespace: None,
    }));
    request.source = SourceReference {
        kind: SourceKind::Populator,
        name: "src".into(),
        namespace: None,
        api_group: Some("hello.example.com".into()),
        field: "dataSourceRef",
    };
    request
}

/// The facts of [`group_snapshot_request`]: `group-1` exists with members `snap-a`, `snap-b`.
pub fn group_snapshot_facts() -> Facts {
    Facts {
        class: class("gp3", DRIVER),
        group_snapshot: GroupSnapshotFact::Found {
            members: vec!["snap-a".into(), "snap-b".into()],
        },
        ..Facts::default()
    }
}

/// The facts of [`populator_request`]: a VolumePopulator registers `Hello.hello.example.com`.
pub fn populator_facts() -> Facts {
    Facts {
        class: class("gp3", DRIVER),
        populator: PopulatorFact::Registered,
        ..Facts::default()
    }
}

/// StorageClass `name` of `provisioner`: not the default, no topology, no parameters.
pub fn class(name: &str, provisioner: &str) -> ClassFact {
    ClassFact::Found(FoundClass {
        name: name.into(),
        provisioner: provisioner.into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    })
}

/// The facts of a healthy source for [`clone_request`]: claim `data` in [`NAMESPACE`], Bound
/// to PV `pv-1` of [`DRIVER`], 10Gi, Filesystem, class `gp3`; no pod mounts it.
pub fn good_facts() -> Facts {
    good_facts_in(NAMESPACE, "pv-1")
}

/// [`good_facts`] for a source claim `data` in `namespace`, bound to PV `volume`.
pub fn good_facts_in(namespace: &str, volume: &str) -> Facts {
    Facts {
        source: Some(SourceClaim {
            uid: Some("uid-1".into()),
            phase: Some("Bound".into()),
            deletion_timestamp: None,
            volume_name: Some(volume.into()),
            volume_mode: Some("Filesystem".into()),
            requested_storage: Some("10Gi".into()),
            capacity: Some("10Gi".into()),
            storage_class: Some("gp3".into()),
            access_modes: Some("ReadWriteOnce".into()),
        }),
        volume: Some(SourceVolume {
            name: volume.into(),
            phase: Some("Bound".into()),
            claim_ref: Some(ClaimRef {
                namespace: Some(namespace.into()),
                name: Some("data".into()),
                uid: Some("uid-1".into()),
            }),
            csi_driver: Some(DRIVER.into()),
            plugin: "csi".into(),
            volume_mode: Some("Filesystem".into()),
            storage_class: Some("gp3".into()),
            node_affinity: Vec::new().into(),
        }),
        class: class("gp3", DRIVER),
        pods: PodsFact::default(),
        classes_for_source_driver: vec!["gp3".into()],
        ..Facts::default()
    }
}

/// The facts of a healthy restore for [`restore_request`]: VolumeSnapshot `snap-1` in
/// [`NAMESPACE`] of 10Gi, ready, bound to content `snapcontent-1` of [`DRIVER`].
pub fn good_restore_facts() -> Facts {
    Facts {
        class: class("gp3", DRIVER),
        classes_for_source_driver: vec!["gp3".into()],
        snapshot: SnapshotFact::Found {
            snapshot: SnapshotInfo {
                uid: Some("snap-uid".into()),
                deletion_timestamp: None,
                bound_content_name: Some("snapcontent-1".into()),
                ready_to_use: Some(true),
                restore_size: Some("10Gi".into()),
                protected: false,
            },
            content: Some(ContentInfo {
                name: "snapcontent-1".into(),
                driver: DRIVER.into(),
                snapshot_handle: Some("snap-0abc".into()),
                source_volume_mode: Some("Filesystem".into()),
                allow_volume_mode_change: false,
                snapshot_ref: ClaimRef {
                    namespace: Some(NAMESPACE.into()),
                    name: Some("snap-1".into()),
                    uid: Some("snap-uid".into()),
                },
            }),
        },
        ..Facts::default()
    }
}
