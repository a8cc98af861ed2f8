//! Other data sources (group snapshots, populators, a known kind in the wrong group) and the
//! claim fields the provisioner refuses with a data source: every branch, with the exact text.

use super::*;
use crate::rules::CrossNamespace;

impl Setup {
    pub(super) fn a_group_snapshot() -> Setup {
        Setup {
            request: fixtures::group_snapshot_request(),
            facts: Some(fixtures::group_snapshot_facts()),
            policy: Policy::default(),
        }
    }

    pub(super) fn a_populator() -> Setup {
        Setup {
            request: fixtures::populator_request(),
            facts: Some(fixtures::populator_facts()),
            policy: Policy::default(),
        }
    }
}

/// The source is in `prod`, under `mode`; `reference-grant` finds no grant.
fn elsewhere(s: &mut Setup, mode: CrossNamespace) {
    s.cross();
    if let Some(reference) = s.request.spec.data_source_ref.as_mut() {
        reference.namespace = Some("prod".into());
    }
    s.policy.cross_namespace = mode;
    s.facts = match mode {
        CrossNamespace::Deny => None,
        _ => Some(Facts {
            grant: GrantFact::NotFound,
            ..Facts::default()
        }),
    };
}

/// A VolumeSnapshot of `group` (`None`: no apiGroup); nothing is read for it.
fn snapshot_of(s: &mut Setup, group: Option<&str>) {
    s.request.source.api_group = group.map(Into::into);
    s.facts = None;
}

#[test]
fn wrong_api_group_cases() {
    run(Setup::a_restore, &[
        case("source-api-group: a VolumeSnapshot of another group is refused, as the provisioner does", |s| {
            snapshot_of(s, Some("unsupported.group.io"));
        }).denies(&["[source-api-group] spec.dataSource names kind VolumeSnapshot with apiGroup \"unsupported.group.io\", but VolumeSnapshots belong to snapshot.storage.k8s.io; set apiGroup: snapshot.storage.k8s.io to restore VolumeSnapshot \"snap-1\""]),
        case("source-api-group: a VolumeSnapshot without a group", |s| snapshot_of(s, None))
            .denies(&["[source-api-group] spec.dataSource names kind VolumeSnapshot with no apiGroup, but VolumeSnapshots belong to snapshot.storage.k8s.io; set apiGroup: snapshot.storage.k8s.io to restore VolumeSnapshot \"snap-1\""]),
        case("source-api-group: an empty group is no group", |s| snapshot_of(s, Some("")))
            .denies(&["[source-api-group] spec.dataSource names kind VolumeSnapshot with no apiGroup, but VolumeSnapshots belong to snapshot.storage.k8s.io; set apiGroup: snapshot.storage.k8s.io to restore VolumeSnapshot \"snap-1\""]),
        case("source-api-group off: a snapshot of another group is left to the provisioner", |s| {
            snapshot_of(s, Some("unsupported.group.io"));
            s.policy.set_action(RuleId::SourceApiGroup, Action::Off);
        }),
    ]);
}

