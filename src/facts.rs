//! Gathering facts: the only module that talks to the API server.
//!
//! Claims, volumes, StorageClasses and the pods that mount claims are mirrored by watches
//! into caches that keep only what the rules read, so a clone review is answered from
//! memory, without a request to the API server. A cache miss (a source created a moment
//! ago) or a cache that is not served (never listed yet, or its watch failed) falls back
//! to a direct request. Of a pod, only its name and the claims it mounts are kept, and
//! only while it mounts one and has not finished: most pods cost nothing; and pods are
//! watched only while `source-in-use` is not `off`.
//!
//! The caches are an optimisation, never a precondition: readiness waits for the first
//! sync only for a bounded time, a watch that fails later resumes by itself (kube's
//! watcher, with its backoff) while lookups go to the API server, and a denial read from
//! a cache is confirmed against the API server before it is given ([`Freshness::Live`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
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

/// Where a lookup may be answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// From the caches where they are served: the steady state, no API request.
    Cached,
    /// From the API server only: to confirm a denial before it is given, since a cache
    /// that lags (a source bound a moment ago) must never refuse a valid clone.
    Live,
}

/// Where the rules' facts come from: the cluster, or a test.
pub trait FactSource: Send + Sync + 'static {
    fn gather(
        &self,
        request: &DataSourceRequest,
        policy: &Policy,
        freshness: Freshness,
    ) -> impl Future<Output = Result<Facts, LookupError>> + Send;

    /// Whether reviews can be answered (the `/readyz` answer): the first sync of the
    /// caches is done, or was given up on after a bounded wait (lookups then go to the API
    /// server). A watch that fails later does not make the webhook unready.
    fn ready(&self) -> bool;
}

/// Facts handed in directly: for tests and offline checks.
#[derive(Clone, Debug)]
pub struct StaticFacts {
    pub facts: Result<Facts, String>,
}

impl FactSource for StaticFacts {
    async fn gather(
        &self,
        _: &DataSourceRequest,
        _: &Policy,
        _: Freshness,
    ) -> Result<Facts, LookupError> {
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

/// A map of slim objects filled by a watch. Served only while its watch is healthy.
pub struct Cache<T> {
    resource: &'static str,
    objects: RwLock<BTreeMap<String, Arc<T>>>,
    /// The first list is complete (never reset: readiness).
    listed: AtomicBool,
    /// Listed, and no watch error since the last event: lookups may use it.
    serving: AtomicBool,
}

impl<T> Cache<T> {
    fn new(resource: &'static str) -> Arc<Self> {
        Arc::new(Cache {
            resource,
            objects: RwLock::new(BTreeMap::new()),
            listed: AtomicBool::new(false),
            serving: AtomicBool::new(false),
        })
    }

    /// The first list is done (it may be served or not since).
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// Served to lookups: listed, and its watch has not failed since its last event.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    fn set_serving(&self, serving: bool, metrics: &Metrics) {
        if self.serving.swap(serving, Ordering::AcqRel) != serving {
            metrics.set_cache_synced(self.resource, serving);
        }
    }

    /// The cached object, only while the cache is served.
    fn get(&self, key: &str) -> Option<Arc<T>> {
        if !self.is_serving() {
            return None;
        }
        self.read().get(key).cloned()
    }

    /// Every cached object, only while the cache is served.
    fn snapshot(&self) -> Option<Vec<Arc<T>>> {
        self.is_serving()
            .then(|| self.read().values().cloned().collect())
    }

    /// Every object whose key starts with `namespace/`, only while the cache is served.
    fn in_namespace(&self, namespace: &str) -> Option<Vec<Arc<T>>> {
        if !self.is_serving() {
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
    /// `None` while no rule reads pods (`source-in-use: off`): not watched at all.
    pods: Option<Arc<Cache<PodUse>>>,
    started: Instant,
    /// How long readiness waits for the first sync before it gives up on it.
    sync_wait: Duration,
}

/// A pod that mounts claims and has not finished.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUse {
    pub name: String,
    pub claims: Vec<String>,
}

/// How the watches are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Objects per page of the initial (and any later) list: bounds the memory a list
    /// takes, whatever the size of the cluster.
    pub page_size: u32,
    /// Readiness waits at most this long for the first sync of every cache.
    pub sync_wait: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            page_size: 500,
            sync_wait: Duration::from_secs(10),
        }
    }
}

