//! The decision: a pure function of the request (a clone or a restore), the facts about the
//! cluster and the policy. No I/O happens here; the same function serves the webhook and the tests.
//!
//! The rules are one table ([`RULES`]); each rule is one function, next to its message, in
//! `clone.rs`, `snapshot.rs` or `placement.rs`. A message names the objects and
//! values involved and says how to fix the claim: it is what the user reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::lenient::{d_any, lenient_object, lenient_string, lenient_strings};

mod policy;
pub use policy::{Action, CrossNamespace, FailureMode, Policy};

mod clone;
mod fields;
#[doc(hidden)]
pub mod fixtures;
mod placement;
mod snapshot;
mod sources;

use clone::*;
use fields::*;
use placement::*;
use snapshot::*;
use sources::*;

/// The storage provisioner that marks a class as statically provisioned only.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The API group of VolumeSnapshots and VolumeSnapshotContents.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// The API group of VolumeGroupSnapshots.
pub const GROUP_SNAPSHOT_GROUP: &str = "groupsnapshot.storage.k8s.io";

/// The finalizer a VolumeSnapshot carries while a restore from it is under way: the
/// provisioner (v6.1.2, v6.2+) lets further restores from a snapshot being deleted proceed
/// while it is there.
pub const SOURCE_PROTECTION_FINALIZER: &str =
    "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection";

/// What kind of object a data source names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// A PersistentVolumeClaim: the new claim is a clone.
    #[default]
    Claim,
    /// A VolumeSnapshot: the new claim is a restore.
    Snapshot,
    /// A VolumeGroupSnapshot (`groupsnapshot.storage.k8s.io`): there is no group restore.
    GroupSnapshot,
    /// Any other kind: a volume populator must handle it.
    Populator,
}

impl SourceKind {
    /// The Kubernetes kind, as in `spec.dataSource.kind`; `None` for a populator's, which is
    /// whatever the claim names.
    fn fixed_kind(self) -> Option<&'static str> {
        match self {
            SourceKind::Claim => Some("PersistentVolumeClaim"),
            SourceKind::Snapshot => Some("VolumeSnapshot"),
            SourceKind::GroupSnapshot => Some("VolumeGroupSnapshot"),
            SourceKind::Populator => None,
        }
    }

    /// The API group the kind belongs to; `None` for a populator's.
    fn fixed_group(self) -> Option<&'static str> {
        match self {
            SourceKind::Claim => Some(""),
            SourceKind::Snapshot => Some(SNAPSHOT_GROUP),
            SourceKind::GroupSnapshot => Some(GROUP_SNAPSHOT_GROUP),
            SourceKind::Populator => None,
        }
    }

    /// How a message names what the new claim is.
    fn request_noun(self) -> &'static str {
        match self {
            SourceKind::Claim => "clone",
            SourceKind::Snapshot | SourceKind::GroupSnapshot => "restore",
            SourceKind::Populator => "populated claim",
        }
    }
}

/// What a new claim asks for, when it has a data source: a claim (a clone), a VolumeSnapshot
/// (a restore), a VolumeGroupSnapshot or a populator's object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataSourceRequest {
    pub namespace: String,
    /// The source, from `spec.dataSource` or `spec.dataSourceRef`.
    pub source: SourceReference,
    pub spec: ClaimSpec,
}

/// The spec of a claim (or of a StatefulSet's claim template), as far as the webhook reads
/// it: serde fills it from the review and the rules read it as it is, so a field a rule
/// needs is declared here, once. Read tolerantly (anything may be posted to the webhook): a
/// field of an unexpected type reads as absent, and the fields not declared are skipped
/// without being built.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// Boxed, as is `data_source_ref`: the request the rules judge carries the spec across
    /// the lookups, and the references are read before them (into `source`).
    #[serde(default, deserialize_with = "lenient_object")]
    pub data_source: Option<Box<TypedReference>>,
    #[serde(default, deserialize_with = "lenient_object")]
    pub data_source_ref: Option<Box<TypedReference>>,
    /// `spec.volumeMode`; `None` means Filesystem.
    #[serde(default, deserialize_with = "lenient_string")]
    pub volume_mode: Option<String>,
    /// `spec.storageClassName`; `None` means no default class existed at create time.
    #[serde(
        default,
        rename = "storageClassName",
        deserialize_with = "lenient_string"
    )]
    pub storage_class: Option<String>,
    /// `spec.resources.requests.storage`, as written.
    #[serde(default, rename = "resources", deserialize_with = "requested_storage")]
    pub requested_storage: Option<String>,
    /// `spec.accessModes`.
    #[serde(default, deserialize_with = "lenient_strings")]
    pub access_modes: Vec<String>,
    /// Whether `spec.selector` is set (to any object, `{}` included).
    #[serde(default, deserialize_with = "lenient_object")]
    pub selector: Option<Selector>,
    /// `spec.volumeAttributesClassName`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub volume_attributes_class_name: Option<String>,
}

