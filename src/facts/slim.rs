//! What the caches keep of each object: only the fields the rules read.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Deserialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::ClusterResourceScope;
use serde::de::IgnoredAny;

use crate::lenient::{d_any, lenient_list, lenient_string, lenient_strings};

use crate::rules::{ClaimRef, SourceClaim, SourceVolume, Text, TopologyTerm};

/// Declares a slim wire type for a resource the project has no Rust type for: `Resource`
/// with its group, version, plural and scope, and `meta()` over the few metadata fields kept.
macro_rules! slim_resource {
    ($type:ident, $kind:literal, $group:expr, $version:literal, $plural:literal, $scope:ty) => {
        impl Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// A StorageClass, as far as the rules care.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassInfo {
    pub name: String,
    pub provisioner: String,
    pub is_default: bool,
    /// RFC 3339; the newest default class wins, as in Kubernetes 1.26+.
    pub created: String,
    /// `allowedTopologies`, one map of key to values per term; empty: anywhere.
    pub allowed_topologies: Vec<TopologyTerm>,
    pub parameters: BTreeMap<String, String>,
}

/// A pod that mounts claims and has not finished: its name and the names of the claims it
/// mounts, in one allocation (`name\0claim\0claim`; Kubernetes names hold no NUL). The pods
/// index keeps one per pod of the cluster, so that is one block per pod instead of four.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUse(Box<str>);

impl PodUse {
    pub fn new<'a>(name: &str, claims: impl IntoIterator<Item = &'a str>) -> Self {
        let mut packed = String::from(name);
        for claim in claims {
            packed.push('\0');
            packed.push_str(claim);
        }
        PodUse(packed.into_boxed_str())
    }

    pub fn name(&self) -> &str {
        self.0.split('\0').next().unwrap_or_default()
    }

    /// The claims the pod mounts.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.0.split('\0').skip(1)
    }

    pub fn mounts(&self, claim: &str) -> bool {
        self.claims().any(|mounted| mounted == claim)
    }
}

/// A pod as its watch delivers it, read straight into what `source-in-use` needs: its
/// name, whether it has finished, and the claims it mounts. Everything else of a real pod
/// (containers, env, managedFields) is skipped while parsing instead of being built and
/// dropped, which is most of the time and memory of syncing a large cluster's pods. The
/// API server validates pods against this shape, so a pod that does not fit cannot exist.
#[derive(Clone, Debug, Default)]
pub struct PodClaims {
    metadata: ObjectMeta,
    finished: bool,
    claims: Vec<String>,
}

impl PodClaims {
    /// Kept only while the pod mounts a claim and has not finished.
    pub fn into_use(self) -> Option<PodUse> {
        (!self.finished && !self.claims.is_empty()).then(|| {
            PodUse::new(
                self.metadata.name.as_deref().unwrap_or_default(),
                self.claims.iter().map(String::as_str),
            )
        })
    }
}

impl<'de> Deserialize<'de> for PodClaims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            volumes: Option<Vec<Volume>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Volume {
            persistent_volume_claim: Option<ClaimSource>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ClaimSource {
            claim_name: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Status {
            phase: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Wire {
            metadata: Option<Meta>,
            spec: Option<Spec>,
            status: Option<Status>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let metadata = wire.metadata.unwrap_or_default();
        let phase = wire.status.and_then(|s| s.phase);
        Ok(PodClaims {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                resource_version: metadata.resource_version,
                ..ObjectMeta::default()
            },
            finished: matches!(phase.as_deref(), Some("Succeeded" | "Failed")),
            claims: wire
                .spec
                .and_then(|s| s.volumes)
                .into_iter()
                .flatten()
                .filter_map(|v| v.persistent_volume_claim)
                .map(|c| c.claim_name)
                .collect(),
        })
    }
}

slim_resource!(PodClaims, "Pod", "", "v1", "pods", NamespaceResourceScope);

/// Values that tens of thousands of cached objects share (phases, modes, classes, drivers,
/// sizes, namespaces, zone lists) are kept once: a cache of 50,000 claims then holds a few
/// dozen distinct strings instead of 400,000 small allocations. The set only grows with the
/// distinct values the cluster has, which objects of one cluster repeat.
struct Interner<T: ?Sized>(LazyLock<Mutex<HashSet<Arc<T>>>>);

impl<T: ?Sized + Hash + Eq> Interner<T> {
    const fn new() -> Self {
        Interner(LazyLock::new(|| Mutex::new(HashSet::new())))
    }

    fn get(&self, value: &T) -> Arc<T>
    where
        Arc<T>: for<'a> From<&'a T>,
    {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = set.get(value) {
            return Arc::clone(shared);
        }
        let shared: Arc<T> = Arc::from(value);
        set.insert(Arc::clone(&shared));
        shared
    }
}

static TEXTS: Interner<str> = Interner::new();
static TOPOLOGIES: Interner<[TopologyTerm]> = Interner::new();

/// A value many objects share.
pub fn shared(text: &str) -> Text {
    TEXTS.get(text)
}

/// A value of one object only (a name, a uid): not worth a lookup in the shared set.
fn own(text: String) -> Text {
    Text::from(text)
}

/// An object field read leniently: an object, or `None` for any other JSON value.
fn lenient_some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    d_any(deserializer).map(Some)
}

