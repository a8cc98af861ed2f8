//! The decision: a pure function of the clone request, the facts about the cluster and the
//! policy. No I/O happens here; the same function serves the webhook and the tests.
//!
//! Each rule is one function below, next to its message. A message names the objects and
//! values involved and says how to fix the claim: it is what the user reads.

use std::fmt;

use crate::config::{Action, Policy};

mod clone;

use clone::*;

/// The storage provisioner that marks a class as statically provisioned only.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// What a new claim asks for, when its data source is a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloneRequest {
    pub namespace: String,
    pub source: SourceReference,
    /// `spec.volumeMode`; `None` means Filesystem.
    pub volume_mode: Option<String>,
    /// `spec.storageClassName`; `None` means no default class existed at create time.
    pub storage_class: Option<String>,
    /// `spec.resources.requests.storage`, as written.
    pub requested_storage: Option<String>,
}

/// The claim named by `spec.dataSource` or `spec.dataSourceRef`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceReference {
    pub name: String,
    /// Only `dataSourceRef` can name another namespace.
    pub namespace: Option<String>,
    pub api_group: Option<String>,
    /// Which field named the source: `dataSource` or `dataSourceRef`.
    pub field: &'static str,
}

impl CloneRequest {
    /// A PVC-kind source with an API group is not a claim at all: only `source-api-group`
    /// applies to it.
    pub fn names_foreign_api_group(&self) -> bool {
        self.source
            .api_group
            .as_deref()
            .is_some_and(|g| !g.is_empty())
    }

    /// The namespace whose claim is the source, or `None` when the source is in another
    /// namespace and `same-namespace` refuses that: the rules then do not look at (and the
    /// messages reveal nothing about) another namespace's objects.
    pub fn source_namespace(&self, policy: &Policy) -> Option<&str> {
        match self.source.namespace.as_deref() {
            Some(other) if other != self.namespace => {
                (policy.action(RuleId::SameNamespace) == Action::Off).then_some(other)
            }
            _ => Some(&self.namespace),
        }
    }

    /// Whether the decision needs facts from the cluster at all.
    pub fn needs_facts(&self, policy: &Policy) -> bool {
        !self.names_foreign_api_group() && self.source_namespace(policy).is_some()
    }
}

/// What the rules read about the source claim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceClaim {
    pub uid: Option<String>,
    pub phase: Option<String>,
    pub deletion_timestamp: Option<String>,
    pub volume_name: Option<String>,
    pub volume_mode: Option<String>,
    pub requested_storage: Option<String>,
    pub capacity: Option<String>,
    /// `spec.storageClassName`; `None` (nil) cannot be cloned by the provisioner.
    pub storage_class: Option<String>,
}

/// What the rules read about the source claim's PersistentVolume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceVolume {
    pub name: String,
    pub phase: Option<String>,
    pub claim_ref: Option<ClaimRef>,
    /// `spec.csi.driver`; `None` for in-tree and FlexVolume volumes.
    pub csi_driver: Option<String>,
    /// The volume source field that is set, e.g. `csi`, `hostPath`, `awsElasticBlockStore`;
    /// empty when none that pvc-clone-guard knows is set.
    pub plugin: String,
    pub volume_mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimRef {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// The StorageClass the clone would be provisioned with.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassFact {
    /// The claim's class, or the default class when it names none.
    Found {
        name: String,
        provisioner: String,
        is_default: bool,
    },
    /// The claim names a class that does not exist.
    Missing(String),
    /// The claim names no class and no class is marked default.
    NoDefault,
    /// `storageClassName: ""`: static binding only.
    Disabled,
}

/// Everything the rules know about the cluster, gathered before the decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// `None`: the source claim does not exist.
    pub source: Option<SourceClaim>,
    /// `None`: the source names no volume, or its volume does not exist.
    pub volume: Option<SourceVolume>,
    pub class: ClassFact,
    /// Pods (not Succeeded or Failed) that mount the source claim.
    pub pods_using_source: Vec<String>,
    /// StorageClasses provisioned by the source's CSI driver, for the hints.
    pub classes_for_source_driver: Vec<String>,
}

/// One violated rule and what the user is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// The outcome of the rules: denials refuse the claim, warnings admit it with a warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub denials: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// The denial message: one line per violated rule, in table order.
    pub fn denial_message(&self) -> String {
        lines(&self.denials)
    }

    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings.iter().map(Finding::to_string).collect()
    }
}

fn lines(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a rule looks at.
struct Input<'a> {
    request: &'a CloneRequest,
    facts: Option<&'a Facts>,
    policy: &'a Policy,
}

impl<'a> Input<'a> {
    fn source(&self) -> Option<&'a SourceClaim> {
        self.facts?.source.as_ref()
    }

    fn volume(&self) -> Option<&'a SourceVolume> {
        self.facts?.volume.as_ref()
    }

    fn source_driver(&self) -> Option<&'a str> {
        self.volume()?.csi_driver.as_deref()
    }

    fn source_name(&self) -> &'a str {
        &self.request.source.name
    }

    /// "set spec.storageClassName to a class provisioned by X, e.g. "a" or "b"".
    fn class_hint(&self) -> String {
        let Some(driver) = self.source_driver() else {
            return "set spec.storageClassName to a class with a CSI provisioner".to_owned();
        };
        let examples = self
            .facts
            .map(|f| f.classes_for_source_driver.as_slice())
            .unwrap_or_default();
        let mut hint = format!("set spec.storageClassName to a class provisioned by {driver}");
        if !examples.is_empty() {
            let quoted: Vec<String> = examples.iter().take(3).map(|c| format!("{c:?}")).collect();
            hint.push_str(&format!(", e.g. {}", quoted.join(" or ")));
        }
        hint
    }
}