/// `spec.selector`: only its presence counts (the provisioner refuses any selector).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Selector {}

/// `spec.dataSource` or `spec.dataSourceRef`, as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TypedReference {
    #[serde(deserialize_with = "lenient_string")]
    pub api_group: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub namespace: Option<String>,
}

/// `resources.requests.storage` of `resources`.
fn requested_storage<'de, D: Deserializer<'de>>(resources: D) -> Result<Option<String>, D::Error> {
    #[derive(Default, Deserialize)]
    struct Requests {
        #[serde(default, deserialize_with = "lenient_string")]
        storage: Option<String>,
    }
    #[derive(Default, Deserialize)]
    struct Resources {
        #[serde(default, deserialize_with = "d_any")]
        requests: Requests,
    }
    d_any::<_, Resources>(resources).map(|r| r.requests.storage)
}

/// The object named by `spec.dataSource` or `spec.dataSourceRef`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceReference {
    pub kind: SourceKind,
    pub name: String,
    /// Only `dataSourceRef` can name another namespace.
    pub namespace: Option<String>,
    pub api_group: Option<String>,
    /// Which field named the source: `dataSource` or `dataSourceRef`.
    pub field: &'static str,
}

/// How a reference to another namespace is treated (config `crossNamespace`, and
/// `same-namespace: off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrossNamespaceMode {
    /// Refused; nothing of the other namespace is read.
    Closed,
    /// Allowed when a ReferenceGrant in the source's namespace allows it.
    Grant,
    /// Allowed without a check.
    Open,
}

impl DataSourceRequest {
    pub fn is_restore(&self) -> bool {
        self.source.kind == SourceKind::Snapshot
    }

