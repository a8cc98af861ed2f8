//! Every rule, every branch, with the exact text the user reads.

mod cross_namespace;
mod placement;
mod snapshot;

use std::collections::BTreeMap;

use super::*;
use crate::rules::{Action, Policy, RuleId};

const DRIVER: &str = "ebs.csi.aws.com";

fn request() -> DataSourceRequest {
    DataSourceRequest {
        namespace: "dev".into(),
        source: SourceReference {
            kind: SourceKind::Claim,
            name: "data".into(),
            namespace: None,
            api_group: None,
            field: "dataSource",
        },
        volume_mode: None,
        storage_class: Some("gp3".into()),
        requested_storage: Some("10Gi".into()),
    }
}

fn facts() -> Facts {
    Facts {
        source: Some(SourceClaim {
            uid: Some("uid-1".into()),
            phase: Some("Bound".into()),
            deletion_timestamp: None,
            volume_name: Some("pv-1".into()),
            volume_mode: Some("Filesystem".into()),
            requested_storage: Some("10Gi".into()),
            capacity: Some("10Gi".into()),
            storage_class: Some("gp3".into()),
        }),
        volume: Some(SourceVolume {
            name: "pv-1".into(),
            phase: Some("Bound".into()),
            claim_ref: Some(ClaimRef {
                namespace: Some("dev".into()),
                name: Some("data".into()),
                uid: Some("uid-1".into()),
            }),
            csi_driver: Some(DRIVER.into()),
            plugin: "csi".into(),
            volume_mode: Some("Filesystem".into()),
            storage_class: Some("gp3".into()),
            node_affinity: Vec::new().into(),
        }),
        class: ClassFact::Found {
            name: "gp3".into(),
            provisioner: DRIVER.into(),
            is_default: false,
            allowed_topologies: vec![],
            parameters: BTreeMap::new(),
        },
        pods: PodsFact::default(),
        classes_for_source_driver: vec!["gp3".into()],
        ..Facts::default()
    }
}

fn source(f: &mut Facts) -> &mut SourceClaim {
    f.source.as_mut().expect("fixture has a source")
}

fn volume(f: &mut Facts) -> &mut SourceVolume {
    f.volume.as_mut().expect("fixture has a volume")
}

/// The denial lines and warning lines of a decision under the default policy.
fn judge(request: &DataSourceRequest, facts: &Facts) -> (Vec<String>, Vec<String>) {
    judge_with(request, facts, &Policy::default())
}

fn judge_with(
    request: &DataSourceRequest,
    facts: &Facts,
    policy: &Policy,
) -> (Vec<String>, Vec<String>) {
    let verdict = decide(request, Some(facts), policy);
    let denials = verdict.denials.iter().map(Finding::to_string).collect();
    (denials, verdict.warning_lines())
}

fn denied(request: &DataSourceRequest, facts: &Facts) -> Vec<String> {
    let (denials, warnings) = judge(request, facts);
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    denials
}

#[test]
fn a_valid_clone_is_allowed_without_warnings() {
    let verdict = decide(&request(), Some(&facts()), &Policy::default());
    assert!(verdict.allowed());
    assert_eq!(verdict, Verdict::default());
}