/// The metadata the caches read of an object: its identity and deletion, nothing else (no
/// labels, annotations or managedFields, which are skipped while parsing).
fn slim_meta<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Meta {
        #[serde(deserialize_with = "lenient_string")]
        name: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        namespace: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        uid: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        resource_version: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        deletion_timestamp: Option<String>,
    }
    let meta: Meta = d_any(deserializer)?;
    Ok(ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        // An RFC 3339 time the API server wrote; one that does not parse reads as absent.
        deletion_timestamp: meta
            .deletion_timestamp
            .and_then(|t| t.parse().ok())
            .map(Time),
        ..ObjectMeta::default()
    })
}

/// A PersistentVolumeClaim as the API server sends it, read straight into what the rules
/// keep: the rest of a claim is skipped while parsing instead of being built and dropped
/// (k8s-openapi's type, behind kube's `DeserializeGuard`, would first buffer each object
/// as a generic value and copy it). The API server validates claims against this shape.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClaimObject {
    #[serde(deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    #[serde(deserialize_with = "lenient_some")]
    spec: Option<ClaimSpecWire>,
    #[serde(deserialize_with = "lenient_some")]
    status: Option<ClaimStatusWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ClaimSpecWire {
    #[serde(deserialize_with = "lenient_string")]
    volume_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    volume_mode: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    storage_class_name: Option<String>,
    #[serde(deserialize_with = "lenient_some")]
    resources: Option<ResourcesWire>,
    #[serde(deserialize_with = "lenient_strings")]
    access_modes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ResourcesWire {
    #[serde(deserialize_with = "lenient_some")]
    requests: Option<StorageWire>,
}

/// A resource list, of which only `storage` is read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct StorageWire {
    #[serde(deserialize_with = "lenient_string")]
    storage: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ClaimStatusWire {
    #[serde(deserialize_with = "lenient_string")]
    phase: Option<String>,
    #[serde(deserialize_with = "lenient_some")]
    capacity: Option<StorageWire>,
}

slim_resource!(
    ClaimObject,
    "PersistentVolumeClaim",
    "",
    "v1",
    "persistentvolumeclaims",
    NamespaceResourceScope
);

impl ClaimObject {
    pub fn slim(self) -> SourceClaim {
        let spec = self.spec.unwrap_or_default();
        let status = self.status.unwrap_or_default();
        SourceClaim {
            uid: self.metadata.uid.map(own),
            phase: status.phase.as_deref().map(shared),
            deletion_timestamp: self
                .metadata
                .deletion_timestamp
                .map(|t| own(t.0.to_string())),
            volume_name: spec.volume_name.map(own),
            volume_mode: spec.volume_mode.as_deref().map(shared),
            requested_storage: spec
                .resources
                .and_then(|r| r.requests?.storage)
                .as_deref()
                .map(shared),
            capacity: status
                .capacity
                .and_then(|c| c.storage)
                .as_deref()
                .map(shared),
            storage_class: spec.storage_class_name.as_deref().map(shared),
            access_modes: (!spec.access_modes.is_empty())
                .then(|| shared(&spec.access_modes.join(","))),
        }
    }
}

/// A PersistentVolume as the API server sends it, read straight into what the rules keep
/// (see [`ClaimObject`]). Of the volume sources, only which one is set is read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct VolumeObject {
    #[serde(deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    #[serde(deserialize_with = "lenient_some")]
    spec: Option<VolumeSpecWire>,
    #[serde(deserialize_with = "lenient_some")]
    status: Option<VolumeStatusWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct VolumeStatusWire {
    #[serde(deserialize_with = "lenient_string")]
    phase: Option<String>,
}

/// The volume's spec, with each volume source other than CSI named once: its field and,
/// as written in YAML, what [`VolumeSpecWire::plugin`] says.
macro_rules! volume_spec_wire {
    ($($source:ident: $yaml:literal),* $(,)?) => {
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(default, rename_all = "camelCase")]
        struct VolumeSpecWire {
            #[serde(deserialize_with = "lenient_some")]
            claim_ref: Option<ClaimRefWire>,
            #[serde(deserialize_with = "lenient_string")]
            volume_mode: Option<String>,
            #[serde(deserialize_with = "lenient_string")]
            storage_class_name: Option<String>,
            #[serde(deserialize_with = "lenient_some")]
            node_affinity: Option<NodeAffinityWire>,
            #[serde(deserialize_with = "lenient_some")]
            csi: Option<CsiWire>,
            // The other volume sources: only whether one is set is read.
            $(#[serde(rename = $yaml)] $source: Option<IgnoredAny>,)*
        }

        impl VolumeSpecWire {
            /// The name of the volume source that is set, as written in YAML.
            fn plugin(&self) -> &'static str {
                if self.csi.is_some() {
                    return "csi";
                }
                $(if self.$source.is_some() {
                    return $yaml;
                })*
                ""
            }
        }
    };
}

