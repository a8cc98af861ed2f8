//! Restores: the VolumeSnapshot a claim names and the VolumeSnapshotContent it is bound to
//! (`snapshot.storage.k8s.io/v1`).
//!
//! The snapshot API is a set of CRDs that a cluster may not have. Discovery is asked at
//! start and again every [`DISCOVERY_INTERVAL`]; the two watches start once the API is
//! served (installing the CRDs later needs no restart). Until then, and whenever a cache is
//! not served, lookups go to the API server; a review that would be refused because the API
//! is not served asks discovery again before it is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::{ClusterResourceScope, DeserializeGuard, NamespaceResourceScope};
use kube::{Client, Resource};
use serde::Deserialize;

use super::cache::{Cache, spawn_watch};
use super::{Freshness, LookupError, WatchOptions};
use crate::metrics::Metrics;
use crate::rules::{
    ClaimRef, ContentInfo, SNAPSHOT_GROUP, SOURCE_PROTECTION_FINALIZER, SnapshotFact, SnapshotInfo,
};

/// How often discovery is asked whether the snapshot API is served.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

const ALLOW_VOLUME_MODE_CHANGE: &str = "snapshot.storage.kubernetes.io/allow-volume-mode-change";

/// A VolumeSnapshot, as far as the restore rules read it. Unknown fields are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct VolumeSnapshot {
    metadata: ObjectMeta,
    status: Option<SnapshotStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SnapshotStatus {
    bound_volume_snapshot_content_name: Option<String>,
    ready_to_use: Option<bool>,
    // A quantity; k8s-openapi's `Quantity` is a string too.
    restore_size: Option<String>,
}

slim_resource!(
    VolumeSnapshot,
    "VolumeSnapshot",
    SNAPSHOT_GROUP,
    "v1",
    "volumesnapshots",
    NamespaceResourceScope
);

impl VolumeSnapshot {
    pub fn slim(self) -> SnapshotInfo {
        let status = self.status.unwrap_or_default();
        let protected = self
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == SOURCE_PROTECTION_FINALIZER);
        SnapshotInfo {
            protected,
            uid: self.metadata.uid,
            deletion_timestamp: self.metadata.deletion_timestamp.map(|t| t.0.to_string()),
            bound_content_name: status.bound_volume_snapshot_content_name,
            ready_to_use: status.ready_to_use,
            restore_size: status.restore_size,
        }
    }
}

/// A VolumeSnapshotContent, as far as the restore rules read it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct VolumeSnapshotContent {
    metadata: ObjectMeta,
    spec: ContentSpec,
    status: Option<ContentStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContentSpec {
    driver: String,
    source_volume_mode: Option<String>,
    volume_snapshot_ref: ObjectReference,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ObjectReference {
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContentStatus {
    snapshot_handle: Option<String>,
}

slim_resource!(
    VolumeSnapshotContent,
    "VolumeSnapshotContent",
    SNAPSHOT_GROUP,
    "v1",
    "volumesnapshotcontents",
    ClusterResourceScope
);

impl VolumeSnapshotContent {
    pub fn slim(self) -> ContentInfo {
        let allow_volume_mode_change = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOW_VOLUME_MODE_CHANGE))
            .is_some_and(|v| v == "true");
        let reference = self.spec.volume_snapshot_ref;
        ContentInfo {
            name: self.metadata.name.unwrap_or_default(),
            driver: self.spec.driver,
            snapshot_handle: self.status.and_then(|s| s.snapshot_handle),
            source_volume_mode: self.spec.source_volume_mode,
            allow_volume_mode_change,
            snapshot_ref: ClaimRef {
                namespace: reference.namespace.map(Into::into),
                name: reference.name.map(Into::into),
                uid: reference.uid.map(Into::into),
            },
        }
    }
}

/// The snapshot facts of the live cluster.
pub struct Snapshots {
    client: Client,
    /// What discovery said last.
    served: AtomicBool,
    /// Filled once the API is served and a rule reads snapshots.
    caches: OnceLock<SnapshotCaches>,
}