#[test]
fn a_bigger_clone_with_another_class_of_the_same_driver_is_allowed() {
    let mut r = request();
    r.requested_storage = Some("20Gi".into());
    r.storage_class = Some("gp3-encrypted".into());
    let mut f = facts();
    f.class = ClassFact::Found {
        name: "gp3-encrypted".into(),
        provisioner: DRIVER.into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    assert_eq!(judge(&r, &f), (vec![], vec![]));
}

#[test]
fn same_namespace_refuses_a_cross_namespace_reference_and_looks_no_further() {
    let mut r = request();
    r.source.field = "dataSourceRef";
    r.source.namespace = Some("prod".into());
    assert!(!r.needs_facts(&Policy::default()));
    let verdict = decide(&r, None, &Policy::default());
    assert_eq!(
        verdict.denial_message(),
        "[same-namespace] dataSourceRef names claim \"data\" in namespace \"prod\", but this claim is in \
         namespace \"dev\"; a clone must be created in its source's namespace: create this claim in namespace \"prod\""
    );
}

#[test]
fn same_namespace_accepts_an_explicit_reference_to_the_claims_own_namespace() {
    let mut r = request();
    r.source.field = "dataSourceRef";
    r.source.namespace = Some("dev".into());
    assert_eq!(r.source_namespace(&Policy::default()), Some("dev"));
    assert_eq!(judge(&r, &facts()), (vec![], vec![]));
}

#[test]
fn with_same_namespace_off_the_source_is_read_in_the_referenced_namespace() {
    let mut policy = Policy::default();
    policy.set_action(RuleId::SameNamespace, Action::Off);
    let mut r = request();
    r.source.namespace = Some("prod".into());
    assert_eq!(r.source_namespace(&policy), Some("prod"));
    let mut f = facts();
    volume(&mut f)
        .claim_ref
        .as_mut()
        .expect("claimRef")
        .namespace = Some("prod".into());
    assert_eq!(judge_with(&r, &f, &policy), (vec![], vec![]));
    f.source = None;
    assert_eq!(
        judge_with(&r, &f, &policy).0,
        [
            "[source-exists] source claim \"data\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSource.name"
        ]
    );
}

#[test]
fn source_exists_names_the_namespace_and_the_field_and_stops_the_source_rules() {
    let mut f = facts();
    f.source = None;
    f.class = ClassFact::Disabled;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-exists] source claim \"data\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"
        ]
    );
    let mut r = request();
    r.source.field = "dataSourceRef";
    assert_eq!(
        denied(&r, &f),
        [
            "[source-exists] source claim \"data\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSourceRef.name"
        ]
    );
}

#[test]
fn source_bound_reports_the_phase() {
    for (phase, text) in [
        (Some("Pending"), "is Pending"),
        (Some("Lost"), "is Lost"),
        (None, "has no phase"),
        (Some(""), "has no phase"),
    ] {
        let mut f = facts();
        source(&mut f).phase = phase.map(Into::into);
        if phase == Some("Pending") {
            // A pending claim has no volume yet; source-volume must not pile on.
            source(&mut f).volume_name = None;
            f.volume = None;
        }
        assert_eq!(
            denied(&request(), &f),
            [format!(
                "[source-bound] source claim \"data\" {text}, not Bound; wait until it is Bound, then create the clone"
            )],
            "{phase:?}"
        );
    }
}

#[test]
fn source_deleting_reports_since_when() {
    let mut f = facts();
    source(&mut f).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-deleting] source claim \"data\" is being deleted (since 2026-11-21T10:00:00Z); clone a claim that is not being deleted"
        ]
    );
}

#[test]
fn source_volume_a_bound_claim_without_volume_name() {
    let mut f = facts();
    source(&mut f).volume_name = Some("".into());
    f.volume = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] source claim \"data\" is Bound but names no PersistentVolume (spec.volumeName is empty); repair or recreate the source claim"
        ]
    );
}

#[test]
fn source_volume_a_missing_volume() {
    let mut f = facts();
    f.volume = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" does not exist; restore the volume or clone another claim"
        ]
    );
}

#[test]
fn source_volume_a_volume_without_claim_ref() {
    let mut f = facts();
    volume(&mut f).claim_ref = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] PersistentVolume \"pv-1\" has no claimRef, so it does not belong to source claim \"dev/data\"; repair the volume's binding or clone another claim"
        ]
    );
}

#[test]
fn source_volume_a_volume_bound_to_another_claim() {
    for (namespace, name, shown) in [("dev", "other", "dev/other"), ("prod", "data", "prod/data")] {
        let mut f = facts();
        let claim_ref = volume(&mut f).claim_ref.as_mut().expect("claimRef");
        claim_ref.namespace = Some(namespace.into());
        claim_ref.name = Some(name.into());
        assert_eq!(
            denied(&request(), &f),
            [format!(
                "[source-volume] PersistentVolume \"pv-1\" is bound to claim \"{shown}\", not to source claim \"dev/data\"; repair the volume's binding or clone another claim"
            )]
        );
    }
}