volume_spec_wire! {
    host_path: "hostPath", local: "local", nfs: "nfs", flex_volume: "flexVolume",
    aws_elastic_block_store: "awsElasticBlockStore", gce_persistent_disk: "gcePersistentDisk",
    azure_disk: "azureDisk", azure_file: "azureFile", vsphere_volume: "vsphereVolume",
    cinder: "cinder", cephfs: "cephfs", rbd: "rbd", iscsi: "iscsi", fc: "fc",
    glusterfs: "glusterfs", portworx_volume: "portworxVolume", scale_io: "scaleIO",
    storageos: "storageos", quobyte: "quobyte", flocker: "flocker",
    photon_persistent_disk: "photonPersistentDisk",
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ClaimRefWire {
    #[serde(deserialize_with = "lenient_string")]
    namespace: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    uid: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct CsiWire {
    #[serde(deserialize_with = "lenient_string")]
    driver: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct NodeAffinityWire {
    #[serde(deserialize_with = "lenient_some")]
    required: Option<NodeSelectorWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NodeSelectorWire {
    #[serde(deserialize_with = "lenient_list")]
    node_selector_terms: Vec<NodeSelectorTermWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NodeSelectorTermWire {
    #[serde(deserialize_with = "lenient_list")]
    match_expressions: Vec<RequirementWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RequirementWire {
    #[serde(deserialize_with = "lenient_string")]
    key: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    operator: Option<String>,
    #[serde(deserialize_with = "lenient_strings")]
    values: Vec<String>,
}

slim_resource!(
    VolumeObject,
    "PersistentVolume",
    "",
    "v1",
    "persistentvolumes",
    ClusterResourceScope
);

impl VolumeObject {
    pub fn slim(self) -> SourceVolume {
        let spec = self.spec.unwrap_or_default();
        let plugin = spec.plugin();
        // Only `In` expressions name where the volume is, and only they are kept.
        let terms: Vec<TopologyTerm> = spec
            .node_affinity
            .and_then(|a| a.required)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default()
            .into_iter()
            .map(|term| {
                term.match_expressions
                    .into_iter()
                    .filter(|e| e.operator.as_deref() == Some("In"))
                    .filter_map(|e| Some((e.key?, e.values)))
                    .collect::<TopologyTerm>()
            })
            .filter(|term| !term.is_empty())
            .collect();
        SourceVolume {
            name: own(self.metadata.name.unwrap_or_default()),
            phase: self.status.and_then(|s| s.phase).as_deref().map(shared),
            plugin: shared(plugin),
            claim_ref: spec.claim_ref.map(|r| ClaimRef {
                namespace: r.namespace.as_deref().map(shared),
                name: r.name.map(own),
                uid: r.uid.map(own),
            }),
            csi_driver: spec.csi.and_then(|csi| csi.driver).as_deref().map(shared),
            volume_mode: spec.volume_mode.as_deref().map(shared),
            node_affinity: TOPOLOGIES.get(&terms),
            storage_class: spec.storage_class_name.as_deref().map(shared),
        }
    }
}

pub fn slim_class(class: StorageClass) -> ClassInfo {
    let is_default = DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|key| class.annotations().get(*key).is_some_and(|v| v == "true"));
    ClassInfo {
        name: class.name_any(),
        created: class
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        allowed_topologies: class
            .allowed_topologies
            .iter()
            .flatten()
            .map(|term| {
                term.match_label_expressions
                    .iter()
                    .flatten()
                    .map(|e| (e.key.clone(), e.values.clone()))
                    .collect::<TopologyTerm>()
            })
            .filter(|term| !term.is_empty())
            .collect(),
        parameters: class.parameters.unwrap_or_default(),
        provisioner: class.provisioner,
        is_default,
    }
}

#[cfg(test)]
mod tests {
    use super::{PodUse, VolumeObject};

    #[test]
    fn a_volume_says_which_source_it_uses_as_written_in_yaml() {
        let cases = [
            ("csi", "csi"),
            ("hostPath", "hostPath"),
            ("nfs", "nfs"),
            ("awsElasticBlockStore", "awsElasticBlockStore"),
            ("scaleIO", "scaleIO"),
            ("photonPersistentDisk", "photonPersistentDisk"),
            ("somethingNew", ""),
        ];
        for (source, plugin) in cases {
            let volume: VolumeObject = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv-1"},
                "spec": {"capacity": {"storage": "1Gi"}, source: {"path": "/x"}},
            }))
            .expect("a volume");
            assert_eq!(&*volume.slim().plugin, plugin, "spec.{source}");
        }
    }

    #[test]
    fn a_pod_use_is_its_name_and_claims_in_one_block() {
        let pod = PodUse::new("orders-1", ["data", "logs"]);
        assert_eq!(pod.name(), "orders-1");
        assert_eq!(pod.claims().collect::<Vec<_>>(), ["data", "logs"]);
        assert!(pod.mounts("logs"));
        assert!(!pod.mounts("orders-1"), "the name is not a claim");
        assert!(!pod.mounts("dat"));
    }
}
