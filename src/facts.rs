//! Gathering facts: the only module that talks to the API server.
//!
//! Claims, volumes, StorageClasses and the pods that mount claims are mirrored by watches
//! into caches that keep only what the rules read, so a clone review is answered from
//! memory, without a request to the API server. A cache miss (a source created a moment
//! ago) or a cache that is not in sync falls back to a direct request. Of a pod, only its
//! name and the claims it mounts are kept, and only while it mounts one and has not
//! finished: most pods cost nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::config::{Action, Policy, RuleId};
use crate::metrics::Metrics;
use crate::rules::{
    ClaimRef, ClassFact, DataSourceRequest, Facts, PodsFact, SourceClaim, SourceVolume,
};

const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Why the facts of a review could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the API server did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("reading {resource} from the API server failed: {message}")]
    Api {
        resource: &'static str,
        message: String,
    },
}

impl LookupError {
    /// The `resource` label of the lookup error counter.
    pub fn resource(&self) -> &'static str {
        match self {
            LookupError::Timeout(_) => "timeout",
            LookupError::Api { resource, .. } => resource,
        }
    }

    fn api(resource: &'static str, error: kube::Error) -> Self {
        let message = match error {
            kube::Error::Api(status) => status.message,
            // "ServiceError: client error (Connect)" alone hides the cause: add the chain
            // down to e.g. "tcp connect error: Connection refused (os error 111)".
            other => error_chain(&other),
        };
        LookupError::Api { resource, message }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

/// Where the rules' facts come from: the cluster, or a test.
pub trait FactSource: Send + Sync + 'static {
    fn gather(
        &self,
        request: &DataSourceRequest,
        policy: &Policy,
    ) -> impl Future<Output = Result<Facts, LookupError>> + Send;

    /// Whether the facts are served from synced caches (the `/readyz` answer).
    fn ready(&self) -> bool;
}

/// Facts handed in directly: for tests and offline checks.
#[derive(Clone, Debug)]
pub struct StaticFacts {
    pub facts: Result<Facts, String>,
}

impl FactSource for StaticFacts {
    async fn gather(&self, _: &DataSourceRequest, _: &Policy) -> Result<Facts, LookupError> {
        self.facts.clone().map_err(|message| LookupError::Api {
            resource: "persistentvolumeclaims",
            message,
        })
    }

    fn ready(&self) -> bool {
        true
    }
}

/// A StorageClass, as far as the rules care.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassInfo {
    pub name: String,
    pub provisioner: String,
    pub is_default: bool,
    /// RFC 3339; the newest default class wins, as in Kubernetes 1.26+.
    pub created: String,
}

/// A map of slim objects filled by a watch. Served only while in sync.
pub struct Cache<T> {
    resource: &'static str,
    objects: RwLock<BTreeMap<String, Arc<T>>>,
    synced: AtomicBool,
}

impl<T> Cache<T> {
    fn new(resource: &'static str) -> Arc<Self> {
        Arc::new(Cache {
            resource,
            objects: RwLock::new(BTreeMap::new()),
            synced: AtomicBool::new(false),
        })
    }

    /// In sync with the API server: listed, and the watch has not failed since.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The cached object, only while the cache is in sync.
    fn get(&self, key: &str) -> Option<Arc<T>> {
        if !self.is_synced() {
            return None;
        }
        self.read().get(key).cloned()
    }

    /// Every cached object, only while the cache is in sync.
    fn snapshot(&self) -> Option<Vec<Arc<T>>> {
        self.is_synced()
            .then(|| self.read().values().cloned().collect())
    }