#[test]
fn source_volume_a_volume_of_an_earlier_claim_with_the_same_name() {
    let mut f = facts();
    volume(&mut f).claim_ref.as_mut().expect("claimRef").uid = Some("uid-0".into());
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] PersistentVolume \"pv-1\" belongs to an earlier claim \"dev/data\" (uid uid-0), not to the current one (uid uid-1); repair the volume's binding or clone another claim"
        ]
    );
}

#[test]
fn source_volume_a_claim_ref_without_uid_does_not_point_back() {
    for uid in [None, Some(String::new())] {
        let mut f = facts();
        volume(&mut f).claim_ref.as_mut().expect("claimRef").uid = uid.map(Into::into);
        assert_eq!(
            denied(&request(), &f),
            [
                "[source-volume] PersistentVolume \"pv-1\" has a claimRef to \"dev/data\" without a uid, so it is not bound back to source claim \"dev/data\" (uid uid-1); repair the volume's binding or clone another claim"
            ]
        );
    }
}

#[test]
fn source_volume_a_source_without_uid_is_not_the_claim_ref_s() {
    let mut f = facts();
    source(&mut f).uid = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] PersistentVolume \"pv-1\" belongs to an earlier claim \"dev/data\" (uid uid-1), not to the current one (uid none); repair the volume's binding or clone another claim"
        ]
    );
}

#[test]
fn source_class_refuses_a_source_without_storage_class_name() {
    let mut f = facts();
    source(&mut f).storage_class = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-class] source claim \"data\" has no storageClassName, and the CSI provisioner refuses to clone such a claim; clone a claim that has a StorageClass"
        ]
    );
    // An empty class is a class (static binding): the provisioner only refuses nil.
    source(&mut f).storage_class = Some("".into());
    assert_eq!(denied(&request(), &f), Vec::<String>::new());
}

#[test]
fn source_volume_a_volume_that_is_not_bound() {
    for (phase, shown) in [(Some("Released"), "Released"), (None, "without a phase")] {
        let mut f = facts();
        volume(&mut f).phase = phase.map(Into::into);
        assert_eq!(
            denied(&request(), &f),
            [format!(
                "[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" is {shown}, not Bound; repair the volume or clone another claim"
            )]
        );
    }
}

#[test]
fn csi_source_names_the_in_tree_plugin() {
    for (plugin, shown) in [
        ("hostPath", " (it uses hostPath)"),
        ("flexVolume", " (it uses flexVolume)"),
        ("awsElasticBlockStore", " (it uses awsElasticBlockStore)"),
        ("", ""),
    ] {
        let mut f = facts();
        let v = volume(&mut f);
        v.csi_driver = None;
        v.plugin = plugin.into();
        let (denials, _) = judge(&request(), &f);
        assert_eq!(
            denials,
            [format!(
                "[csi-source] source volume \"pv-1\" is not a CSI volume{shown}, and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead"
            ),],
            "same-driver has no driver to compare, so only csi-source fires"
        );
    }
}

#[test]
fn dynamic_provisioning_every_way_to_have_no_provisioner() {
    let hint = "set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\"";
    let cases = [
        (
            ClassFact::Disabled,
            "storageClassName is \"\", which turns off dynamic provisioning, and a clone must be provisioned",
        ),
        (
            ClassFact::NoDefault,
            "this claim names no StorageClass and the cluster has no default StorageClass",
        ),
        (
            ClassFact::Missing("fast".into()),
            "StorageClass \"fast\" does not exist",
        ),
        (
            ClassFact::Found {
                name: "local".into(),
                provisioner: NO_PROVISIONER.into(),
                is_default: false,
                allowed_topologies: vec![],
                parameters: BTreeMap::new(),
            },
            "StorageClass \"local\" has provisioner kubernetes.io/no-provisioner, which cannot provision a clone",
        ),
    ];
    for (class, problem) in cases {
        let mut f = facts();
        f.class = class;
        assert_eq!(
            denied(&request(), &f),
            [format!("[dynamic-provisioning] {problem}; {hint}")]
        );
    }
}