#[test]
fn group_snapshot_cases() {
    run(Setup::a_group_snapshot, &[
        case("group-snapshot names the members to restore one by one", |_| {})
            .denies(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own: \"snap-a\", \"snap-b\""]),
        case("group-snapshot names five members and counts the rest", |s| {
            s.facts().group_snapshot = GroupSnapshotFact::Found {
                members: (1..=7).map(|i| format!("snap-{i}")).collect(),
            };
        }).denies(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own: \"snap-1\", \"snap-2\", \"snap-3\", \"snap-4\", \"snap-5\" (+2 more)"]),
        case("group-snapshot: a group snapshot without members found", |s| {
            s.facts().group_snapshot = GroupSnapshotFact::Found { members: vec![] };
        }).denies(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own"]),
        case("group-snapshot: a group snapshot that does not exist", |s| {
            s.facts().group_snapshot = GroupSnapshotFact::Missing;
        }).denies(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own (VolumeGroupSnapshot \"group-1\" does not exist in namespace \"dev\")"]),
        case("group-snapshot: the API is not served or could not be read: there is no group restore anyway", |s| {
            s.facts().group_snapshot = GroupSnapshotFact::Unknown;
        }).denies(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own"]),
        case("group-snapshot set to warn", |s| s.policy.set_action(RuleId::GroupSnapshot, Action::Warn))
            .warns(&["[group-snapshot] spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own: \"snap-a\", \"snap-b\""]),
        case("no clone, restore or populator rule judges a group snapshot", |s| {
            s.policy.set_action(RuleId::GroupSnapshot, Action::Off);
            s.facts().class = ClassFact::Disabled;
            s.facts().populator = PopulatorFact::NotRegistered;
        }),
        case("same-namespace refuses a group snapshot of another namespace", |s| elsewhere(s, CrossNamespace::Deny))
            .denies(&["[same-namespace] dataSourceRef names VolumeGroupSnapshot \"group-1\" in namespace \"prod\", but this claim is in namespace \"dev\"; a restore must be created in its source's namespace: create this claim in namespace \"prod\""]),
        case("same-namespace: a group snapshot without a ReferenceGrant", |s| elsewhere(s, CrossNamespace::ReferenceGrant))
            .denies(&["[same-namespace] dataSourceRef names VolumeGroupSnapshot \"group-1\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use VolumeGroupSnapshot \"group-1\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"groupsnapshot.storage.k8s.io\", kind: VolumeGroupSnapshot, name: group-1}"]),
    ]);
}

#[test]
fn populator_cases() {
    run(Setup::a_populator, &[
        case("a kind a VolumePopulator registers is left to its populator", |_| {}),
        case("populator refuses a kind no VolumePopulator registers", |s| {
            s.facts().populator = PopulatorFact::NotRegistered;
        }).denies(&["[populator] spec.dataSourceRef names kind Hello of apiGroup \"hello.example.com\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of Hello, or fix kind and apiGroup"]),
        case("populator: a kind of the core group", |s| {
            s.request.source.api_group = None;
            if let Some(reference) = s.request.spec.data_source_ref.as_mut() {
                reference.api_group = None;
                reference.kind = Some("ConfigMap".into());
            }
            s.facts().populator = PopulatorFact::NotRegistered;
        }).denies(&["[populator] spec.dataSourceRef names kind ConfigMap of apiGroup \"\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of ConfigMap, or fix kind and apiGroup"]),
        case("populator warns when the VolumePopulator API is not served", |s| {
            s.facts().populator = PopulatorFact::NotServed;
        }).warns(&["[populator] populator.storage.k8s.io is not served: no VolumePopulator for Hello.hello.example.com can be checked"]),
        case("populator warns when the VolumePopulators cannot be read", |s| {
            s.facts().populator = PopulatorFact::Unknown("forbidden".into());
        }).warns(&["[populator] VolumePopulators could not be read (forbidden); no populator of Hello.hello.example.com was checked"]),
        case("populator: the core group is named by the kind alone", |s| {
            s.request.source.api_group = Some(String::new());
            s.facts().populator = PopulatorFact::NotServed;
        }).warns(&["[populator] populator.storage.k8s.io is not served: no VolumePopulator for Hello can be checked"]),
        case("populator set to warn", |s| {
            s.facts().populator = PopulatorFact::NotRegistered;
            s.policy.set_action(RuleId::Populator, Action::Warn);
        }).warns(&["[populator] spec.dataSourceRef names kind Hello of apiGroup \"hello.example.com\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of Hello, or fix kind and apiGroup"]),
        case("populator off says nothing, not even that the API is not served", |s| {
            s.facts().populator = PopulatorFact::NotServed;
            s.policy.set_action(RuleId::Populator, Action::Off);
        }),
        case("no clone or restore rule judges a populator source", |s| {
            s.request.spec.selector = Some(Selector {});
            s.facts().class = ClassFact::Disabled;
        }),
        case("same-namespace refuses a populator source of another namespace", |s| elsewhere(s, CrossNamespace::Deny))
            .denies(&["[same-namespace] dataSourceRef names Hello \"src\" in namespace \"prod\", but this claim is in namespace \"dev\"; a populated claim must be created in its source's namespace: create this claim in namespace \"prod\""]),
        case("same-namespace: a populator source without a ReferenceGrant, as the provisioner refuses it", |s| {
            elsewhere(s, CrossNamespace::ReferenceGrant);
        }).denies(&["[same-namespace] dataSourceRef names Hello \"src\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use Hello \"src\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"hello.example.com\", kind: Hello, name: src}"]),
        case("same-namespace: a populator source with a ReferenceGrant", |s| {
            elsewhere(s, CrossNamespace::ReferenceGrant);
            s.facts = Some(Facts {
                grant: GrantFact::Allowed { grant: "hellos".into() },
                ..fixtures::populator_facts()
            });
        }),
    ]);
}