    /// What the new claim is, for messages: a clone, a restore, a populated claim.
    pub fn noun(&self) -> &'static str {
        self.source.kind.request_noun()
    }

    /// A claim or VolumeSnapshot kind in another API group is not that kind at all: only
    /// `source-api-group` applies to it.
    pub fn names_foreign_api_group(&self) -> bool {
        let group = self.source.api_group.as_deref().unwrap_or_default();
        match self.source.kind {
            SourceKind::Claim => !group.is_empty(),
            SourceKind::Snapshot => group != SNAPSHOT_GROUP,
            SourceKind::GroupSnapshot | SourceKind::Populator => false,
        }
    }

    /// The source's kind, as the claim names it.
    pub fn source_kind(&self) -> &str {
        self.source.kind.fixed_kind().unwrap_or_else(|| {
            let reference = match self.source.field {
                "dataSourceRef" => self.spec.data_source_ref.as_deref(),
                _ => self.spec.data_source.as_deref(),
            };
            reference
                .and_then(|r| r.kind.as_deref())
                .unwrap_or_default()
        })
    }

    /// The source's API group (`""` for the core group), as a ReferenceGrant's `to` names it.
    pub fn source_group(&self) -> &str {
        self.source
            .kind
            .fixed_group()
            .unwrap_or_else(|| self.source.api_group.as_deref().unwrap_or_default())
    }

    /// How a message names the source's kind: "claim", or the kind.
    fn source_noun(&self) -> &str {
        match self.source.kind {
            SourceKind::Claim => "claim",
            _ => self.source_kind(),
        }
    }

    /// `Kind.group`, as kubectl names a kind (`Kind` alone for the core group).
    pub fn source_group_kind(&self) -> String {
        match self.source_group() {
            "" => self.source_kind().to_owned(),
            group => format!("{}.{group}", self.source_kind()),
        }
    }

    /// The source's namespace when it is not the claim's own.
    pub fn other_namespace(&self) -> Option<&str> {
        self.source
            .namespace
            .as_deref()
            .filter(|other| *other != self.namespace)
    }

    fn cross_namespace_mode(&self, policy: &Policy) -> CrossNamespaceMode {
        if policy.action(RuleId::SameNamespace) == Action::Off {
            return CrossNamespaceMode::Open;
        }
        match policy.cross_namespace {
            CrossNamespace::Deny => CrossNamespaceMode::Closed,
            CrossNamespace::ReferenceGrant => CrossNamespaceMode::Grant,
            CrossNamespace::Allow => CrossNamespaceMode::Open,
        }
    }

    /// Whether the facts must say if a ReferenceGrant allows the source ([`Facts::grant`]):
    /// the gatherer checks that first, and reads nothing else of the other namespace
    /// without one.
    pub fn needs_grant(&self, policy: &Policy) -> bool {
        self.other_namespace().is_some()
            && self.cross_namespace_mode(policy) == CrossNamespaceMode::Grant
    }

    /// The namespace whose object is the source, or `None` when the source is in another
    /// namespace and `same-namespace` refuses that: the rules then do not look at (and the
    /// messages reveal nothing about) another namespace's objects.
    pub fn source_namespace(&self, policy: &Policy) -> Option<&str> {
        match self.other_namespace() {
            None => Some(&self.namespace),
            Some(other) => {
                (self.cross_namespace_mode(policy) != CrossNamespaceMode::Closed).then_some(other)
            }
        }
    }

    /// Whether the decision needs facts from the cluster at all.
    pub fn needs_facts(&self, policy: &Policy) -> bool {
        !self.names_foreign_api_group() && self.source_namespace(policy).is_some()
    }
}

/// A string the caches hold: shared, since tens of thousands of cached objects carry the
/// same few phases, modes, classes, drivers and sizes (the caches intern them), and cheap
/// to copy out of a cache into the facts of a review.
pub type Text = Arc<str>;

/// What the rules read about the source claim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceClaim {
    pub uid: Option<Text>,
    pub phase: Option<Text>,
    pub deletion_timestamp: Option<Text>,
    pub volume_name: Option<Text>,
    pub volume_mode: Option<Text>,
    pub requested_storage: Option<Text>,
    pub capacity: Option<Text>,
    /// `spec.storageClassName`; `None` (nil) cannot be cloned by the provisioner.
    pub storage_class: Option<Text>,
    /// `spec.accessModes`, joined by `,` (one shared string for the few combinations).
    pub access_modes: Option<Text>,
}

/// A topology term: label key -> the values it allows. A StorageClass `allowedTopologies`
/// term (`matchLabelExpressions`), or a PV `nodeAffinity.required` term (only its `In`
/// expressions: the other operators do not name a place a volume can be put).
pub type TopologyTerm = BTreeMap<String, Vec<String>>;

/// What the rules read about the source claim's PersistentVolume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceVolume {
    pub name: Text,
    pub phase: Option<Text>,
    pub claim_ref: Option<ClaimRef>,
    /// `spec.csi.driver`; `None` for in-tree and FlexVolume volumes.
    pub csi_driver: Option<Text>,
    /// The volume source field that is set, e.g. `csi`, `hostPath`, `awsElasticBlockStore`;
    /// empty when none that pvc-clone-guard knows is set.
    pub plugin: Text,
    pub volume_mode: Option<Text>,
    /// `spec.storageClassName` of the PV.
    pub storage_class: Option<Text>,
    /// `spec.nodeAffinity.required.nodeSelectorTerms` (any one of them holds the volume).
    pub node_affinity: Arc<[TopologyTerm]>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimRef {
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    pub uid: Option<Text>,
}

/// The StorageClass the new claim would be provisioned with.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassFact {
    /// The claim's class, or the default class when it names none.
    Found(FoundClass),
    /// The claim names a class that does not exist.
    Missing(String),
    /// The claim names no class and no class is marked default.
    NoDefault,
    /// `storageClassName: ""`: static binding only.
    Disabled,
}