    /// Every object whose key starts with `namespace/`, only while the cache is in sync.
    fn in_namespace(&self, namespace: &str) -> Option<Vec<Arc<T>>> {
        if !self.is_synced() {
            return None;
        }
        let prefix = format!("{namespace}/");
        let objects = self.read();
        Some(
            objects
                .range(prefix.clone()..)
                .take_while(|(key, _)| key.starts_with(&prefix))
                .map(|(_, object)| Arc::clone(object))
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means a writer panicked mid-update of a plain map; the map is
    // still usable, and refusing every review would be worse.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<T>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<T>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Facts from the live cluster.
pub struct ClusterFacts {
    client: Client,
    claims: Arc<Cache<SourceClaim>>,
    volumes: Arc<Cache<SourceVolume>>,
    classes: Arc<Cache<ClassInfo>>,
    pods: Arc<Cache<PodUse>>,
}

/// A pod that mounts claims and has not finished.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUse {
    pub name: String,
    pub claims: Vec<String>,
}

impl ClusterFacts {
    /// Starts the watches; the caches fill in the background (see [`FactSource::ready`]).
    pub fn start(client: Client, metrics: Metrics) -> Self {
        let facts = ClusterFacts {
            claims: Cache::new("persistentvolumeclaims"),
            volumes: Cache::new("persistentvolumes"),
            classes: Cache::new("storageclasses"),
            pods: Cache::new("pods"),
            client,
        };
        spawn_watch(
            Api::<PersistentVolumeClaim>::all(facts.client.clone()),
            facts.claims.clone(),
            claim_key,
            |claim| Some(slim_claim(claim)),
            metrics.clone(),
        );
        spawn_watch(
            Api::<PersistentVolume>::all(facts.client.clone()),
            facts.volumes.clone(),
            |pv| Some(pv.name_any()),
            |pv| Some(slim_volume(pv)),
            metrics.clone(),
        );
        spawn_watch(
            Api::<StorageClass>::all(facts.client.clone()),
            facts.classes.clone(),
            |sc| Some(sc.name_any()),
            |sc| Some(slim_class(sc)),
            metrics.clone(),
        );
        spawn_watch(
            Api::<Pod>::all(facts.client.clone()),
            facts.pods.clone(),
            pod_key,
            slim_pod,
            metrics,
        );
        facts
    }

    async fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SourceClaim>>, LookupError> {
        if let Some(claim) = self.claims.get(&format!("{namespace}/{name}")) {
            return Ok(Some(claim));
        }
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace);
        let claim = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.claims.resource, e))?;
        Ok(claim.map(|c| Arc::new(slim_claim(c))))
    }

    async fn volume(&self, name: &str) -> Result<Option<Arc<SourceVolume>>, LookupError> {
        if let Some(volume) = self.volumes.get(name) {
            return Ok(Some(volume));
        }
        let api = Api::<PersistentVolume>::all(self.client.clone());
        let volume = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.volumes.resource, e))?;
        Ok(volume.map(|v| Arc::new(slim_volume(v))))
    }

    async fn all_classes(&self) -> Result<Vec<Arc<ClassInfo>>, LookupError> {
        if let Some(classes) = self.classes.snapshot() {
            return Ok(classes);
        }
        let api = Api::<StorageClass>::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| LookupError::api(self.classes.resource, e))?;
        Ok(list
            .items
            .into_iter()
            .map(|c| Arc::new(slim_class(c)))
            .collect())
    }

    async fn class(
        &self,
        requested: Option<&str>,
        all: &[Arc<ClassInfo>],
    ) -> Result<ClassFact, LookupError> {
        let found = |c: &ClassInfo| ClassFact::Found {
            name: c.name.clone(),
            provisioner: c.provisioner.clone(),
            is_default: c.is_default && requested.is_none(),
            allowed_topologies: Vec::new(),
            parameters: BTreeMap::new(),
        };
        match requested {
            Some("") => Ok(ClassFact::Disabled),
            None => Ok(default_class(all).map_or(ClassFact::NoDefault, found)),
            Some(name) => {
                if let Some(class) = all.iter().find(|c| c.name == name) {
                    return Ok(found(class));
                }
                // Not cached yet: a class created a moment ago must not be reported missing.
                let api = Api::<StorageClass>::all(self.client.clone());
                let class = api
                    .get_opt(name)
                    .await
                    .map_err(|e| LookupError::api(self.classes.resource, e))?;
                Ok(class.map_or_else(
                    || ClassFact::Missing(name.to_owned()),
                    |c| found(&slim_class(c)),
                ))
            }
        }
    }

    async fn pods_using(&self, namespace: &str, claim: &str) -> Result<Vec<String>, LookupError> {
        if let Some(pods) = self.pods.in_namespace(namespace) {
            let mut names: Vec<String> = pods
                .iter()
                .filter(|pod| pod.claims.iter().any(|c| c == claim))
                .map(|pod| pod.name.clone())
                .collect();
            names.sort();
            return Ok(names);
        }
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        // resourceVersion=0: served from the API server's watch cache, not from etcd.
        let pods = api
            .list(&ListParams::default().match_any())
            .await
            .map_err(|e| LookupError::api("pods", e))?;
        let mut names: Vec<String> = pods
            .items
            .iter()
            .filter(|pod| pod_is_running(pod) && pod_mounts(pod, claim))
            .map(|pod| pod.name_any())
            .collect();
        names.sort();
        Ok(names)
    }
}

