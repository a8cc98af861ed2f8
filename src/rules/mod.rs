//! The decision: a pure function of the clone request, the facts about the cluster and the
//! policy. No I/O happens here; the same function serves the webhook and the tests.
//!
//! Each rule is one function below, next to its message. A message names the objects and
//! values involved and says how to fix the claim: it is what the user reads.

use std::fmt;

use crate::config::{Action, Policy, RuleId};

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

/// The rules in table order. Rules after `source-exists` need the source claim and return
/// `None` when it is unknown; rules about the volume return `None` when it is unknown.
const RULES: [(RuleId, Check); 14] = [
    (RuleId::SameNamespace, same_namespace),
    (RuleId::SourceExists, source_exists),
    (RuleId::SourceBound, source_bound),
    (RuleId::SourceDeleting, source_deleting),
    (RuleId::SourceVolume, source_volume),
    (RuleId::CsiSource, csi_source),
    (RuleId::DynamicProvisioning, dynamic_provisioning),
    (RuleId::SameDriver, same_driver),
    (RuleId::VolumeMode, volume_mode),
    (RuleId::Size, size),
    (RuleId::SizeCapacity, size_capacity),
    (RuleId::SourceInUse, source_in_use),
    (RuleId::CloneCapableDriver, clone_capable_driver),
    (RuleId::SourceApiGroup, source_api_group),
];

/// Decides a clone request. `facts` is `None` when the request needs none
/// ([`CloneRequest::needs_facts`] is false).
pub fn decide(request: &CloneRequest, facts: Option<&Facts>, policy: &Policy) -> Verdict {
    let input = Input {
        request,
        facts,
        policy,
    };
    let mut verdict = Verdict::default();
    for (rule, check) in RULES {
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