#[test]
fn a_grant_matches_a_populator_source_by_its_group_and_kind() {
    let mut request = fixtures::populator_request();
    request.source.namespace = Some("prod".into());
    let grant = |group: &str, kind: &str| ReferenceGrantInfo {
        name: "hellos".into(),
        from: vec![GrantFrom {
            group: String::new(),
            kind: "PersistentVolumeClaim".into(),
            namespace: "dev".into(),
        }],
        to: vec![GrantTo {
            group: group.into(),
            kind: kind.into(),
            name: None,
        }],
    };
    assert_eq!(
        match_grant(&[grant("hello.example.com", "Hello")], &request),
        GrantFact::Allowed {
            grant: "hellos".into()
        }
    );
    for (group, kind) in [
        ("", "Hello"),
        ("hello.example.com", "PersistentVolumeClaim"),
    ] {
        assert_eq!(
            match_grant(&[grant(group, kind)], &request),
            GrantFact::NotFound,
            "{group}/{kind}"
        );
    }
}

/// The claim names VolumeAttributesClass `gold`, found with `driver`.
fn attributes_class(s: &mut Setup, found: AttributesClassFact) {
    s.request.spec.volume_attributes_class_name = Some("gold".into());
    s.facts().attributes_class = found;
}

fn of_driver(driver: &str) -> AttributesClassFact {
    AttributesClassFact::Found {
        driver: driver.into(),
    }
}

#[test]
fn claim_field_cases() {
    run(Setup::a_clone, &[
        case("selector refuses a clone with a selector", |s| s.request.spec.selector = Some(Selector {}))
            .denies(&["[selector] this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to clone claim \"data\""]),
        case("volume-attributes-class: a class of the StorageClass's driver", |s| attributes_class(s, of_driver(DRIVER))),
        case("volume-attributes-class refuses a class of another driver", |s| {
            attributes_class(s, of_driver("pd.csi.storage.gke.io"));
        }).denies(&["[volume-attributes-class] VolumeAttributesClass \"gold\" is for CSI driver pd.csi.storage.gke.io but StorageClass \"gp3\" is provisioned by ebs.csi.aws.com; set spec.volumeAttributesClassName to a class of driver ebs.csi.aws.com"]),
        case("volume-attributes-class refuses a class that does not exist", |s| {
            attributes_class(s, AttributesClassFact::Missing);
        }).denies(&["[volume-attributes-class] VolumeAttributesClass \"gold\" does not exist, and the provisioner would retry for ever while holding the source; create it, or fix spec.volumeAttributesClassName"]),
        case("volume-attributes-class: not checked (the API is not served) says nothing", |s| {
            attributes_class(s, AttributesClassFact::NotChecked);
        }),
        case("volume-attributes-class: an empty name names no class", |s| {
            attributes_class(s, AttributesClassFact::Missing);
            s.request.spec.volume_attributes_class_name = Some(String::new());
        }),
        case("volume-attributes-class: no StorageClass to compare with is dynamic-provisioning's to say", |s| {
            attributes_class(s, of_driver("pd.csi.storage.gke.io"));
            s.facts().class = ClassFact::Missing("fast".into());
        }).denies(&["[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
    ]);
    run(Setup::a_restore, &[
        case("selector refuses a restore with a selector", |s| s.request.spec.selector = Some(Selector {}))
            .denies(&["[selector] this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to restore VolumeSnapshot \"snap-1\""]),
        case("volume-attributes-class judges restores too", |s| attributes_class(s, AttributesClassFact::Missing))
            .denies(&["[volume-attributes-class] VolumeAttributesClass \"gold\" does not exist, and the provisioner would retry for ever while holding the source; create it, or fix spec.volumeAttributesClassName"]),
    ]);
}