/// A StorageClass that exists: what the rules read of it.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundClass {
    pub name: String,
    pub provisioner: String,
    /// The claim names no class and this is the default one.
    pub is_default: bool,
    /// `allowedTopologies`; empty: anywhere.
    pub allowed_topologies: Vec<TopologyTerm>,
    pub parameters: BTreeMap<String, String>,
}

/// The pods (not Succeeded or Failed) that mount the source claim.
#[derive(Clone, Debug, PartialEq)]
pub enum PodsFact {
    Known(Vec<String>),
    /// The pods could not be read; the cause, for the warning.
    Unknown(String),
}

impl Default for PodsFact {
    fn default() -> Self {
        PodsFact::Known(Vec::new())
    }
}

/// The VolumeSnapshot a restore names, in the source's namespace.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per review, built once: boxing would only add an allocation"
)]
pub enum SnapshotFact {
    /// The cluster does not serve `snapshot.storage.k8s.io/v1` VolumeSnapshots.
    NotServed,
    #[default]
    Missing,
    Found {
        snapshot: SnapshotInfo,
        /// The content named by `status.boundVolumeSnapshotContentName`; `None` when it is
        /// empty or names a content that does not exist.
        content: Option<ContentInfo>,
    },
}

/// What the rules read about a VolumeSnapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotInfo {
    pub uid: Option<String>,
    pub deletion_timestamp: Option<String>,
    /// Carries [`SOURCE_PROTECTION_FINALIZER`]: a restore from it is under way.
    pub protected: bool,
    /// `status.boundVolumeSnapshotContentName`.
    pub bound_content_name: Option<String>,
    /// `status.readyToUse`.
    pub ready_to_use: Option<bool>,
    /// `status.restoreSize`, as written.
    pub restore_size: Option<String>,
}

/// What the rules read about a VolumeSnapshotContent.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentInfo {
    pub name: String,
    /// `spec.driver`.
    pub driver: String,
    /// `status.snapshotHandle`.
    pub snapshot_handle: Option<String>,
    /// `spec.sourceVolumeMode`.
    pub source_volume_mode: Option<String>,
    /// Annotated `snapshot.storage.kubernetes.io/allow-volume-mode-change: "true"`.
    pub allow_volume_mode_change: bool,
    /// `spec.volumeSnapshotRef`.
    pub snapshot_ref: ClaimRef,
}

/// Whether a ReferenceGrant allows a cross-namespace source (`crossNamespace:
/// reference-grant` only).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GrantFact {
    /// Not asked: the source is in the claim's namespace, or the mode is not
    /// `reference-grant`.
    #[default]
    NotChecked,
    /// The first grant (by name) that allows it.
    Allowed {
        grant: String,
    },
    NotFound,
}

/// Whether a VolumePopulator handles a populator source's kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PopulatorFact {
    /// Not asked (not a populator source, or no rule reads it): nothing to say.
    #[default]
    NotChecked,
    /// The cluster does not serve `populator.storage.k8s.io`.
    NotServed,
    /// The VolumePopulators could not be read; the cause.
    Unknown(String),
    Registered,
    NotRegistered,
}

/// The VolumeGroupSnapshot a claim names, in the source's namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GroupSnapshotFact {
    /// Not known: not asked, the API is not served, or it could not be read.
    #[default]
    Unknown,
    Missing,
    /// The names of its member VolumeSnapshots, sorted (may be empty).
    Found {
        members: Vec<String>,
    },
}

/// The VolumeAttributesClass a clone or restore names (`spec.volumeAttributesClassName`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum AttributesClassFact {
    /// Not asked (no name, or no rule reads it), or the API is not served: nothing to say.
    #[default]
    NotChecked,
    Missing,
    /// Its `driverName`.
    Found {
        driver: String,
    },
}

/// A ReferenceGrant (`gateway.networking.k8s.io`), reduced to what the matching reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferenceGrantInfo {
    pub name: String,
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    /// Absent or empty: every object of the kind.
    pub name: Option<String>,
}

