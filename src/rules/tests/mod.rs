//! Every rule, every branch, with the exact text the user reads: tables of cases, each a
//! change to a healthy clone or restore ([`fixtures`]) and the lines the user then reads,
//! run by one loop ([`run`]).

mod cross_namespace;
mod placement;
mod snapshot;
mod sources;

use std::collections::BTreeMap;

use super::fixtures::{self, DRIVER, class, good_facts, good_restore_facts};
use super::*;

/// What a case judges: a request, the facts (`None`: none gathered) and the policy.
struct Setup {
    request: DataSourceRequest,
    facts: Option<Facts>,
    policy: Policy,
}

impl Setup {
    fn a_clone() -> Setup {
        Setup {
            request: fixtures::clone_request(),
            facts: Some(good_facts()),
            policy: Policy::default(),
        }
    }

    fn a_restore() -> Setup {
        Setup {
            request: fixtures::restore_request(),
            facts: Some(good_restore_facts()),
            policy: Policy::default(),
        }
    }

    fn facts(&mut self) -> &mut Facts {
        self.facts.as_mut().expect("the case has facts")
    }

    fn source(&mut self) -> &mut SourceClaim {
        self.facts().source.as_mut().expect("the case has a source")
    }

    fn volume(&mut self) -> &mut SourceVolume {
        self.facts().volume.as_mut().expect("the case has a volume")
    }

    fn claim_ref(&mut self) -> &mut ClaimRef {
        self.volume()
            .claim_ref
            .as_mut()
            .expect("the volume has a claimRef")
    }

    /// The source named in `dataSourceRef`, in namespace `prod`.
    fn cross(&mut self) {
        self.request.source.field = "dataSourceRef";
        self.request.source.namespace = Some("prod".into());
    }
}

/// One case of a table: what it shows, how it changes the starting [`Setup`], and the
/// denial and warning lines the user then reads, word for word.
struct Case {
    name: &'static str,
    setup: fn(&mut Setup),
    denials: &'static [&'static str],
    warnings: &'static [&'static str],
}

/// A case that is allowed without a warning (until [`Case::denies`] or [`Case::warns`]).
fn case(name: &'static str, setup: fn(&mut Setup)) -> Case {
    Case {
        name,
        setup,
        denials: &[],
        warnings: &[],
    }
}

impl Case {
    fn denies(self, denials: &'static [&'static str]) -> Case {
        Case { denials, ..self }
    }

    fn warns(self, warnings: &'static [&'static str]) -> Case {
        Case { warnings, ..self }
    }
}

/// Runs every case from `start`, and holds the verdict to the case's lines.
fn run(start: fn() -> Setup, cases: &[Case]) {
    for case in cases {
        let mut setup = start();
        (case.setup)(&mut setup);
        let verdict = decide(&setup.request, setup.facts.as_ref(), &setup.policy);
        let denials: Vec<String> = verdict.denials.iter().map(Finding::to_string).collect();
        assert_eq!(
            (denials, verdict.warning_lines()),
            (
                case.denials
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>(),
                case.warnings
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
            ),
            "{}",
            case.name
        );
        assert_eq!(
            verdict.denial_message(),
            case.denials.join("\n"),
            "{}: one line per violation",
            case.name
        );
    }
}

/// StorageClass `name` of `provisioner`, the default class.
fn default_class(name: &str, provisioner: &str) -> ClassFact {
    match class(name, provisioner) {
        ClassFact::Found(class) => ClassFact::Found(FoundClass {
            is_default: true,
            ..class
        }),
        other => other,
    }
}