impl ClusterFacts {
    /// Starts the watches a policy needs; the caches fill in the background (see
    /// [`FactSource::ready`]).
    pub fn start(client: Client, metrics: Metrics, policy: &Policy, options: WatchOptions) -> Self {
        let watches_pods = policy.action(RuleId::SourceInUse) != Action::Off;
        let facts = ClusterFacts {
            claims: Cache::new("persistentvolumeclaims"),
            volumes: Cache::new("persistentvolumes"),
            classes: Cache::new("storageclasses"),
            pods: watches_pods.then(|| Cache::new("pods")),
            client,
            started: Instant::now(),
            sync_wait: options.sync_wait,
        };
        spawn_watch(
            Api::<DeserializeGuard<PersistentVolumeClaim>>::all(facts.client.clone()),
            facts.claims.clone(),
            |claim| Some(slim_claim(claim)),
            metrics.clone(),
            options,
        );
        spawn_watch(
            Api::<DeserializeGuard<PersistentVolume>>::all(facts.client.clone()),
            facts.volumes.clone(),
            |pv| Some(slim_volume(pv)),
            metrics.clone(),
            options,
        );
        spawn_watch(
            Api::<DeserializeGuard<StorageClass>>::all(facts.client.clone()),
            facts.classes.clone(),
            |sc| Some(slim_class(sc)),
            metrics.clone(),
            options,
        );
        if let Some(pods) = &facts.pods {
            spawn_watch(
                Api::<PodClaims>::all(facts.client.clone()),
                pods.clone(),
                PodClaims::into_use,
                metrics.clone(),
                options,
            );
        }
        facts.spawn_sync_deadline(metrics);
        facts
    }

    fn caches(&self) -> Vec<(&'static str, bool)> {
        let mut caches = vec![
            (self.claims.resource, self.claims.is_listed()),
            (self.volumes.resource, self.volumes.is_listed()),
            (self.classes.resource, self.classes.is_listed()),
        ];
        if let Some(pods) = &self.pods {
            caches.push((pods.resource, pods.is_listed()));
        }
        caches
    }

    /// Says once, at the deadline, which caches readiness stopped waiting for.
    fn spawn_sync_deadline(&self, metrics: Metrics) {
        let caches = [
            Arc::clone(&self.claims) as Arc<dyn Listed>,
            Arc::clone(&self.volumes) as Arc<dyn Listed>,
            Arc::clone(&self.classes) as Arc<dyn Listed>,
        ]
        .into_iter()
        .chain(self.pods.iter().map(|p| Arc::clone(p) as Arc<dyn Listed>))
        .collect::<Vec<_>>();
        let wait = self.sync_wait;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let pending: Vec<&str> = caches
                .iter()
                .filter(|c| !c.listed())
                .map(|c| c.resource())
                .collect();
            if !pending.is_empty() {
                for resource in &pending {
                    metrics.set_cache_synced(resource, false);
                }
                tracing::warn!(
                    caches = %pending.join(","),
                    waited = ?wait,
                    "ready without the first sync of these caches: their lookups go to the API server until their watch lists them"
                );
            }
        });
    }

    async fn claim(
        &self,
        namespace: &str,
        name: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<SourceClaim>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(claim) = self.claims.get(&format!("{namespace}/{name}"))
        {
            return Ok(Some(claim));
        }
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace);
        let claim = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.claims.resource, e))?;
        Ok(claim.map(|c| Arc::new(slim_claim(c))))
    }

    async fn volume(
        &self,
        name: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<SourceVolume>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(volume) = self.volumes.get(name)
        {
            return Ok(Some(volume));
        }
        let api = Api::<PersistentVolume>::all(self.client.clone());
        let volume = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.volumes.resource, e))?;
        Ok(volume.map(|v| Arc::new(slim_volume(v))))
    }

    async fn all_classes(&self, freshness: Freshness) -> Result<Vec<Arc<ClassInfo>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(classes) = self.classes.snapshot()
        {
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

    async fn pods_using(
        &self,
        namespace: &str,
        claim: &str,
        freshness: Freshness,
    ) -> Result<Vec<String>, LookupError> {
        let cached = self
            .pods
            .as_ref()
            .filter(|_| freshness == Freshness::Cached)
            .and_then(|pods| pods.in_namespace(namespace));
        if let Some(pods) = cached {
            let mut names: Vec<String> = pods
                .iter()
                .filter(|pod| pod.claims.iter().any(|c| c == claim))
                .map(|pod| pod.name.clone())
                .collect();
            names.sort();
            return Ok(names);
        }
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        // resourceVersion=0 is served from the API server's watch cache, not from etcd; a
        // confirmation reads the current state.
        let params = match freshness {
            Freshness::Cached => ListParams::default().match_any(),
            Freshness::Live => ListParams::default(),
        };
        let pods = api
            .list(&params)
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
        freshness: Freshness,
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
        let Some(source) = self.claim(namespace, name, freshness).await? else {
            return Ok(Facts::default());
        };
        let volume = match source.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(volume_name) => self.volume(volume_name, freshness).await?,
            None => None,
        };
        let classes = self.all_classes(freshness).await?;
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
            self.pods_using(namespace, name, freshness).await?
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
        self.started.elapsed() >= self.sync_wait || self.caches().iter().all(|(_, listed)| *listed)
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

/// What a watch delivers: an object, or one that could not be read.
pub trait Delivered:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    type Object;
    /// The object, or why it could not be read.
    fn object(self) -> Result<Self::Object, String>;
}

