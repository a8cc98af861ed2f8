//! The decision: a pure function of the clone request, the facts about the cluster and the
//! policy. No I/O happens here; the same function serves the webhook and the tests.
//!
//! Each rule is one function below, next to its message. A message names the objects and
//! values involved and says how to fix the claim: it is what the user reads.

use std::cmp::Ordering;
use std::fmt;

use crate::config::{Action, Policy, RuleId};
use crate::quantity::{self, Quantity};

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

fn same_namespace(input: &Input) -> Option<String> {
    let request = input.request;
    let other = request.source.namespace.as_deref()?;
    (other != request.namespace).then(|| {
        format!(
            "{field} names claim {name:?} in namespace {other:?}, but this claim is in namespace {own:?}; \
             a clone must be created in its source's namespace: create this claim in namespace {other:?}",
            field = request.source.field,
            name = request.source.name,
            own = request.namespace,
        )
    })
}

fn source_exists(input: &Input) -> Option<String> {
    let facts = input.facts?;
    let namespace = input.request.source_namespace(input.policy)?;
    facts.source.is_none().then(|| {
        format!(
            "source claim {name:?} does not exist in namespace {namespace:?}; \
             create it first, or fix spec.{field}.name",
            name = input.source_name(),
            field = input.request.source.field,
        )
    })
}

fn source_bound(input: &Input) -> Option<String> {
    let source = input.source()?;
    let state = match source.phase.as_deref() {
        Some("Bound") => return None,
        Some(phase) if !phase.is_empty() => format!("is {phase}"),
        _ => "has no phase".to_owned(),
    };
    Some(format!(
        "source claim {name:?} {state}, not Bound; wait until it is Bound, then create the clone",
        name = input.source_name(),
    ))
}

fn source_deleting(input: &Input) -> Option<String> {
    let since = input.source()?.deletion_timestamp.as_deref()?;
    Some(format!(
        "source claim {name:?} is being deleted (since {since}); clone a claim that is not being deleted",
        name = input.source_name(),
    ))
}

fn source_volume(input: &Input) -> Option<String> {
    let source = input.source()?;
    let name = input.source_name();
    let Some(volume_name) = source.volume_name.as_deref().filter(|v| !v.is_empty()) else {
        // A claim that is not Bound has no volume yet: `source-bound` already says so.
        return (source.phase.as_deref() == Some("Bound")).then(|| {
            format!(
                "source claim {name:?} is Bound but names no PersistentVolume (spec.volumeName is empty); \
                 repair or recreate the source claim"
            )
        });
    };
    let Some(volume) = input.volume() else {
        return Some(format!(
            "PersistentVolume {volume_name:?} of source claim {name:?} does not exist; \
             restore the volume or clone another claim"
        ));
    };
    let namespace = input.request.source_namespace(input.policy)?;
    let expected = format!("{namespace}/{name}");
    let Some(claim_ref) = volume.claim_ref.as_ref() else {
        return Some(format!(
            "PersistentVolume {volume_name:?} has no claimRef, so it does not belong to source claim {expected:?}; \
             repair the volume's binding or clone another claim"
        ));
    };
    let bound_to = format!(
        "{}/{}",
        claim_ref.namespace.as_deref().unwrap_or(""),
        claim_ref.name.as_deref().unwrap_or("")
    );
    if bound_to != expected {
        return Some(format!(
            "PersistentVolume {volume_name:?} is bound to claim {bound_to:?}, not to source claim {expected:?}; \
             repair the volume's binding or clone another claim"
        ));
    }
    if let (Some(ref_uid), Some(uid)) = (claim_ref.uid.as_deref(), source.uid.as_deref())
        && ref_uid != uid
    {
        return Some(format!(
            "PersistentVolume {volume_name:?} belongs to an earlier claim {expected:?} (uid {ref_uid}), \
             not to the current one (uid {uid}); repair the volume's binding or clone another claim"
        ));
    }
    let phase = volume.phase.as_deref().unwrap_or("");
    (phase != "Bound").then(|| {
        let state = if phase.is_empty() {
            "without a phase"
        } else {
            phase
        };
        format!(
            "PersistentVolume {volume_name:?} of source claim {name:?} is {state}, not Bound; \
             repair the volume or clone another claim"
        )
    })
}

fn csi_source(input: &Input) -> Option<String> {
    let volume = input.volume()?;
    if volume.csi_driver.is_some() {
        return None;
    }
    let uses = match volume.plugin.as_str() {
        "" => String::new(),
        plugin => format!(" (it uses {plugin})"),
    };
    Some(format!(
        "source volume {name:?} is not a CSI volume{uses}, and only CSI volumes can be cloned; \
         copy the data into a claim of a CSI StorageClass instead",
        name = volume.name,
    ))
}