#[test]
fn class_hints_list_up_to_three_classes_or_fall_back_to_any_csi_class() {
    let mut f = facts();
    f.class = ClassFact::Missing("fast".into());
    f.classes_for_source_driver = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    assert_eq!(
        denied(&request(), &f),
        [
            "[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"a\" or \"b\" or \"c\""
        ]
    );
    f.classes_for_source_driver.clear();
    assert_eq!(
        denied(&request(), &f),
        [
            "[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com"
        ]
    );
    f.volume = None;
    assert_eq!(
        denied(&request(), &f),
        [
            "[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" does not exist; restore the volume or clone another claim",
            "[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class with a CSI provisioner",
        ]
    );
}

#[test]
fn same_driver_refuses_a_class_of_another_driver() {
    let mut f = facts();
    f.class = ClassFact::Found {
        name: "standard".into(),
        provisioner: "pd.csi.storage.gke.io".into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    assert_eq!(
        denied(&request(), &f),
        [
            "[same-driver] StorageClass \"standard\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""
        ]
    );
    f.class = ClassFact::Found {
        name: "standard".into(),
        provisioner: "pd.csi.storage.gke.io".into(),
        is_default: true,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    let mut r = request();
    r.storage_class = None;
    assert_eq!(
        denied(&r, &f),
        [
            "[same-driver] the default StorageClass \"standard\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""
        ]
    );
}

#[test]
fn the_default_class_of_the_same_driver_is_accepted() {
    let mut r = request();
    r.storage_class = None;
    let mut f = facts();
    f.class = ClassFact::Found {
        name: "gp3".into(),
        provisioner: DRIVER.into(),
        is_default: true,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    assert_eq!(judge(&r, &f), (vec![], vec![]));
}

#[test]
fn volume_mode_compares_with_the_volume_then_the_claim_and_nil_is_filesystem() {
    let message = "[volume-mode] source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block";
    // From the PV.
    let mut f = facts();
    volume(&mut f).volume_mode = Some("Block".into());
    assert_eq!(denied(&request(), &f), [message]);
    // From the source claim when the PV says nothing.
    let mut f = facts();
    volume(&mut f).volume_mode = None;
    source(&mut f).volume_mode = Some("Block".into());
    assert_eq!(denied(&request(), &f), [message]);
    // Both nil: Filesystem on both sides.
    let mut f = facts();
    volume(&mut f).volume_mode = None;
    source(&mut f).volume_mode = None;
    assert_eq!(denied(&request(), &f), Vec::<String>::new());
    // The clone asks for Block from a Filesystem source.
    let mut r = request();
    r.volume_mode = Some("Block".into());
    assert_eq!(
        denied(&r, &facts()),
        [
            "[volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem"
        ]
    );
}

#[test]
fn size_compares_exact_bytes_in_the_units_written() {
    for (asked, source_request) in [
        ("1000Mi", "1Gi"),
        ("1G", "1Gi"),
        ("9.99Gi", "10Gi"),
        ("5e9", "5Gi"),
    ] {
        let mut r = request();
        r.requested_storage = Some(asked.into());
        let mut f = facts();
        source(&mut f).requested_storage = Some(source_request.into());
        source(&mut f).capacity = Some(source_request.into());
        assert_eq!(
            denied(&r, &f),
            [format!(
                "[size] this claim requests {asked} but source claim \"data\" requests {source_request}; request at least {source_request}"
            )]
        );
    }
    for (asked, source_request) in [
        ("1024Mi", "1Gi"),
        ("1Gi", "1G"),
        ("0.5Gi", "512Mi"),
        ("1.5Ti", "1536Gi"),
        // Whole bytes rounded up, as Quantity.Value(): 1500m is 2 bytes, 0.5 is 1 byte.
        ("2", "1500m"),
        ("1500m", "2"),
        ("1", "0.5"),
        ("0.5", "1"),
    ] {
        let mut r = request();
        r.requested_storage = Some(asked.into());
        let mut f = facts();
        source(&mut f).requested_storage = Some(source_request.into());
        source(&mut f).capacity = None;
        assert_eq!(
            denied(&r, &f),
            Vec::<String>::new(),
            "{asked} >= {source_request}"
        );
    }
}

#[test]
fn size_refuses_an_unparseable_or_missing_request() {
    let mut r = request();
    r.requested_storage = Some("10GB".into());
    assert_eq!(
        denied(&r, &facts()),
        [
            "[size] this claim requests \"10GB\", which is not a valid quantity (unknown suffix \"GB\" (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent like e9)); request at least 10Gi"
        ]
    );
    r.requested_storage = None;
    assert_eq!(
        denied(&r, &facts()),
        [
            "[size] this claim requests no storage (spec.resources.requests.storage) but source claim \"data\" requests 10Gi; request at least 10Gi"
        ]
    );
}

#[test]
fn size_reports_a_source_whose_request_does_not_parse_and_skips_one_without_request() {
    let mut f = facts();
    source(&mut f).requested_storage = Some("lots".into());
    assert_eq!(
        denied(&request(), &f),
        [
            "[size] source claim \"data\" requests \"lots\", which is not a valid quantity (it has no digits); the size of the clone cannot be checked"
        ]
    );
    source(&mut f).requested_storage = None;
    assert_eq!(denied(&request(), &f), Vec::<String>::new());
}

#[test]
fn size_capacity_warns_when_the_backend_rounded_the_source_up() {
    let mut f = facts();
    source(&mut f).requested_storage = Some("8Gi".into());
    source(&mut f).capacity = Some("10Gi".into());
    let mut r = request();
    r.requested_storage = Some("8Gi".into());
    let warning = "[size-capacity] source claim \"data\" holds 10Gi (its request: 8Gi); some drivers refuse a smaller clone: request 10Gi";
    assert!(
        warning.len() <= 120,
        "warnings stay short: {}",
        warning.len()
    );
    assert_eq!(judge(&r, &f), (vec![], vec![warning.to_owned()]));
    // At capacity or above: nothing to say.
    r.requested_storage = Some("10Gi".into());
    assert_eq!(judge(&r, &f), (vec![], vec![]));
    // Below the request: `size` denies, and size-capacity stays quiet.
    r.requested_storage = Some("4Gi".into());
    assert_eq!(
        judge(&r, &f),
        (vec!["[size] this claim requests 4Gi but source claim \"data\" requests 8Gi; request at least 8Gi".to_owned()], vec![])
    );
    // Unknown or unparseable capacity: nothing to compare.
    r.requested_storage = Some("8Gi".into());
    source(&mut f).capacity = Some("?".into());
    assert_eq!(judge(&r, &f), (vec![], vec![]));
}

#[test]
fn source_in_use_warns_with_the_first_pod_and_a_count() {
    let mut f = facts();
    f.pods = PodsFact::Known(vec!["web-0".into()]);
    let one = "[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent";
    assert_eq!(judge(&request(), &f), (vec![], vec![one.to_owned()]));
    f.pods = PodsFact::Known(vec!["web-0".into(), "web-1".into(), "web-2".into()]);
    let (_, warnings) = judge(&request(), &f);
    assert_eq!(
        warnings,
        [
            "[source-in-use] source claim \"data\" is mounted by pod \"web-0\" (+2 more); the clone is only crash-consistent"
        ]
    );
    assert!(warnings[0].len() <= 120);
}

#[test]
fn clone_capable_driver_is_off_until_a_list_is_configured() {
    let mut policy = Policy::default();
    policy.clone_capable_drivers =
        vec!["pd.csi.storage.gke.io".into(), "disk.csi.azure.com".into()];
    assert_eq!(
        judge_with(&request(), &facts(), &policy).0,
        [
            "[clone-capable-driver] CSI driver ebs.csi.aws.com is not in the configured list of clone-capable drivers (pd.csi.storage.gke.io, disk.csi.azure.com); clone a volume of one of those drivers, or ask an administrator to add ebs.csi.aws.com to the list"
        ]
    );
    policy.clone_capable_drivers.push(DRIVER.into());
    assert_eq!(judge_with(&request(), &facts(), &policy), (vec![], vec![]));
}

#[test]
fn clone_capable_driver_falls_back_to_the_class_provisioner() {
    let mut policy = Policy::default();
    policy.clone_capable_drivers = vec!["x.csi.example.com".into()];
    let mut f = facts();
    f.volume = None;
    source(&mut f).volume_name = None;
    let (denials, _) = judge_with(&request(), &f, &policy);
    let driver_findings: Vec<&String> = denials
        .iter()
        .filter(|d| d.starts_with("[clone-capable-driver]"))
        .collect();
    assert_eq!(
        driver_findings,
        [
            "[clone-capable-driver] CSI driver ebs.csi.aws.com is not in the configured list of clone-capable drivers (x.csi.example.com); clone a volume of one of those drivers, or ask an administrator to add ebs.csi.aws.com to the list"
        ]
    );
}

#[test]
fn source_api_group_is_the_only_rule_for_a_claim_kind_in_another_group() {
    let mut r = request();
    r.source.api_group = Some("example.com".into());
    assert!(!r.needs_facts(&Policy::default()));
    let verdict = decide(&r, None, &Policy::default());
    assert_eq!(
        verdict.denial_message(),
        "[source-api-group] spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\""
    );
    r.source.api_group = Some(String::new());
    assert!(r.needs_facts(&Policy::default()));
    assert!(decide(&r, Some(&facts()), &Policy::default()).allowed());
}

#[test]
fn all_violations_are_reported_together_in_table_order() {
    let mut r = request();
    r.volume_mode = Some("Block".into());
    r.requested_storage = Some("1Gi".into());
    let mut f = facts();
    source(&mut f).phase = Some("Lost".into());
    source(&mut f).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
    f.class = ClassFact::Found {
        name: "other".into(),
        provisioner: "other.csi.example.com".into(),
        is_default: false,
        allowed_topologies: vec![],
        parameters: BTreeMap::new(),
    };
    f.pods = PodsFact::Known(vec!["web-0".into()]);
    let verdict = decide(&r, Some(&f), &Policy::default());
    let rules: Vec<RuleId> = verdict.denials.iter().map(|d| d.rule).collect();
    assert_eq!(
        rules,
        [
            RuleId::SourceBound,
            RuleId::SourceDeleting,
            RuleId::SameDriver,
            RuleId::VolumeMode,
            RuleId::Size
        ]
    );
    assert_eq!(verdict.denial_message().lines().count(), 5);
    assert!(
        verdict
            .denial_message()
            .starts_with("[source-bound] source claim \"data\" is Lost, not Bound;")
    );
    assert_eq!(
        verdict.warnings.iter().map(|w| w.rule).collect::<Vec<_>>(),
        [RuleId::SourceInUse]
    );
}

#[test]
fn every_rule_obeys_warn_and_off() {
    let mut r = request();
    r.volume_mode = Some("Block".into());
    let mut f = facts();
    source(&mut f).phase = Some("Pending".into());

    let mut policy = Policy::default();
    policy.set_action(RuleId::VolumeMode, Action::Warn);
    let verdict = decide(&r, Some(&f), &policy);
    assert_eq!(
        verdict.denials.iter().map(|d| d.rule).collect::<Vec<_>>(),
        [RuleId::SourceBound]
    );
    assert_eq!(
        verdict.warnings.iter().map(|d| d.rule).collect::<Vec<_>>(),
        [RuleId::VolumeMode]
    );

    policy.set_action(RuleId::SourceBound, Action::Off);
    policy.set_action(RuleId::VolumeMode, Action::Off);
    assert_eq!(decide(&r, Some(&f), &policy), Verdict::default());
}

#[test]
fn rules_that_need_the_source_are_skipped_without_it() {
    let mut r = request();
    r.volume_mode = Some("Block".into());
    r.requested_storage = Some("1Mi".into());
    let mut f = facts();
    f.source = None;
    f.volume = None;
    f.class = ClassFact::Disabled;
    f.pods = PodsFact::Known(vec!["web-0".into()]);
    let verdict = decide(&r, Some(&f), &Policy::default());
    assert_eq!(
        verdict.denials.iter().map(|d| d.rule).collect::<Vec<_>>(),
        [RuleId::SourceExists]
    );
    assert!(verdict.warnings.is_empty());
}

// ---- The one table: its examples and the README ------------------------------------------

/// A request, facts and policy under which `rule` says exactly its table example. The match
/// is exhaustive, so a new rule cannot be added without a case that proves its example.
fn example_case(rule: RuleId) -> (DataSourceRequest, Option<Facts>, Policy) {
    let mut r = request();
    let mut f = facts();
    let mut policy = Policy::default();
    match rule {
        RuleId::SameNamespace => {
            r.source.field = "dataSourceRef";
            r.source.namespace = Some("prod".into());
            return (r, None, policy);
        }
        RuleId::SourceExists => {
            r.source.name = "nope".into();
            f.source = None;
        }
        RuleId::SourceBound => {
            source(&mut f).phase = Some("Pending".into());
            source(&mut f).volume_name = None;
        }
        RuleId::SourceDeleting => {
            source(&mut f).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
        }
        RuleId::SourceVolume => {
            volume(&mut f).claim_ref.as_mut().expect("claimRef").name = Some("other".into());
        }
        RuleId::SourceClass => {
            source(&mut f).storage_class = None;
        }
        RuleId::CsiSource => {
            volume(&mut f).csi_driver = None;
            volume(&mut f).plugin = "hostPath".into();
        }
        RuleId::DynamicProvisioning => {
            f.class = ClassFact::Found {
                name: "local-disks".into(),
                provisioner: NO_PROVISIONER.into(),
                is_default: false,
                allowed_topologies: vec![],
                parameters: BTreeMap::new(),
            };
            f.classes_for_source_driver = vec!["gp3".into(), "gp3-encrypted".into()];
        }
        RuleId::SameDriver => {
            f.class = ClassFact::Found {
                name: "standard-rwo".into(),
                provisioner: "pd.csi.storage.gke.io".into(),
                is_default: false,
                allowed_topologies: vec![],
                parameters: BTreeMap::new(),
            };
            f.classes_for_source_driver = vec!["gp3".into(), "gp3-encrypted".into()];
        }
        RuleId::VolumeMode => {
            volume(&mut f).volume_mode = Some("Block".into());
        }
        RuleId::Size => {
            r.requested_storage = Some("1000Mi".into());
            source(&mut f).requested_storage = Some("1Gi".into());
            source(&mut f).capacity = Some("1Gi".into());
        }
        RuleId::SizeCapacity => {
            r.requested_storage = Some("8Gi".into());
            source(&mut f).requested_storage = Some("8Gi".into());
        }
        RuleId::SourceInUse => {
            f.pods = PodsFact::Known(vec!["web-0".into()]);
        }
        RuleId::CloneCapableDriver => {
            policy.clone_capable_drivers =
                vec!["ebs.csi.aws.com".into(), "pd.csi.storage.gke.io".into()];
            volume(&mut f).csi_driver = Some("nfs.csi.k8s.io".into());
            f.class = ClassFact::Found {
                name: "nfs".into(),
                provisioner: "nfs.csi.k8s.io".into(),
                is_default: false,
                allowed_topologies: vec![],
                parameters: BTreeMap::new(),
            };
        }
        RuleId::SourceApiGroup => {
            r.source.api_group = Some("example.com".into());
            return (r, None, policy);
        }
        RuleId::SnapshotExists
        | RuleId::SnapshotDeleting
        | RuleId::SnapshotBound
        | RuleId::SnapshotDriver
        | RuleId::SnapshotReady
        | RuleId::RestoreSize
        | RuleId::SnapshotVolumeMode => {
            let mut r = snapshot::restore_request();
            let mut f = snapshot::restore_facts();
            match rule {
                RuleId::SnapshotExists => f.snapshot = SnapshotFact::Missing,
                RuleId::SnapshotDeleting => {
                    snapshot::snapshot(&mut f).deletion_timestamp =
                        Some("2026-11-21T10:00:00Z".into());
                }
                RuleId::SnapshotBound => {
                    snapshot::snapshot(&mut f).bound_content_name = None;
                    *snapshot::content(&mut f) = None;
                }
                RuleId::SnapshotDriver => {
                    f.class = ClassFact::Found {
                        name: "standard-rwo".into(),
                        provisioner: "pd.csi.storage.gke.io".into(),
                        is_default: false,
                        allowed_topologies: vec![],
                        parameters: BTreeMap::new(),
                    };
                }
                RuleId::SnapshotReady => snapshot::snapshot(&mut f).ready_to_use = Some(false),
                RuleId::RestoreSize => {
                    r.requested_storage = Some("100Mi".into());
                    snapshot::snapshot(&mut f).restore_size = Some("1Gi".into());
                }
                _ => {
                    if let Some(content) = snapshot::content(&mut f) {
                        content.source_volume_mode = Some("Block".into());
                    }
                }
            }
            return (r, Some(f), policy);
        }
        RuleId::Topology => {
            let zone = |z: &str| {
                TopologyTerm::from([("topology.kubernetes.io/zone".to_owned(), vec![z.to_owned()])])
            };
            volume(&mut f).node_affinity = vec![zone("us-east-1a")].into();
            f.class = ClassFact::Found {
                name: "gp3-west".into(),
                provisioner: DRIVER.into(),
                is_default: false,
                allowed_topologies: vec![zone("us-west-2a")],
                parameters: BTreeMap::new(),
            };
        }
        RuleId::ClassParameters => {
            let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            volume(&mut f).storage_class = Some("gp3-encrypted".into());
            f.source_class_parameters = Some(map(&[
                ("type", "gp3"),
                ("encrypted", "true"),
                ("kmsKeyId", "key-1"),
            ]));
            f.class = ClassFact::Found {
                name: "gp3".into(),
                provisioner: DRIVER.into(),
                is_default: false,
                allowed_topologies: vec![],
                parameters: map(&[("type", "gp3")]),
            };
        }
    }
    (r, Some(f), policy)
}

#[test]
fn every_table_example_is_what_its_rule_says() {
    for rule in RULES {
        let (r, f, policy) = example_case(rule.id);
        let verdict = decide(&r, f.as_ref(), &policy);
        let said: Vec<&str> = verdict
            .denials
            .iter()
            .chain(&verdict.warnings)
            .filter(|finding| finding.rule == rule.id)
            .map(|finding| finding.message.as_str())
            .collect();
        assert_eq!(said, [rule.example], "{}", rule.name);
    }
}

#[test]
fn the_table_is_in_id_order_and_names_are_unique() {
    for (position, rule) in RULES.iter().enumerate() {
        assert_eq!(rule.id as usize, position, "{}", rule.name);
        assert_eq!(RuleId::from_name(rule.name), Some(rule.id));
    }
}

/// The README's section `## The rules`, up to the next `## ` heading.
fn readme_rules_section() -> &'static str {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("\n## The rules\n")
        .expect("README has a rules section");
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    &section[..end]
}

#[test]
fn the_readme_rules_tables_list_every_rule_in_order_with_its_default() {
    let rows: Vec<(String, String)> = readme_rules_section()
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let id = cells[0].trim_matches('`').to_owned();
            // "deny once a list is configured": the first word is the table's default.
            let default = cells[cells.len() - 1]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            (id, default)
        })
        .collect();
    let expected: Vec<(String, String)> = RULES
        .iter()
        .map(|rule| (rule.name.to_owned(), rule.default.as_str().to_owned()))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn the_readme_examples_are_the_table_examples_in_order() {
    let section = readme_rules_section();
    let start = section.find("```\n").expect("an examples block") + 4;
    let end = start + section[start..].find("```").expect("the block ends");
    let shown: Vec<&str> = section[start..end].lines().collect();
    let expected: Vec<String> = RULES
        .iter()
        .map(|rule| {
            let warning = if rule.default == Action::Warn {
                "Warning: "
            } else {
                ""
            };
            format!("{warning}[{}] {}", rule.name, rule.example)
        })
        .collect();
    assert_eq!(shown, expected);
}