/// Whether one of `grants` (listed in the source's namespace) lets the claim use its source,
/// matched as the provisioner does: a `from` entry with group `""`, kind
/// PersistentVolumeClaim and the claim's namespace, and, in the same grant, a `to` entry with
/// the source's group and kind and a name that is absent, empty or the source's.
pub fn match_grant(grants: &[ReferenceGrantInfo], request: &DataSourceRequest) -> GrantFact {
    let source = &request.source;
    let allows = |grant: &&ReferenceGrantInfo| {
        grant.from.iter().any(|from| {
            from.group.is_empty()
                && Some(from.kind.as_str()) == SourceKind::Claim.fixed_kind()
                && from.namespace == request.namespace
        }) && grant.to.iter().any(|to| {
            to.group == request.source_group()
                && to.kind == request.source_kind()
                && to
                    .name
                    .as_deref()
                    .is_none_or(|name| name.is_empty() || name == source.name)
        })
    };
    grants
        .iter()
        .filter(allows)
        .map(|grant| grant.name.as_str())
        .min()
        .map_or(GrantFact::NotFound, |grant| GrantFact::Allowed {
            grant: grant.to_owned(),
        })
}

/// Everything the rules know about the cluster, gathered before the decision. The default
/// is "nothing found": no source, no class, no snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// `None`: the source claim does not exist (clones).
    pub source: Option<SourceClaim>,
    /// `None`: the source names no volume, or its volume does not exist (clones).
    pub volume: Option<SourceVolume>,
    pub class: ClassFact,
    /// Pods that mount the source claim (clones).
    pub pods: PodsFact,
    /// StorageClasses provisioned by the source's CSI driver (the source PV's for a clone,
    /// the snapshot content's for a restore), for the hints.
    pub classes_for_source_driver: Vec<String>,
    /// `parameters` of the source PV's StorageClass; `None` when it has none or it does
    /// not exist (clones).
    pub source_class_parameters: Option<BTreeMap<String, String>>,
    /// The VolumeSnapshot and its content (restores).
    pub snapshot: SnapshotFact,
    pub grant: GrantFact,
    /// Whether a VolumePopulator handles the source's kind (populator sources).
    pub populator: PopulatorFact,
    /// The VolumeGroupSnapshot and its members (group snapshot sources).
    pub group_snapshot: GroupSnapshotFact,
    /// The VolumeAttributesClass the claim names (clones and restores).
    pub attributes_class: AttributesClassFact,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            source: None,
            volume: None,
            class: ClassFact::NoDefault,
            pods: PodsFact::default(),
            classes_for_source_driver: Vec::new(),
            source_class_parameters: None,
            snapshot: SnapshotFact::default(),
            grant: GrantFact::default(),
            populator: PopulatorFact::default(),
            group_snapshot: GroupSnapshotFact::default(),
            attributes_class: AttributesClassFact::default(),
        }
    }
}

/// One violated rule and what the user is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub message: String,
    /// What the finding is about when one review stands for several claims (a
    /// StatefulSet's `volumeClaimTemplates[0] "data"`); `None` for a claim's own review.
    pub subject: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
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

    /// Adds `other`'s findings after this verdict's, each about `subject`: one verdict for
    /// a review that stands for several claims, its lines grouped by claim.
    pub fn append(&mut self, other: Verdict, subject: &str) {
        let about = |mut finding: Finding| {
            finding.subject = Some(subject.to_owned());
            finding
        };
        self.denials.extend(other.denials.into_iter().map(about));
        self.warnings.extend(other.warnings.into_iter().map(about));
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
    request: &'a DataSourceRequest,
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

    /// The claim's StorageClass, when it exists.
    fn class(&self) -> Option<&'a FoundClass> {
        match &self.facts?.class {
            ClassFact::Found(class) => Some(class),
            ClassFact::Missing(_) | ClassFact::NoDefault | ClassFact::Disabled => None,
        }
    }

    /// The snapshot and its content, when the snapshot exists.
    fn snapshot(&self) -> Option<(&'a SnapshotInfo, Option<&'a ContentInfo>)> {
        match &self.facts?.snapshot {
            SnapshotFact::Found { snapshot, content } => Some((snapshot, content.as_ref())),
            SnapshotFact::NotServed | SnapshotFact::Missing => None,
        }
    }

    /// `Some` when the source exists: the claim of a clone, the snapshot of a restore.
    fn source_exists(&self) -> Option<()> {
        match self.request.source.kind {
            SourceKind::Claim => self.source().map(drop),
            SourceKind::Snapshot => self.snapshot().map(drop),
            SourceKind::GroupSnapshot | SourceKind::Populator => None,
        }
    }

    /// The CSI driver of the source: the PV's for a clone, the content's for a restore.
    fn source_driver(&self) -> Option<&'a str> {
        match self.request.source.kind {
            SourceKind::Claim => self.volume()?.csi_driver.as_deref(),
            SourceKind::Snapshot => Some(self.snapshot()?.1?.driver.as_str()),
            SourceKind::GroupSnapshot | SourceKind::Populator => None,
        }
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