#[test]
fn clone_cases() {
    run(Setup::a_clone, &[
        case("a valid clone", |_| {}),
        case("a bigger clone with another class of the same driver", |s| {
            s.request.spec.requested_storage = Some("20Gi".into());
            s.request.spec.storage_class = Some("gp3-encrypted".into());
            s.facts().class = class("gp3-encrypted", DRIVER);
        }),
        case("same-namespace refuses a cross-namespace reference and looks no further", |s| {
            s.cross();
            s.facts = None;
        }).denies(&["[same-namespace] dataSourceRef names claim \"data\" in namespace \"prod\", but this claim is in namespace \"dev\"; a clone must be created in its source's namespace: create this claim in namespace \"prod\""]),
        case("same-namespace accepts an explicit reference to the claim's own namespace", |s| {
            s.request.source.field = "dataSourceRef";
            s.request.source.namespace = Some("dev".into());
        }),
        case("with same-namespace off the source is read in the referenced namespace", |s| {
            s.policy.set_action(RuleId::SameNamespace, Action::Off);
            s.request.source.namespace = Some("prod".into());
            s.claim_ref().namespace = Some("prod".into());
        }),
        case("with same-namespace off a missing source is named in the referenced namespace", |s| {
            s.policy.set_action(RuleId::SameNamespace, Action::Off);
            s.request.source.namespace = Some("prod".into());
            s.facts().source = None;
        }).denies(&["[source-exists] source claim \"data\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSource.name"]),
        case("source-exists names the namespace and the field and stops the source rules", |s| {
            s.facts().source = None;
            s.facts().class = ClassFact::Disabled;
        }).denies(&["[source-exists] source claim \"data\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"]),
        case("source-exists names dataSourceRef", |s| {
            s.request.source.field = "dataSourceRef";
            s.facts().source = None;
            s.facts().class = ClassFact::Disabled;
        }).denies(&["[source-exists] source claim \"data\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSourceRef.name"]),
        case("source-bound: a Pending source has no volume yet, and source-volume does not pile on", |s| {
            s.source().phase = Some("Pending".into());
            s.source().volume_name = None;
            s.facts().volume = None;
        }).denies(&["[source-bound] source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone"]),
        case("source-bound: Lost", |s| s.source().phase = Some("Lost".into())).denies(&["[source-bound] source claim \"data\" is Lost, not Bound; wait until it is Bound, then create the clone"]),
        case("source-bound: no phase", |s| s.source().phase = None).denies(&["[source-bound] source claim \"data\" has no phase, not Bound; wait until it is Bound, then create the clone"]),
        case("source-bound: an empty phase", |s| s.source().phase = Some("".into())).denies(&["[source-bound] source claim \"data\" has no phase, not Bound; wait until it is Bound, then create the clone"]),
        case("source-deleting says since when", |s| {
            s.source().deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
        }).denies(&["[source-deleting] source claim \"data\" is being deleted (since 2026-11-21T10:00:00Z); clone a claim that is not being deleted"]),
        case("source-volume: a Bound claim without a volume name", |s| {
            s.source().volume_name = Some("".into());
            s.facts().volume = None;
        }).denies(&["[source-volume] source claim \"data\" is Bound but names no PersistentVolume (spec.volumeName is empty); repair or recreate the source claim"]),
        case("source-volume: a missing volume", |s| s.facts().volume = None).denies(&["[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" does not exist; restore the volume or clone another claim"]),
        case("source-volume: a volume without claimRef", |s| s.volume().claim_ref = None).denies(&["[source-volume] PersistentVolume \"pv-1\" has no claimRef, so it does not belong to source claim \"dev/data\"; repair the volume's binding or clone another claim"]),
        case("source-volume: a volume bound to another claim", |s| s.claim_ref().name = Some("other".into())).denies(&["[source-volume] PersistentVolume \"pv-1\" is bound to claim \"dev/other\", not to source claim \"dev/data\"; repair the volume's binding or clone another claim"]),
        case("source-volume: a volume bound to a claim of another namespace", |s| s.claim_ref().namespace = Some("prod".into())).denies(&["[source-volume] PersistentVolume \"pv-1\" is bound to claim \"prod/data\", not to source claim \"dev/data\"; repair the volume's binding or clone another claim"]),
        case("source-volume: a volume of an earlier claim of the same name", |s| s.claim_ref().uid = Some("uid-0".into())).denies(&["[source-volume] PersistentVolume \"pv-1\" belongs to an earlier claim \"dev/data\" (uid uid-0), not to the current one (uid uid-1); repair the volume's binding or clone another claim"]),
        case("source-volume: a claimRef without uid does not point back", |s| s.claim_ref().uid = None).denies(&["[source-volume] PersistentVolume \"pv-1\" has a claimRef to \"dev/data\" without a uid, so it is not bound back to source claim \"dev/data\" (uid uid-1); repair the volume's binding or clone another claim"]),
        case("source-volume: a claimRef with an empty uid does not point back", |s| s.claim_ref().uid = Some("".into())).denies(&["[source-volume] PersistentVolume \"pv-1\" has a claimRef to \"dev/data\" without a uid, so it is not bound back to source claim \"dev/data\" (uid uid-1); repair the volume's binding or clone another claim"]),
        case("source-volume: a source without uid is not the claimRef's", |s| s.source().uid = None).denies(&["[source-volume] PersistentVolume \"pv-1\" belongs to an earlier claim \"dev/data\" (uid uid-1), not to the current one (uid none); repair the volume's binding or clone another claim"]),
        case("source-volume: a Released volume", |s| s.volume().phase = Some("Released".into())).denies(&["[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" is Released, not Bound; repair the volume or clone another claim"]),
        case("source-volume: a volume without a phase", |s| s.volume().phase = None).denies(&["[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" is without a phase, not Bound; repair the volume or clone another claim"]),
        case("source-class refuses a source without storageClassName", |s| s.source().storage_class = None).denies(&["[source-class] source claim \"data\" has no storageClassName, and the CSI provisioner refuses to clone such a claim; clone a claim that has a StorageClass"]),
        case("source-class: an empty class is a class (static binding): the provisioner only refuses nil", |s| {
            s.source().storage_class = Some("".into());
        }),
        case("csi-source names the in-tree plugin; same-driver has no driver to compare", |s| in_tree(s, "hostPath")).denies(&["[csi-source] source volume \"pv-1\" is not a CSI volume (it uses hostPath), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead"]),
        case("csi-source: flexVolume", |s| in_tree(s, "flexVolume")).denies(&["[csi-source] source volume \"pv-1\" is not a CSI volume (it uses flexVolume), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead"]),
        case("csi-source: awsElasticBlockStore", |s| in_tree(s, "awsElasticBlockStore")).denies(&["[csi-source] source volume \"pv-1\" is not a CSI volume (it uses awsElasticBlockStore), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead"]),
        case("csi-source: no known plugin", |s| in_tree(s, "")).denies(&["[csi-source] source volume \"pv-1\" is not a CSI volume, and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead"]),
        case("dynamic-provisioning: storageClassName \"\"", |s| s.facts().class = ClassFact::Disabled).denies(&["[dynamic-provisioning] storageClassName is \"\", which turns off dynamic provisioning, and a clone must be provisioned; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("dynamic-provisioning: no default class", |s| s.facts().class = ClassFact::NoDefault).denies(&["[dynamic-provisioning] this claim names no StorageClass and the cluster has no default StorageClass; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("dynamic-provisioning: a class that does not exist", |s| s.facts().class = ClassFact::Missing("fast".into())).denies(&["[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("dynamic-provisioning: no-provisioner", |s| s.facts().class = class("local", NO_PROVISIONER)).denies(&["[dynamic-provisioning] StorageClass \"local\" has provisioner kubernetes.io/no-provisioner, which cannot provision a clone; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("class hints list up to three classes", |s| {
            s.facts().class = ClassFact::Missing("fast".into());
            s.facts().classes_for_source_driver = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        }).denies(&["[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"a\" or \"b\" or \"c\""]),
        case("class hints without a class of the driver", |s| {
            s.facts().class = ClassFact::Missing("fast".into());
            s.facts().classes_for_source_driver.clear();
        }).denies(&["[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class provisioned by ebs.csi.aws.com"]),
        case("class hints fall back to any CSI class without the source's driver", |s| {
            s.facts().class = ClassFact::Missing("fast".into());
            s.facts().classes_for_source_driver.clear();
            s.facts().volume = None;
        }).denies(&[
            "[source-volume] PersistentVolume \"pv-1\" of source claim \"data\" does not exist; restore the volume or clone another claim",
            "[dynamic-provisioning] StorageClass \"fast\" does not exist; set spec.storageClassName to a class with a CSI provisioner",
        ]),
        case("same-driver refuses a class of another driver", |s| s.facts().class = class("standard", "pd.csi.storage.gke.io")).denies(&["[same-driver] StorageClass \"standard\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("same-driver names the default class", |s| {
            s.request.spec.storage_class = None;
            s.facts().class = default_class("standard", "pd.csi.storage.gke.io");
        }).denies(&["[same-driver] the default StorageClass \"standard\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\""]),
        case("the default class of the same driver is accepted", |s| {
            s.request.spec.storage_class = None;
            s.facts().class = default_class("gp3", DRIVER);
        }),
        case("volume-mode compares with the volume", |s| s.volume().volume_mode = Some("Block".into())).denies(&["[volume-mode] source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block"]),
        case("volume-mode falls back to the source claim", |s| {
            s.volume().volume_mode = None;
            s.source().volume_mode = Some("Block".into());
        }).denies(&["[volume-mode] source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block"]),
        case("volume-mode: nil on both sides is Filesystem", |s| {
            s.volume().volume_mode = None;
            s.source().volume_mode = None;
        }),
        case("volume-mode: Block from a Filesystem source", |s| s.request.spec.volume_mode = Some("Block".into())).denies(&["[volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem"]),
        case("size: 1000Mi < 1Gi", |s| size(s, "1000Mi", "1Gi", "1Gi")).denies(&["[size] this claim requests 1000Mi but source claim \"data\" requests 1Gi; request at least 1Gi"]),
        case("size: 1G < 1Gi", |s| size(s, "1G", "1Gi", "1Gi")).denies(&["[size] this claim requests 1G but source claim \"data\" requests 1Gi; request at least 1Gi"]),
        case("size: 9.99Gi < 10Gi", |s| size(s, "9.99Gi", "10Gi", "10Gi")).denies(&["[size] this claim requests 9.99Gi but source claim \"data\" requests 10Gi; request at least 10Gi"]),
        case("size: 5e9 < 5Gi", |s| size(s, "5e9", "5Gi", "5Gi")).denies(&["[size] this claim requests 5e9 but source claim \"data\" requests 5Gi; request at least 5Gi"]),
        case("size: 1024Mi >= 1Gi", |s| size_without_capacity(s, "1024Mi", "1Gi")),
        case("size: 1Gi >= 1G", |s| size_without_capacity(s, "1Gi", "1G")),
        case("size: 0.5Gi >= 512Mi", |s| size_without_capacity(s, "0.5Gi", "512Mi")),
        case("size: 1.5Ti >= 1536Gi", |s| size_without_capacity(s, "1.5Ti", "1536Gi")),
        // Whole bytes rounded up, as Quantity.Value(): 1500m is 2 bytes, 0.5 is 1 byte.
        case("size: 2 >= 1500m", |s| size_without_capacity(s, "2", "1500m")),
        case("size: 1500m >= 2", |s| size_without_capacity(s, "1500m", "2")),
        case("size: 1 >= 0.5", |s| size_without_capacity(s, "1", "0.5")),
        case("size: 0.5 >= 1", |s| size_without_capacity(s, "0.5", "1")),
        case("size refuses an unparseable request", |s| s.request.spec.requested_storage = Some("10GB".into())).denies(&["[size] this claim requests \"10GB\", which is not a valid quantity (unknown suffix \"GB\" (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent like e9)); request at least 10Gi"]),
        case("size refuses a missing request", |s| s.request.spec.requested_storage = None).denies(&["[size] this claim requests no storage (spec.resources.requests.storage) but source claim \"data\" requests 10Gi; request at least 10Gi"]),
        case("size reports a source whose request does not parse", |s| s.source().requested_storage = Some("lots".into())).denies(&["[size] source claim \"data\" requests \"lots\", which is not a valid quantity (it has no digits); the size of the clone cannot be checked"]),
        case("size skips a source without a request", |s| s.source().requested_storage = None),
        case("size-capacity warns when the backend rounded the source up", |s| size(s, "8Gi", "8Gi", "10Gi")).warns(&["[size-capacity] source claim \"data\" holds 10Gi (its request: 8Gi); some drivers refuse a smaller clone: request 10Gi"]),
        case("size-capacity: at capacity, nothing to say", |s| size(s, "10Gi", "8Gi", "10Gi")),
        case("size-capacity stays quiet below the request, where size denies", |s| size(s, "4Gi", "8Gi", "10Gi")).denies(&["[size] this claim requests 4Gi but source claim \"data\" requests 8Gi; request at least 8Gi"]),
        case("size-capacity: an unparseable capacity, nothing to compare", |s| size(s, "8Gi", "8Gi", "?")),
        case("source-in-use warns with the pod", |s| s.facts().pods = PodsFact::Known(vec!["web-0".into()])).warns(&["[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent"]),
        case("source-in-use warns with the first pod and a count", |s| {
            s.facts().pods = PodsFact::Known(vec!["web-0".into(), "web-1".into(), "web-2".into()]);
        }).warns(&[MANY_PODS]),
        case("clone-capable-driver: a driver not on the configured list", |s| {
            s.policy.clone_capable_drivers = vec!["pd.csi.storage.gke.io".into(), "disk.csi.azure.com".into()];
        }).denies(&["[clone-capable-driver] CSI driver ebs.csi.aws.com is not in the configured list of clone-capable drivers (pd.csi.storage.gke.io, disk.csi.azure.com); clone a volume of one of those drivers, or ask an administrator to add ebs.csi.aws.com to the list"]),
        case("clone-capable-driver: a driver on the list", |s| {
            s.policy.clone_capable_drivers = vec!["pd.csi.storage.gke.io".into(), DRIVER.into()];
        }),
        case("clone-capable-driver falls back to the class provisioner", |s| {
            s.policy.clone_capable_drivers = vec!["x.csi.example.com".into()];
            s.facts().volume = None;
            s.source().volume_name = None;
        }).denies(&[
            "[source-volume] source claim \"data\" is Bound but names no PersistentVolume (spec.volumeName is empty); repair or recreate the source claim",
            "[clone-capable-driver] CSI driver ebs.csi.aws.com is not in the configured list of clone-capable drivers (x.csi.example.com); clone a volume of one of those drivers, or ask an administrator to add ebs.csi.aws.com to the list",
        ]),
        case("source-api-group is the only rule for a claim kind in another group", |s| {
            s.request.source.api_group = Some("example.com".into());
            s.facts = None;
        }).denies(&["[source-api-group] spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\""]),
        case("source-api-group: an empty group is the core group", |s| {
            s.request.source.api_group = Some(String::new());
        }),
        case("all violations are reported together in table order", |s| {
            s.request.spec.volume_mode = Some("Block".into());
            s.request.spec.requested_storage = Some("1Gi".into());
            s.source().phase = Some("Lost".into());
            s.source().deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
            s.facts().class = class("other", "other.csi.example.com");
            s.facts().pods = PodsFact::Known(vec!["web-0".into()]);
        }).denies(&[
            "[source-bound] source claim \"data\" is Lost, not Bound; wait until it is Bound, then create the clone",
            "[source-deleting] source claim \"data\" is being deleted (since 2026-11-21T10:00:00Z); clone a claim that is not being deleted",
            "[same-driver] StorageClass \"other\" is provisioned by other.csi.example.com but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\"",
            "[volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem",
            "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi",
        ]).warns(&["[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent"]),
        case("a rule set to warn warns", |s| {
            s.request.spec.volume_mode = Some("Block".into());
            s.source().phase = Some("Pending".into());
            s.policy.set_action(RuleId::VolumeMode, Action::Warn);
        }).denies(&["[source-bound] source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone"])
            .warns(&["[volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem"]),
        case("a rule set to off says nothing", |s| {
            s.request.spec.volume_mode = Some("Block".into());
            s.source().phase = Some("Pending".into());
            s.policy.set_action(RuleId::SourceBound, Action::Off);
            s.policy.set_action(RuleId::VolumeMode, Action::Off);
        }),
        case("rules that need the source are skipped without it", |s| {
            s.request.spec.volume_mode = Some("Block".into());
            s.request.spec.requested_storage = Some("1Mi".into());
            s.facts().source = None;
            s.facts().volume = None;
            s.facts().class = ClassFact::Disabled;
            s.facts().pods = PodsFact::Known(vec!["web-0".into()]);
        }).denies(&["[source-exists] source claim \"data\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name"]),
    ]);
}

/// The source volume uses `plugin`, not CSI.
fn in_tree(s: &mut Setup, plugin: &str) {
    s.volume().csi_driver = None;
    s.volume().plugin = plugin.into();
}

/// The clone asks for `asked`; the source requests `request` and holds `capacity`.
fn size(s: &mut Setup, asked: &str, request: &str, capacity: &str) {
    s.request.spec.requested_storage = Some(asked.into());
    s.source().requested_storage = Some(request.into());
    s.source().capacity = Some(capacity.into());
}

fn size_without_capacity(s: &mut Setup, asked: &str, request: &str) {
    size(s, asked, request, "");
    s.source().capacity = None;
}

#[test]
fn facts_are_gathered_only_where_the_rules_may_read_them() {
    let policy = Policy::default();
    let mut setup = Setup::a_clone();
    assert!(setup.request.needs_facts(&policy));
    setup.cross();
    assert!(!setup.request.needs_facts(&policy), "another namespace");
    setup.request.source.namespace = Some("dev".into());
    assert_eq!(setup.request.source_namespace(&policy), Some("dev"));
    let mut off = Policy::default();
    off.set_action(RuleId::SameNamespace, Action::Off);
    setup.request.source.namespace = Some("prod".into());
    assert_eq!(setup.request.source_namespace(&off), Some("prod"));
    let mut request = fixtures::clone_request();
    request.source.api_group = Some("example.com".into());
    assert!(
        !request.needs_facts(&policy),
        "a claim of another API group"
    );
    request.source.api_group = Some(String::new());
    assert!(request.needs_facts(&policy));
    let mut restore = fixtures::restore_request();
    restore.source.api_group = Some("unsupported.group.io".into());
    assert!(
        !restore.needs_facts(&policy),
        "a VolumeSnapshot of another API group"
    );
}

const MANY_PODS: &str = "[source-in-use] source claim \"data\" is mounted by pod \"web-0\" (+2 more); the clone is only crash-consistent";

#[test]
fn warnings_stay_short() {
    for rule in [
        RuleId::SizeCapacity,
        RuleId::SourceInUse,
        RuleId::AccessModes,
        RuleId::SourceNode,
    ] {
        let line = format!("[{rule}] {}", rule.rule().example);
        assert!(line.len() <= 120, "{line}: {}", line.len());
    }
    assert!(MANY_PODS.len() <= 120, "{MANY_PODS}");
    // The notices a deny rule gives as warnings.
    for notice in [
        "[snapshot-deleting] VolumeSnapshot \"snap-1\" is being deleted but a restore holds it: this one proceeds while it lasts",
        "[populator] populator.storage.k8s.io is not served: no VolumePopulator for Hello.hello.example.com can be checked",
    ] {
        assert!(notice.len() <= 120, "{notice}: {}", notice.len());
    }
}

// ---- The one table: its examples, its switches and the README -----------------------------

/// A case under which `rule` says exactly its table example. The match is exhaustive, so a
/// new rule cannot be added without a case that proves its example.
fn example_case(rule: RuleId) -> Setup {
    let mut s = match rule {
        RuleId::SnapshotExists
        | RuleId::SnapshotDeleting
        | RuleId::SnapshotBound
        | RuleId::SnapshotDriver
        | RuleId::SnapshotReady
        | RuleId::RestoreSize
        | RuleId::SnapshotVolumeMode => Setup::a_restore(),
        RuleId::GroupSnapshot => Setup::a_group_snapshot(),
        RuleId::Populator => Setup::a_populator(),
        _ => Setup::a_clone(),
    };
    match rule {
        RuleId::SameNamespace => {
            s.cross();
            s.facts = None;
        }
        RuleId::SourceExists => {
            s.request.source.name = "nope".into();
            s.facts().source = None;
        }
        RuleId::SourceBound => {
            s.source().phase = Some("Pending".into());
            s.source().volume_name = None;
        }
        RuleId::SourceDeleting => {
            s.source().deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
        }
        RuleId::SourceVolume => s.claim_ref().name = Some("other".into()),
        RuleId::SourceClass => s.source().storage_class = None,
        RuleId::CsiSource => in_tree(&mut s, "hostPath"),
        RuleId::DynamicProvisioning => {
            s.facts().class = class("local-disks", NO_PROVISIONER);
            s.facts().classes_for_source_driver = vec!["gp3".into(), "gp3-encrypted".into()];
        }
        RuleId::SameDriver => {
            s.facts().class = class("standard-rwo", "pd.csi.storage.gke.io");
            s.facts().classes_for_source_driver = vec!["gp3".into(), "gp3-encrypted".into()];
        }
        RuleId::VolumeMode => s.volume().volume_mode = Some("Block".into()),
        RuleId::Size => size(&mut s, "1000Mi", "1Gi", "1Gi"),
        RuleId::SizeCapacity => size(&mut s, "8Gi", "8Gi", "10Gi"),
        RuleId::SourceInUse => s.facts().pods = PodsFact::Known(vec!["web-0".into()]),
        RuleId::CloneCapableDriver => {
            s.policy.clone_capable_drivers =
                vec!["ebs.csi.aws.com".into(), "pd.csi.storage.gke.io".into()];
            s.volume().csi_driver = Some("nfs.csi.k8s.io".into());
            s.facts().class = class("nfs", "nfs.csi.k8s.io");
        }
        RuleId::SourceApiGroup => {
            s.request.source.api_group = Some("example.com".into());
            s.facts = None;
        }
        RuleId::SnapshotExists => s.facts().snapshot = SnapshotFact::Missing,
        RuleId::SnapshotDeleting => {
            snapshot::snapshot(&mut s).deletion_timestamp = Some("2026-11-21T10:00:00Z".into());
        }
        RuleId::SnapshotBound => {
            snapshot::snapshot(&mut s).bound_content_name = None;
            *snapshot::content(&mut s) = None;
        }
        RuleId::SnapshotDriver => s.facts().class = class("standard-rwo", "pd.csi.storage.gke.io"),
        RuleId::SnapshotReady => snapshot::snapshot(&mut s).ready_to_use = Some(false),
        RuleId::RestoreSize => {
            s.request.spec.requested_storage = Some("100Mi".into());
            snapshot::snapshot(&mut s).restore_size = Some("1Gi".into());
        }
        RuleId::SnapshotVolumeMode => {
            snapshot::content_info(&mut s).source_volume_mode = Some("Block".into());
        }
        RuleId::Topology => {
            let zone = |z: &str| {
                TopologyTerm::from([("topology.kubernetes.io/zone".to_owned(), vec![z.to_owned()])])
            };
            s.volume().node_affinity = vec![zone("us-east-1a")].into();
            s.facts().class = ClassFact::Found(FoundClass {
                name: "gp3-west".into(),
                provisioner: DRIVER.into(),
                is_default: false,
                allowed_topologies: vec![zone("us-west-2a")],
                parameters: BTreeMap::new(),
            });
        }
        RuleId::ClassParameters => {
            s.volume().storage_class = Some("gp3-encrypted".into());
            s.facts().source_class_parameters = Some(placement::parameters(&[
                ("type", "gp3"),
                ("encrypted", "true"),
                ("kmsKeyId", "key-1"),
            ]));
            s.facts().class = placement::class_with("gp3", vec![], &[("type", "gp3")]);
        }
        RuleId::GroupSnapshot => {}
        RuleId::Populator => s.facts().populator = PopulatorFact::NotRegistered,
        RuleId::Selector => s.request.spec.selector = Some(Selector {}),
        RuleId::VolumeAttributesClass => {
            s.request.spec.volume_attributes_class_name = Some("gold".into());
            s.facts().attributes_class = AttributesClassFact::Found {
                driver: "pd.csi.storage.gke.io".into(),
            };
        }
        RuleId::AccessModes => s.request.spec.access_modes = vec!["ReadWriteMany".into()],
        RuleId::SourceNode => {
            s.volume().node_affinity = vec![TopologyTerm::from([(
                "kubernetes.io/hostname".to_owned(),
                vec!["node-1".to_owned()],
            )])]
            .into();
        }
    }
    s
}

#[test]
fn every_table_example_is_what_its_rule_says() {
    for rule in RULES {
        let s = example_case(rule.id);
        let verdict = decide(&s.request, s.facts.as_ref(), &s.policy);
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

/// Adding a rule touches its function, its row in [`RULES`], its README row and its test
/// cases, nothing else: the places that act on rules read the table, and none of them names
/// a rule.
#[test]
fn a_rule_lives_in_its_row_its_function_its_readme_row_and_its_cases() {
    // The row names the function (the macro), the README rows and examples follow the table
    // (the two tests below), and `example_case` must name every rule (it is exhaustive).
    let readme = readme_rows();
    for rule in RULES {
        assert!(
            readme.iter().any(|(id, _)| id == rule.name),
            "{}: README row",
            rule.name
        );
    }
    // Every rule has a case of its own in the tables that makes it speak.
    let tables = [
        include_str!("mod.rs"),
        include_str!("snapshot.rs"),
        include_str!("cross_namespace.rs"),
        include_str!("placement.rs"),
        include_str!("sources.rs"),
    ]
    .concat();
    for rule in RULES {
        assert!(
            tables.contains(&format!("\"[{}] ", rule.name)),
            "{}: no case",
            rule.name
        );
    }
    // The fact gathering, the configuration, the metrics and the review read the table.
    let readers = [
        ("facts/mod.rs", include_str!("../../facts/mod.rs")),
        ("facts/cluster.rs", include_str!("../../facts/cluster.rs")),
        ("facts/gather.rs", include_str!("../../facts/gather.rs")),
        ("facts/cache.rs", include_str!("../../facts/cache.rs")),
        ("facts/slim.rs", include_str!("../../facts/slim.rs")),
        (
            "facts/snapshots.rs",
            include_str!("../../facts/snapshots.rs"),
        ),
        ("facts/grants.rs", include_str!("../../facts/grants.rs")),
        (
            "facts/discovered.rs",
            include_str!("../../facts/discovered.rs"),
        ),
        (
            "facts/populators.rs",
            include_str!("../../facts/populators.rs"),
        ),
        (
            "facts/attributes.rs",
            include_str!("../../facts/attributes.rs"),
        ),
        (
            "facts/group_snapshots.rs",
            include_str!("../../facts/group_snapshots.rs"),
        ),
        ("facts/optional.rs", include_str!("../../facts/optional.rs")),
        ("config.rs", include_str!("../../config.rs")),
        ("metrics.rs", include_str!("../../metrics.rs")),
        ("review/judge.rs", include_str!("../../review/judge.rs")),
        ("review/triage.rs", include_str!("../../review/triage.rs")),
    ];
    for (file, text) in readers {
        // The code, not its tests.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for rule in RULES {
            let variant = format!("RuleId::{:?}", rule.id);
            assert!(
                !code.contains(&variant),
                "{file} names {variant}: read the table instead"
            );
        }
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

/// The rows of the README's rules tables (the tables whose header starts `| id |`; the
/// section's other tables, e.g. the parity table, are not rule tables): (id, the first word
/// of the default).
fn readme_rows() -> Vec<(String, String)> {
    let mut in_rule_table = false;
    readme_rules_section()
        .lines()
        .filter(|line| {
            if !line.starts_with('|') {
                in_rule_table = false;
            } else if line.starts_with("| id |") {
                in_rule_table = true;
            }
            in_rule_table && line.starts_with("| `")
        })
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
        .collect()
}

#[test]
fn the_readme_rules_tables_list_every_rule_in_order_with_its_default() {
    let expected: Vec<(String, String)> = RULES
        .iter()
        .map(|rule| (rule.name.to_owned(), rule.default.as_str().to_owned()))
        .collect();
    assert_eq!(readme_rows(), expected);
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