/// The VolumeSnapshot cache and the VolumeSnapshotContent cache.
type SnapshotCaches = (Arc<Cache<SnapshotInfo>>, Arc<Cache<ContentInfo>>);

impl Snapshots {
    /// Asks discovery now and every [`DISCOVERY_INTERVAL`]; starts the watches (when
    /// `watch`, i.e. a restore rule is on) the first time the API is served.
    pub fn start(
        client: Client,
        metrics: Metrics,
        options: WatchOptions,
        watch: bool,
    ) -> Arc<Self> {
        let snapshots = Arc::new(Snapshots {
            client,
            served: AtomicBool::new(false),
            caches: OnceLock::new(),
        });
        let this = Arc::clone(&snapshots);
        tokio::spawn(async move {
            loop {
                let served = this.discover().await;
                if served && watch && this.caches.get().is_none() {
                    tracing::info!(
                        "the VolumeSnapshot API is served: watching snapshots and their contents"
                    );
                    let caches = (
                        Cache::new("volumesnapshots"),
                        Cache::new("volumesnapshotcontents"),
                    );
                    spawn_watch(
                        Api::<DeserializeGuard<VolumeSnapshot>>::all(this.client.clone()),
                        Arc::clone(&caches.0),
                        |s| Some(s.slim()),
                        metrics.clone(),
                        options,
                    );
                    spawn_watch(
                        Api::<DeserializeGuard<VolumeSnapshotContent>>::all(this.client.clone()),
                        Arc::clone(&caches.1),
                        |c| Some(c.slim()),
                        metrics.clone(),
                        options,
                    );
                    let _ = this.caches.set(caches);
                }
                tokio::time::sleep(DISCOVERY_INTERVAL).await;
            }
        });
        snapshots
    }

    /// Asks discovery whether `snapshot.storage.k8s.io/v1` serves VolumeSnapshots; on an
    /// error other than "not found", keeps the last answer.
    async fn discover(&self) -> bool {
        let served = match self
            .client
            .list_api_group_resources(&format!("{SNAPSHOT_GROUP}/v1"))
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.name == "volumesnapshots"),
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(error) => {
                tracing::debug!(%error, "discovery of the VolumeSnapshot API failed");
                return self.served.load(Ordering::Acquire);
            }
        };
        if self.served.swap(served, Ordering::AcqRel) != served {
            tracing::info!(served, "VolumeSnapshot API discovery changed");
        }
        served
    }

    /// The VolumeSnapshot `namespace/name` and its content.
    pub async fn lookup(
        &self,
        namespace: &str,
        name: &str,
        freshness: Freshness,
    ) -> Result<SnapshotFact, LookupError> {
        let served = match freshness {
            Freshness::Cached => self.served.load(Ordering::Acquire),
            Freshness::Live => self.discover().await,
        };
        if !served {
            return Ok(SnapshotFact::NotServed);
        }
        let caches = self.caches.get().filter(|_| freshness == Freshness::Cached);
        let cached_snapshot =
            caches.and_then(|(snapshots, _)| snapshots.get_namespaced(namespace, name));
        let snapshot = match cached_snapshot {
            Some(snapshot) => SnapshotInfo::clone(&snapshot),
            None => {
                let api = Api::<VolumeSnapshot>::namespaced(self.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(snapshot)) => snapshot.slim(),
                    Ok(None) => return Ok(SnapshotFact::Missing),
                    Err(error) => return Err(LookupError::api("volumesnapshots", error)),
                }
            }
        };
        let content = match snapshot
            .bound_content_name
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            None => None,
            Some(content_name) => match caches.and_then(|(_, contents)| contents.get(content_name))
            {
                Some(content) => Some(ContentInfo::clone(&content)),
                None => Api::<VolumeSnapshotContent>::all(self.client.clone())
                    .get_opt(content_name)
                    .await
                    .map_err(|e| LookupError::api("volumesnapshotcontents", e))?
                    .map(VolumeSnapshotContent::slim),
            },
        };
        Ok(SnapshotFact::Found { snapshot, content })
    }
}