/// What a violated rule says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Said {
    /// A violation: the rule's action refuses the claim or warns.
    Violation(String),
    /// A warning whatever the rule's action (unless `off`): the claim will be provisioned,
    /// but the user should know (e.g. a snapshot that is going away).
    Notice(String),
}

/// What a rule's function returns: a violation's message, or [`Said`] when it can also
/// give a notice.
trait IntoSaid {
    fn into_said(self) -> Option<Said>;
}

impl IntoSaid for Option<String> {
    fn into_said(self) -> Option<Said> {
        self.map(Said::Violation)
    }
}

impl IntoSaid for Option<Said> {
    fn into_said(self) -> Option<Said> {
        self
    }
}

type Check = fn(&Input) -> Option<Said>;

/// Which requests a rule judges, by the kind of their source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    Clone,
    Restore,
    /// Clones and restores.
    Both,
    GroupSnapshot,
    Populator,
    /// Every data source.
    Any,
}

impl Applies {
    pub fn covers(self, kind: SourceKind) -> bool {
        match self {
            Applies::Clone => kind == SourceKind::Claim,
            Applies::Restore => kind == SourceKind::Snapshot,
            Applies::Both => matches!(kind, SourceKind::Claim | SourceKind::Snapshot),
            Applies::GroupSnapshot => kind == SourceKind::GroupSnapshot,
            Applies::Populator => kind == SourceKind::Populator,
            Applies::Any => true,
        }
    }
}

/// A fact of the cluster that rules read. The gathering reads (and watches) the pods and
/// the snapshots only while a rule that needs them is on ([`Policy::reads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// The source claim.
    Claim,
    /// The source claim's PersistentVolume.
    Volume,
    /// The StorageClasses: the clone's, the source's, those of the source's driver.
    Class,
    /// The pods that mount the source claim.
    Pods,
    /// The VolumeSnapshot and its VolumeSnapshotContent.
    Snapshot,
    /// The ReferenceGrants of the source's namespace (`crossNamespace: reference-grant`).
    Grants,
    /// The VolumePopulators (`populator.storage.k8s.io`).
    Populators,
    /// The VolumeGroupSnapshot and its member VolumeSnapshots.
    GroupSnapshot,
    /// The VolumeAttributesClass a claim names.
    AttributesClass,
}

/// Whether a rule can be on under a policy: some rules have nothing to check until a
/// setting gives them something.
type Switch = fn(&Policy) -> bool;

/// Every rule: on whenever its action is not `off`.
fn always(_: &Policy) -> bool {
    true
}

/// `clone-capable-driver`: on once a list of clone-capable drivers is configured.
fn drivers_listed(policy: &Policy) -> bool {
    !policy.clone_capable_drivers.is_empty()
}

/// A row of [`RULES`].
pub struct Rule {
    pub id: RuleId,
    /// The id users see in messages, the configuration and the metrics.
    pub name: &'static str,
    /// The action when the configuration does not name it (and [`Rule::switched_on`] says
    /// it can be on).
    pub default: Action,
    pub applies: Applies,
    /// What the rule reads of the cluster.
    pub needs: &'static [Fact],
    /// What turns the rule on besides its action.
    pub switched_on: Switch,
    check: Check,
    /// What a user reads when the rule is violated (without the `[id]` prefix); the tests
    /// hold it equal to what the rule says, and the README shows it.
    pub example: &'static str,
}