impl FactSource for ClusterFacts {
    async fn gather(
        &self,
        request: &DataSourceRequest,
        policy: &Policy,
    ) -> Result<Facts, LookupError> {
        // Until snapshot and ReferenceGrant facts are gathered, such reviews fail in the
        // configured direction instead of being judged on facts that were never read.
        if request.is_restore() {
            return Err(LookupError::Api {
                resource: "volumesnapshots",
                message: "VolumeSnapshot facts are not gathered yet".to_owned(),
            });
        }
        if request.needs_grant(policy) {
            return Err(LookupError::Api {
                resource: "referencegrants",
                message: "ReferenceGrant facts are not gathered yet".to_owned(),
            });
        }
        let namespace = request
            .source_namespace(policy)
            .unwrap_or(&request.namespace);
        let name = &request.source.name;
        let Some(source) = self.claim(namespace, name).await? else {
            return Ok(Facts::default());
        };
        let volume = match source.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(volume_name) => self.volume(volume_name).await?,
            None => None,
        };
        let classes = self.all_classes().await?;
        let class = self
            .class(request.storage_class.as_deref(), &classes)
            .await?;
        let driver = volume.as_ref().and_then(|v| v.csi_driver.as_deref());
        let mut classes_for_source_driver: Vec<String> = classes
            .iter()
            .filter(|c| Some(c.provisioner.as_str()) == driver)
            .map(|c| c.name.clone())
            .collect();
        classes_for_source_driver.sort();
        let pods_using_source = if policy.action(RuleId::SourceInUse) == Action::Off {
            Vec::new()
        } else {
            self.pods_using(namespace, name).await?
        };
        Ok(Facts {
            source: Some(SourceClaim::clone(&source)),
            volume: volume.map(|v| SourceVolume::clone(&v)),
            class,
            pods: PodsFact::Known(pods_using_source),
            classes_for_source_driver,
            ..Facts::default()
        })
    }

    fn ready(&self) -> bool {
        self.claims.is_synced()
            && self.volumes.is_synced()
            && self.classes.is_synced()
            && self.pods.is_synced()
    }
}

/// The default class: annotated as default, the newest if several are (Kubernetes 1.26+).
fn default_class(classes: &[Arc<ClassInfo>]) -> Option<&ClassInfo> {
    classes
        .iter()
        .filter(|c| c.is_default)
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| b.name.cmp(&a.name)))
        .map(|c| c.as_ref())
}

fn pod_is_running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

fn pod_mounts(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .any(|source| source.claim_name == claim)
}

fn pod_key(pod: &Pod) -> Option<String> {
    Some(format!(
        "{}/{}",
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?
    ))
}