/// An object of a full kube type: one that does not decode is kept as its metadata and
/// the error, so the watch goes on without it.
impl<K> Delivered for DeserializeGuard<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    type Object = K;
    fn object(self) -> Result<K, String> {
        self.0.map_err(|invalid| invalid.error)
    }
}

impl Delivered for PodClaims {
    type Object = PodClaims;
    fn object(self) -> Result<PodClaims, String> {
        Ok(self)
    }
}

/// The parts of a cache that readiness looks at.
trait Listed: Send + Sync {
    fn listed(&self) -> bool;
    fn resource(&self) -> &'static str;
}

impl<T: Send + Sync> Listed for Cache<T> {
    fn listed(&self) -> bool {
        self.is_listed()
    }
    fn resource(&self) -> &'static str {
        self.resource
    }
}

/// The cache key of a delivered object: `namespace/name`, or `name` for cluster objects.
fn delivered_key<W: Resource>(object: &W) -> Option<String> {
    let name = object.meta().name.as_deref()?;
    Some(match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    })
}

/// Mirrors a resource into a cache with kube's watcher: a paged initial list (its memory
/// bounded by the page size, whatever the size of the cluster), then a watch that resumes
/// by itself after an error, with kube's backoff, and relists only when the API server no
/// longer has the events it missed. After a watch error the cache is not served (lookups
/// go to the API server) until the watch delivers again. An object that cannot be read is
/// skipped and counted; the watch goes on.
fn spawn_watch<W, T>(
    api: Api<W>,
    cache: Arc<Cache<T>>,
    // `None`: not worth keeping (and removed if it was kept).
    slim: fn(W::Object) -> Option<T>,
    metrics: Metrics,
    options: WatchOptions,
) where
    W: Delivered,
    T: Send + Sync + 'static,
{
    metrics.set_cache_synced(cache.resource, false);
    let resource = cache.resource;
    let keep = move |object: W, metrics: &Metrics| -> (Option<String>, Option<T>) {
        let key = delivered_key(&object);
        match object.object() {
            Ok(object) => (key, slim(object)),
            Err(error) => {
                metrics.record_undecodable(resource);
                tracing::warn!(object = key.as_deref().unwrap_or(""), %error, "skipped an object the watch delivered that cannot be read");
                (key, None)
            }
        }
    };
    tokio::spawn(async move {
        let config = watcher::Config::default().page_size(options.page_size);
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: BTreeMap<String, Arc<T>> = BTreeMap::new();
        let started = Instant::now();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => {
                    if let (Some(key), Some(kept)) = keep(object, &metrics) {
                        listing.insert(key, Arc::new(kept));
                    }
                }
                Ok(Event::InitDone) => {
                    let count = listing.len();
                    *cache.write() = std::mem::take(&mut listing);
                    let first = !cache.listed.swap(true, Ordering::AcqRel);
                    cache.set_serving(true, &metrics);
                    metrics.set_cached_objects(cache.resource, count);
                    if first {
                        tracing::info!(
                            resource = cache.resource,
                            objects = count,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "cache in sync"
                        );
                    } else {
                        tracing::info!(
                            resource = cache.resource,
                            objects = count,
                            "cache relisted and in sync again"
                        );
                    }
                }
                Ok(Event::Apply(object)) => {
                    if let (Some(key), kept) = keep(object, &metrics) {
                        let mut objects = cache.write();
                        match kept {
                            Some(kept) => objects.insert(key, Arc::new(kept)),
                            None => objects.remove(&key),
                        };
                        metrics.set_cached_objects(cache.resource, objects.len());
                    }
                    mark_recovered(&cache, &metrics);
                }
                Ok(Event::Delete(object)) => {
                    if let Some(key) = delivered_key(&object) {
                        let mut objects = cache.write();
                        objects.remove(&key);
                        metrics.set_cached_objects(cache.resource, objects.len());
                    }
                    mark_recovered(&cache, &metrics);
                }
                Err(error) => {
                    metrics.record_watch_error(cache.resource);
                    if cache.is_serving() {
                        cache.set_serving(false, &metrics);
                    }
                    tracing::warn!(resource = cache.resource, %error, "cache watch failed; retrying with backoff, and lookups go to the API server until the watch delivers again");
                }
            }
        }
    });
}