/// Declares [`RuleId`] and [`RULES`] from one list, so that an id, its default, its order,
/// its facts, its switch, its function and its example cannot drift apart.
macro_rules! rule_table {
    ($($variant:ident => $name:literal, $default:ident, $applies:ident, [$($fact:ident),*], $switch:path, $check:path, $example:expr;)+) => {
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
            needs: &[$(Fact::$fact),*],
            switched_on: $switch,
            check: |input| IntoSaid::into_said($check(input)),
            example: $example,
        }),+];
    };
}

// One row a rule, in report order:
// id => name, default action, what it judges, the facts it reads, what turns it on, its check, its example;
rule_table! {
    SameNamespace => "same-namespace", Deny, Any, [Grants], always, same_namespace, "dataSourceRef names claim \"data\" in namespace \"prod\", but this claim is in namespace \"dev\"; a clone must be created in its source's namespace: create this claim in namespace \"prod\"";
    SourceExists => "source-exists", Deny, Clone, [Claim], always, source_exists, "source claim \"nope\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name";
    SourceBound => "source-bound", Deny, Clone, [Claim], always, source_bound, "source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone";
    SourceDeleting => "source-deleting", Deny, Clone, [Claim], always, source_deleting, "source claim \"data\" is being deleted (since 2026-11-21T10:00:00Z); clone a claim that is not being deleted";
    SourceVolume => "source-volume", Deny, Clone, [Claim, Volume], always, source_volume, "PersistentVolume \"pv-1\" is bound to claim \"dev/other\", not to source claim \"dev/data\"; repair the volume's binding or clone another claim";
    SourceClass => "source-class", Deny, Clone, [Claim], always, source_class, "source claim \"data\" has no storageClassName, and the CSI provisioner refuses to clone such a claim; clone a claim that has a StorageClass";
    CsiSource => "csi-source", Deny, Clone, [Volume], always, csi_source, "source volume \"pv-1\" is not a CSI volume (it uses hostPath), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead";
    DynamicProvisioning => "dynamic-provisioning", Deny, Both, [Class], always, dynamic_provisioning, "StorageClass \"local-disks\" has provisioner kubernetes.io/no-provisioner, which cannot provision a clone; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    SameDriver => "same-driver", Deny, Clone, [Volume, Class], always, same_driver, "StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"pv-1\" belongs to CSI driver ebs.csi.aws.com; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    VolumeMode => "volume-mode", Deny, Clone, [Claim, Volume], always, volume_mode, "source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block";
    Size => "size", Deny, Clone, [Claim], always, size, "this claim requests 1000Mi but source claim \"data\" requests 1Gi; request at least 1Gi";
    SizeCapacity => "size-capacity", Warn, Clone, [Claim], always, size_capacity, "source claim \"data\" holds 10Gi (its request: 8Gi); some drivers refuse a smaller clone: request 10Gi";
    SourceInUse => "source-in-use", Warn, Clone, [Pods], always, source_in_use, "source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent";
    CloneCapableDriver => "clone-capable-driver", Deny, Clone, [Volume, Class], drivers_listed, clone_capable_driver, "CSI driver nfs.csi.k8s.io is not in the configured list of clone-capable drivers (ebs.csi.aws.com, pd.csi.storage.gke.io); clone a volume of one of those drivers, or ask an administrator to add nfs.csi.k8s.io to the list";
    SourceApiGroup => "source-api-group", Deny, Both, [], always, source_api_group, "spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\"";
    SnapshotExists => "snapshot-exists", Deny, Restore, [Snapshot], always, snapshot_exists, "VolumeSnapshot \"snap-1\" does not exist in namespace \"dev\"; create it first, or fix spec.dataSource.name";
    SnapshotDeleting => "snapshot-deleting", Deny, Restore, [Snapshot], always, snapshot_deleting, "VolumeSnapshot \"snap-1\" is being deleted (since 2026-11-21T10:00:00Z); restore from a snapshot that is not being deleted";
    SnapshotBound => "snapshot-bound", Deny, Restore, [Snapshot], always, snapshot_bound, "VolumeSnapshot \"snap-1\" is not bound to a VolumeSnapshotContent (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim";
    SnapshotDriver => "snapshot-driver", Deny, Restore, [Snapshot, Class], always, snapshot_driver, "VolumeSnapshot \"snap-1\" was taken by CSI driver ebs.csi.aws.com but StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\"";
    SnapshotReady => "snapshot-ready", Deny, Restore, [Snapshot], always, snapshot_ready, "VolumeSnapshot \"snap-1\" is not ready to use (status.readyToUse is false); wait until it is, then create the claim";
    RestoreSize => "restore-size", Deny, Restore, [Snapshot], always, restore_size, "this claim requests 100Mi but snapshot \"snap-1\" needs at least 1Gi (its restoreSize); request at least 1Gi";
    SnapshotVolumeMode => "snapshot-volume-mode", Deny, Restore, [Snapshot], always, snapshot_volume_mode, "VolumeSnapshot \"snap-1\" was taken of a Block volume but this claim asks for Filesystem; set spec.volumeMode: Block, or annotate VolumeSnapshotContent \"snapcontent-1\" with snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\"";
    GroupSnapshot => "group-snapshot", Deny, GroupSnapshot, [GroupSnapshot], always, group_snapshot, "spec.dataSource names VolumeGroupSnapshot \"group-1\", but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own: \"snap-a\", \"snap-b\"";
    Populator => "populator", Deny, Populator, [Populators], always, populator, "spec.dataSourceRef names kind Hello of apiGroup \"hello.example.com\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of Hello, or fix kind and apiGroup";
    Selector => "selector", Deny, Both, [], always, selector, "this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to clone claim \"data\"";
    VolumeAttributesClass => "volume-attributes-class", Deny, Both, [AttributesClass, Class], always, volume_attributes_class, "VolumeAttributesClass \"gold\" is for CSI driver pd.csi.storage.gke.io but StorageClass \"gp3\" is provisioned by ebs.csi.aws.com; set spec.volumeAttributesClassName to a class of driver ebs.csi.aws.com";
    Topology => "topology", Warn, Clone, [Volume, Class], always, topology, "StorageClass \"gp3-west\" allows topology.kubernetes.io/zone in [us-west-2a] but source volume \"pv-1\" is in [us-east-1a]; most drivers clone only in the source's zone";
    ClassParameters => "class-parameters", Warn, Clone, [Volume, Class], always, class_parameters, "StorageClass \"gp3\" and the source's class \"gp3-encrypted\" differ in parameters encrypted, kmsKeyId; the clone may not mount";
    AccessModes => "access-modes", Warn, Clone, [Claim], always, access_modes, "this claim asks for ReadWriteMany but source claim \"data\" is ReadWriteOnce; block drivers refuse that";
    SourceNode => "source-node", Warn, Clone, [Volume], always, source_node, "source volume \"pv-1\" is on node \"node-1\" only; node-local drivers clone only there (the clone's pods too)";
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

/// Decides a request with a data source. `facts` is `None` when the request needs none
/// ([`DataSourceRequest::needs_facts`] is false).
pub fn decide(request: &DataSourceRequest, facts: Option<&Facts>, policy: &Policy) -> Verdict {
    let input = Input {
        request,
        facts,
        policy,
    };
    // Without a grant for a cross-namespace source, nothing of its namespace is judged.
    let grant_missing = request.needs_grant(policy)
        && !matches!(facts.map(|f| &f.grant), Some(GrantFact::Allowed { .. }));
    let mut verdict = Verdict::default();
    for rule in RULES {
        let action = policy.action(rule.id);
        if action == Action::Off {
            continue;
        }
        if !rule.applies.covers(request.source.kind) {
            continue;
        }
        // A claim or snapshot kind of a foreign API group is not one: nothing else applies.
        if request.names_foreign_api_group() && rule.id != RuleId::SourceApiGroup {
            continue;
        }
        if grant_missing && rule.id != RuleId::SameNamespace {
            continue;
        }
        let (message, action) = match (rule.check)(&input) {
            None => continue,
            Some(Said::Violation(message)) => (message, action),
            Some(Said::Notice(message)) => (message, Action::Warn),
        };
        let finding = Finding {
            rule: rule.id,
            message,
            subject: None,
        };
        match action {
            Action::Deny => verdict.denials.push(finding),
            Action::Warn => verdict.warnings.push(finding),
            Action::Off => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