/// Kept only while the pod mounts a claim and has not finished.
pub fn slim_pod(pod: Pod) -> Option<PodUse> {
    if !pod_is_running(&pod) {
        return None;
    }
    let claims: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|source| source.claim_name.clone())
        .collect();
    (!claims.is_empty()).then(|| PodUse {
        name: pod.name_any(),
        claims,
    })
}

fn claim_key(claim: &PersistentVolumeClaim) -> Option<String> {
    Some(format!(
        "{}/{}",
        claim.metadata.namespace.as_deref()?,
        claim.metadata.name.as_deref()?
    ))
}

pub fn slim_claim(claim: PersistentVolumeClaim) -> SourceClaim {
    let spec = claim.spec.unwrap_or_default();
    let status = claim.status.unwrap_or_default();
    SourceClaim {
        uid: claim.metadata.uid,
        phase: status.phase,
        deletion_timestamp: claim.metadata.deletion_timestamp.map(|t| t.0.to_string()),
        volume_name: spec.volume_name,
        volume_mode: spec.volume_mode,
        requested_storage: spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|mut r| r.remove("storage"))
            .map(|q| q.0),
        capacity: status
            .capacity
            .and_then(|mut c| c.remove("storage"))
            .map(|q| q.0),
        storage_class: spec.storage_class_name,
    }
}

pub fn slim_volume(volume: PersistentVolume) -> SourceVolume {
    let name = volume.name_any();
    let spec = volume.spec.unwrap_or_default();
    SourceVolume {
        name,
        phase: volume.status.and_then(|s| s.phase),
        plugin: volume_plugin(&spec).to_owned(),
        claim_ref: spec.claim_ref.map(|r| ClaimRef {
            namespace: r.namespace,
            name: r.name,
            uid: r.uid,
        }),
        csi_driver: spec.csi.map(|csi| csi.driver),
        volume_mode: spec.volume_mode,
        storage_class: spec.storage_class_name,
        node_affinity: Vec::new(),
    }
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
        provisioner: class.provisioner,
        is_default,
    }
}