fn dynamic_provisioning(input: &Input) -> Option<String> {
    input.source()?;
    let problem = match &input.facts?.class {
        ClassFact::Found { provisioner, .. } if provisioner != NO_PROVISIONER => return None,
        ClassFact::Found { name, .. } => format!(
            "StorageClass {name:?} has provisioner {NO_PROVISIONER}, which cannot provision a clone"
        ),
        ClassFact::Missing(name) => format!("StorageClass {name:?} does not exist"),
        ClassFact::NoDefault => {
            "this claim names no StorageClass and the cluster has no default StorageClass".to_owned()
        }
        ClassFact::Disabled => {
            "storageClassName is \"\", which turns off dynamic provisioning, and a clone must be provisioned"
                .to_owned()
        }
    };
    Some(format!("{problem}; {hint}", hint = input.class_hint()))
}

fn same_driver(input: &Input) -> Option<String> {
    input.source()?;
    let ClassFact::Found {
        name,
        provisioner,
        is_default,
    } = &input.facts?.class
    else {
        return None;
    };
    let driver = input.source_driver()?;
    if provisioner == driver || provisioner == NO_PROVISIONER {
        return None;
    }
    let which = if *is_default {
        "the default StorageClass"
    } else {
        "StorageClass"
    };
    Some(format!(
        "{which} {name:?} is provisioned by {provisioner} but source volume {volume:?} belongs to CSI driver {driver}; \
         {hint}",
        volume = input.volume().map(|v| v.name.as_str()).unwrap_or_default(),
        hint = input.class_hint(),
    ))
}

fn volume_mode(input: &Input) -> Option<String> {
    let source = input.source()?;
    let source_mode = input
        .volume()
        .and_then(|v| v.volume_mode.as_deref())
        .or(source.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let clone_mode = input.request.volume_mode.as_deref().unwrap_or("Filesystem");
    (source_mode != clone_mode).then(|| {
        format!(
            "source claim {name:?} is {source_mode} but this claim asks for {clone_mode}; \
             set spec.volumeMode: {source_mode}",
            name = input.source_name(),
        )
    })
}

/// The source's request, parsed; `Err` carries the message when it cannot be compared.
fn source_request<'a>(input: &Input<'a>) -> Option<Result<(Quantity, &'a str), String>> {
    let text = input.source()?.requested_storage.as_deref()?;
    Some(quantity::parse(text).map(|q| (q, text)).map_err(|e| {
        format!(
            "source claim {:?} requests {text:?}, which is not a valid quantity ({e})",
            input.source_name()
        )
    }))
}

fn size(input: &Input) -> Option<String> {
    let (source_size, source_text) = match source_request(input)? {
        Ok(parsed) => parsed,
        Err(message) => {
            return Some(format!(
                "{message}; the size of the clone cannot be checked"
            ));
        }
    };
    let name = input.source_name();
    let fix = format!("request at least {source_text}");
    let Some(text) = input.request.requested_storage.as_deref() else {
        return Some(format!(
            "this claim requests no storage (spec.resources.requests.storage) but source claim {name:?} \
             requests {source_text}; {fix}"
        ));
    };
    match quantity::parse(text) {
        Err(e) => Some(format!(
            "this claim requests {text:?}, which is not a valid quantity ({e}); {fix}"
        )),
        Ok(requested) if requested < source_size => Some(format!(
            "this claim requests {text} but source claim {name:?} requests {source_text}; {fix}"
        )),
        Ok(_) => None,
    }
}

fn size_capacity(input: &Input) -> Option<String> {
    let (source_size, source_text) = source_request(input)?.ok()?;
    let capacity_text = input.source()?.capacity.as_deref()?;
    let capacity = quantity::parse(capacity_text).ok()?;
    let requested = quantity::parse(input.request.requested_storage.as_deref()?).ok()?;
    (requested >= source_size && requested.cmp(&capacity) == Ordering::Less).then(|| {
        format!(
            "source claim {name:?} holds {capacity_text} (its request: {source_text}); \
             some drivers refuse a smaller clone: request {capacity_text}",
            name = input.source_name(),
        )
    })
}

fn source_in_use(input: &Input) -> Option<String> {
    input.source()?;
    let pods = &input.facts?.pods_using_source;
    let first = pods.first()?;
    let more = match pods.len() {
        1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    Some(format!(
        "source claim {name:?} is mounted by pod {first:?}{more}; the clone is only crash-consistent",
        name = input.source_name(),
    ))
}

fn clone_capable_driver(input: &Input) -> Option<String> {
    input.source()?;
    let driver = input.source_driver().or(match &input.facts?.class {
        ClassFact::Found { provisioner, .. } => Some(provisioner.as_str()),
        _ => None,
    })?;
    let allowed = &input.policy.clone_capable_drivers;
    (!allowed.iter().any(|d| d == driver)).then(|| {
        format!(
            "CSI driver {driver} is not in the configured list of clone-capable drivers ({list}); \
             clone a volume of one of those drivers, or ask an administrator to add {driver} to the list",
            list = allowed.join(", "),
        )
    })
}

fn source_api_group(input: &Input) -> Option<String> {
    let source = &input.request.source;
    let group = source.api_group.as_deref().filter(|g| !g.is_empty())?;
    Some(format!(
        "spec.{field} names kind PersistentVolumeClaim with apiGroup {group:?}, but claims belong to the core API group; \
         remove apiGroup to clone claim {name:?}",
        field = source.field,
        name = source.name,
    ))
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
