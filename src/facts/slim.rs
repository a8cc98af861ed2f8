//! What the caches keep of each object: only the fields the rules read.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Deserialize;

use crate::rules::{ClaimRef, SourceClaim, SourceVolume, Text, TopologyTerm};

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

/// A pod that mounts claims and has not finished.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUse {
    pub name: String,
    pub claims: Vec<String>,
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
        (!self.finished && !self.claims.is_empty()).then(|| PodUse {
            name: self.metadata.name.unwrap_or_default(),
            claims: self.claims,
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

impl Resource for PodClaims {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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

pub fn slim_claim(claim: PersistentVolumeClaim) -> SourceClaim {
    let spec = claim.spec.unwrap_or_default();
    let status = claim.status.unwrap_or_default();
    SourceClaim {
        uid: claim.metadata.uid.map(own),
        phase: status.phase.as_deref().map(shared),
        deletion_timestamp: claim
            .metadata
            .deletion_timestamp
            .map(|t| own(t.0.to_string())),
        volume_name: spec.volume_name.map(own),
        volume_mode: spec.volume_mode.as_deref().map(shared),
        requested_storage: spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").map(|q| shared(&q.0))),
        capacity: status
            .capacity
            .and_then(|c| c.get("storage").map(|q| shared(&q.0))),
        storage_class: spec.storage_class_name.as_deref().map(shared),
    }
}

pub fn slim_volume(volume: PersistentVolume) -> SourceVolume {
    let name = own(volume.name_any());
    let spec = volume.spec.unwrap_or_default();
    let node_affinity = TOPOLOGIES.get(&required_topology(&spec));
    SourceVolume {
        name,
        phase: volume.status.and_then(|s| s.phase).as_deref().map(shared),
        plugin: shared(volume_plugin(&spec)),
        claim_ref: spec.claim_ref.map(|r| ClaimRef {
            namespace: r.namespace.as_deref().map(shared),
            name: r.name.map(own),
            uid: r.uid.map(own),
        }),
        csi_driver: spec.csi.map(|csi| shared(&csi.driver)),
        volume_mode: spec.volume_mode.as_deref().map(shared),
        node_affinity,
        storage_class: spec.storage_class_name.as_deref().map(shared),
    }
}

/// The PV's required node affinity, one map of key to values per node selector term.
/// Only `In` expressions name where the volume is, and only they are kept.
fn required_topology(spec: &PersistentVolumeSpec) -> Vec<TopologyTerm> {
    let Some(required) = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
    else {
        return Vec::new();
    };
    required
        .node_selector_terms
        .iter()
        .map(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .filter(|e| e.operator == "In")
                .map(|e| (e.key.clone(), e.values.clone().unwrap_or_default()))
                .collect::<TopologyTerm>()
        })
        .filter(|term| !term.is_empty())
        .collect()
}

/// The name of the volume source set in a PV spec, as written in YAML.
fn volume_plugin(spec: &PersistentVolumeSpec) -> &'static str {
    let plugins = [
        ("csi", spec.csi.is_some()),
        ("hostPath", spec.host_path.is_some()),
        ("local", spec.local.is_some()),
        ("nfs", spec.nfs.is_some()),
        ("flexVolume", spec.flex_volume.is_some()),
        (
            "awsElasticBlockStore",
            spec.aws_elastic_block_store.is_some(),
        ),
        ("gcePersistentDisk", spec.gce_persistent_disk.is_some()),
        ("azureDisk", spec.azure_disk.is_some()),
        ("azureFile", spec.azure_file.is_some()),
        ("vsphereVolume", spec.vsphere_volume.is_some()),
        ("cinder", spec.cinder.is_some()),
        ("cephfs", spec.cephfs.is_some()),
        ("rbd", spec.rbd.is_some()),
        ("iscsi", spec.iscsi.is_some()),
        ("fc", spec.fc.is_some()),
        ("glusterfs", spec.glusterfs.is_some()),
        ("portworxVolume", spec.portworx_volume.is_some()),
        ("scaleIO", spec.scale_io.is_some()),
        ("storageos", spec.storageos.is_some()),
        ("quobyte", spec.quobyte.is_some()),
        ("flocker", spec.flocker.is_some()),
        (
            "photonPersistentDisk",
            spec.photon_persistent_disk.is_some(),
        ),
    ];
    plugins
        .into_iter()
        .find(|(_, set)| *set)
        .map_or("", |(name, _)| name)
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