/// Mirrors a resource into a cache. The watch is restarted from a fresh list after any
/// error, and the cache is out of sync (so lookups go to the API server) until that list
/// is complete: a cache that may have missed events is never served.
fn spawn_watch<K, T>(
    api: Api<K>,
    cache: Arc<Cache<T>>,
    key: fn(&K) -> Option<String>,
    // `None`: not worth keeping (and removed if it was kept).
    slim: fn(K) -> Option<T>,
    metrics: Metrics,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut stream =
                watcher::watcher(api.clone(), watcher::Config::default().any_semantic()).boxed();
            let mut listing: BTreeMap<String, Arc<T>> = BTreeMap::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Init) => listing.clear(),
                    Ok(Event::InitApply(object)) => {
                        if let Some(k) = key(&object)
                            && let Some(kept) = slim(object)
                        {
                            listing.insert(k, Arc::new(kept));
                        }
                    }
                    Ok(Event::InitDone) => {
                        let count = listing.len();
                        *cache.write() = std::mem::take(&mut listing);
                        cache.synced.store(true, Ordering::Release);
                        metrics.set_cached_objects(cache.resource, count);
                        tracing::info!(resource = cache.resource, objects = count, "cache in sync");
                        backoff = Duration::from_millis(250);
                    }
                    Ok(Event::Apply(object)) => {
                        if let Some(k) = key(&object) {
                            let kept = slim(object);
                            let mut objects = cache.write();
                            match kept {
                                Some(kept) => objects.insert(k, Arc::new(kept)),
                                None => objects.remove(&k),
                            };
                            metrics.set_cached_objects(cache.resource, objects.len());
                        }
                    }
                    Ok(Event::Delete(object)) => {
                        if let Some(k) = key(&object) {
                            let mut objects = cache.write();
                            objects.remove(&k);
                            metrics.set_cached_objects(cache.resource, objects.len());
                        }
                    }
                    Err(error) => {
                        cache.synced.store(false, Ordering::Release);
                        metrics.record_watch_error(cache.resource);
                        tracing::warn!(resource = cache.resource, %error, retry_in = ?backoff, "cache watch failed; lookups go to the API server until it is listed again");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool, created: &str) -> Arc<ClassInfo> {
        Arc::new(ClassInfo {
            name: name.into(),
            provisioner: "p".into(),
            is_default: default,
            created: created.into(),
        })
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("old", true, "2026-01-01T00:00:00Z"),
            class("new", true, "2026-06-01T00:00:00Z"),
            class("plain", false, "2026-09-01T00:00:00Z"),
        ];
        assert_eq!(
            default_class(&classes).map(|c| c.name.as_str()),
            Some("new")
        );
        assert_eq!(default_class(&classes[2..]), None);
    }

    #[test]
    fn slim_objects_keep_what_the_rules_read() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "dev", "uid": "u1",
                         "deletionTimestamp": "2026-11-21T10:00:00Z",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"volumeName": "pv-1", "volumeMode": "Block",
                     "resources": {"requests": {"storage": "8Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}
        }))
        .expect("claim");
        assert_eq!(claim_key(&claim).as_deref(), Some("dev/data"));
        assert_eq!(
            slim_claim(claim),
            SourceClaim {
                uid: Some("u1".into()),
                phase: Some("Bound".into()),
                deletion_timestamp: Some("2026-11-21T10:00:00Z".into()),
                volume_name: Some("pv-1".into()),
                volume_mode: Some("Block".into()),
                requested_storage: Some("8Gi".into()),
                capacity: Some("10Gi".into()),
                storage_class: None,
            }
        );
        let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-1"},
            "spec": {"hostPath": {"path": "/data"}, "claimRef": {"namespace": "dev", "name": "data", "uid": "u1"}},
            "status": {"phase": "Bound"}
        }))
        .expect("volume");
        let slim = slim_volume(volume);
        assert_eq!(slim.plugin, "hostPath");
        assert_eq!(slim.csi_driver, None);
        assert_eq!(slim.claim_ref.and_then(|r| r.uid).as_deref(), Some("u1"));
        let class: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "ebs.csi.aws.com"
        }))
        .expect("class");
        let slim = slim_class(class);
        assert!(slim.is_default);
        assert_eq!(slim.provisioner, "ebs.csi.aws.com");
    }

    #[test]
    fn pods_count_only_while_they_can_use_the_claim() {
        let pod = |phase: &str, claim: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
                "status": {"phase": phase}
            }))
            .expect("pod")
        };
        assert!(
            pod_is_running(&pod("Running", "data")) && pod_mounts(&pod("Running", "data"), "data")
        );
        assert!(pod_is_running(&pod("Pending", "data")));
        assert!(!pod_is_running(&pod("Succeeded", "data")));
        assert!(!pod_is_running(&pod("Failed", "data")));
        assert!(!pod_mounts(&pod("Running", "other"), "data"));
        assert_eq!(
            slim_pod(pod("Running", "data")),
            Some(PodUse {
                name: "p".into(),
                claims: vec!["data".into()]
            })
        );
        assert_eq!(
            slim_pod(pod("Succeeded", "data")),
            None,
            "finished pods are dropped"
        );
    }

    #[test]
    fn a_namespace_is_a_range_of_the_cache() {
        let cache: Arc<Cache<u32>> = Cache::new("test");
        for (key, value) in [("a/x", 1), ("ab/y", 2), ("b/z", 3), ("a/w", 4)] {
            cache.write().insert(key.into(), Arc::new(value));
        }
        assert_eq!(
            cache.in_namespace("a"),
            None,
            "not served before the cache is in sync"
        );
        cache.synced.store(true, Ordering::Release);
        let values: Vec<u32> = cache
            .in_namespace("a")
            .expect("synced")
            .iter()
            .map(|v| **v)
            .collect();
        assert_eq!(values, [4, 1]);
        assert_eq!(
            cache.in_namespace("c").expect("synced"),
            Vec::<Arc<u32>>::new()
        );
    }
}