type Check = fn(&Input) -> Option<String>;

/// Which requests a rule judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    Clone,
    Restore,
    Both,
}

/// A row of [`RULES`].
pub struct Rule {
    pub id: RuleId,
    /// The id users see in messages, the configuration and the metrics.
    pub name: &'static str,
    /// The action when the configuration does not name the rule.
    pub default: Action,
    pub applies: Applies,
    check: Check,
    /// What a user reads when the rule is violated (without the `[id]` prefix); the tests
    /// hold it equal to what the rule says, and the README shows it.
    pub example: &'static str,
}

/// Declares [`RuleId`] and [`RULES`] from one list, so that an id, its default, its order,
/// its function and its example cannot drift apart.
macro_rules! rule_table {
    ($($variant:ident => $name:literal, $default:ident, $applies:ident, $check:path, $example:expr;)+) => {
        /// A rule, by its position in [`RULES`] (the order violations are reported in).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RuleId {
            $($variant),+
        }

        impl RuleId {
            pub const ALL: [RuleId; [$(RuleId::$variant),+].len()] = [$(RuleId::$variant),+];
        }

        /// The one table of rules, in report order. Adding a rule is a row here and its function.
        pub const RULES: &[Rule] = &[$(Rule {
            id: RuleId::$variant,
            name: $name,
            default: Action::$default,
            applies: Applies::$applies,
            check: $check,
            example: $example,
        }),+];
    };
}

rule_table! {
    SameNamespace => "same-namespace", Deny, Both, same_namespace,
        "dataSourceRef names claim \"data\" in namespace \"prod\", but this claim is in namespace \"dev\"; a clone must be created in its source's namespace: create this claim in namespace \"prod\"";
    SourceExists => "source-exists", Deny, Clone, source_exists,
        "source claim \"nope\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name";
    SourceBound => "source-bound", Deny, Clone, source_bound,
        "source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone";
    SourceDeleting => "source-deleting", Deny, Clone, source_deleting,
        "source claim \"data\" is being deleted (since 2026-11-21T10:00:00Z); clone a claim that is not being deleted";
    SourceVolume => "source-volume", Deny, Clone, source_volume,
        "PersistentVolume \"pv-1\" is bound to claim \"dev/other\", not to source claim \"dev/data\"; repair the volume's binding or clone another claim";
    SourceClass => "source-class", Deny, Clone, source_class,
        "source claim \"data\" has no storageClassName, and the CSI provisioner refuses to clone such a claim; clone a claim that has a StorageClass";
    CsiSource => "csi-source", Deny, Clone, csi_source,
        "source volume \"pv-1\" is not a CSI volume (it uses hostPath), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead";
    DynamicProvisioning => "dynamic-provisioning", Deny, Both, dynamic_provisioning,
        "StorageClass \"local-disks\" has provisioner kubernetes.io/no-provisioner, which cannot provision a clone; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    SameDriver => "same-driver", Deny, Clone, same_driver,
        "StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    VolumeMode => "volume-mode", Deny, Clone, volume_mode,
        "source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block";
    Size => "size", Deny, Clone, size,
        "this claim requests 1000Mi but source claim \"data\" requests 1Gi; request at least 1Gi";
    SizeCapacity => "size-capacity", Warn, Clone, size_capacity,
        "source claim \"data\" holds 10Gi (its request: 8Gi); some drivers refuse a smaller clone: request 10Gi";
    SourceInUse => "source-in-use", Warn, Clone, source_in_use,
        "source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent";
    CloneCapableDriver => "clone-capable-driver", Deny, Clone, clone_capable_driver,
        "CSI driver nfs.csi.k8s.io is not in the configured list of clone-capable drivers (ebs.csi.aws.com, pd.csi.storage.gke.io); clone a volume of one of those drivers, or ask an administrator to add nfs.csi.k8s.io to the list";
    SourceApiGroup => "source-api-group", Deny, Clone, source_api_group,
        "spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\"";
}

impl RuleId {
    pub fn rule(self) -> &'static Rule {
        &RULES[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.rule().name
    }

    /// The action a rule takes when the configuration does not name it.
    pub fn default_action(self) -> Action {
        self.rule().default
    }

    /// The rule named `name`, or `None`.
    pub fn from_name(name: &str) -> Option<RuleId> {
        RULES
            .iter()
            .find(|rule| rule.name == name)
            .map(|rule| rule.id)
    }

    /// Every rule id, comma-separated, for messages.
    pub fn known() -> String {
        RULES
            .iter()
            .map(|rule| rule.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides a clone request. `facts` is `None` when the request needs none
/// ([`CloneRequest::needs_facts`] is false).
pub fn decide(request: &CloneRequest, facts: Option<&Facts>, policy: &Policy) -> Verdict {
    let input = Input {
        request,
        facts,
        policy,
    };
    let mut verdict = Verdict::default();
    for &Rule {
        id: rule, check, ..
    } in RULES
    {
        let action = policy.action(rule);
        if action == Action::Off {
            continue;
        }
        // A claim-kind source with a foreign API group is not a claim: nothing else applies.
        if request.names_foreign_api_group() && rule != RuleId::SourceApiGroup {
            continue;
        }
        if let Some(message) = check(&input) {
            let finding = Finding { rule, message };
            match action {
                Action::Deny => verdict.denials.push(finding),
                Action::Warn => verdict.warnings.push(finding),
                Action::Off => {}
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