/// The watch delivered an event after its first list: it is running, and (resumed from
/// the last version it saw, or relisted) has missed nothing.
fn mark_recovered<T>(cache: &Cache<T>, metrics: &Metrics) {
    if cache.is_listed() && !cache.is_serving() {
        cache.set_serving(true, metrics);
        tracing::info!(
            resource = cache.resource,
            "cache watch recovered; served again"
        );
    }
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
        let pod = |phase: &str, claim: &str| -> serde_json::Value {
            serde_json::json!({
                "metadata": {"name": "p", "namespace": "dev", "resourceVersion": "7",
                             "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}},
                                     {"name": "cfg", "configMap": {"name": "x"}}]},
                "status": {"phase": phase}
            })
        };
        let as_full =
            |value: serde_json::Value| -> Pod { serde_json::from_value(value).expect("pod") };
        let as_slim = |value: serde_json::Value| -> PodClaims {
            serde_json::from_value(value).expect("slim pod")
        };
        assert!(
            pod_is_running(&as_full(pod("Running", "data")))
                && pod_mounts(&as_full(pod("Running", "data")), "data")
        );
        assert!(pod_is_running(&as_full(pod("Pending", "data"))));
        assert!(!pod_is_running(&as_full(pod("Succeeded", "data"))));
        assert!(!pod_is_running(&as_full(pod("Failed", "data"))));
        assert!(!pod_mounts(&as_full(pod("Running", "other")), "data"));
        let slim = as_slim(pod("Running", "data"));
        assert_eq!(delivered_key(&slim).as_deref(), Some("dev/p"));
        assert_eq!(slim.resource_version().as_deref(), Some("7"));
        assert_eq!(
            slim.into_use(),
            Some(PodUse {
                name: "p".into(),
                claims: vec!["data".into()]
            })
        );
        assert_eq!(
            as_slim(pod("Succeeded", "data")).into_use(),
            None,
            "finished pods are dropped"
        );
        let no_claims = serde_json::json!({"metadata": {"name": "q", "namespace": "dev"},
                                           "spec": {"volumes": null}, "status": {}});
        assert_eq!(
            as_slim(no_claims).into_use(),
            None,
            "pods without claims cost nothing"
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
        cache.serving.store(true, Ordering::Release);
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
