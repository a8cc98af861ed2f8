//! Restores: the VolumeSnapshot a claim names and the VolumeSnapshotContent it is bound to
//! (`snapshot.storage.k8s.io/v1`).
//!
//! The snapshot API is a set of CRDs that a cluster may not have ([`Discovered`]); the two
//! watches start once the API is served (installing the CRDs later needs no restart). Until
//! then, and whenever a cache is not served, lookups go to the API server; a review that
//! would be refused because the API is not served asks discovery again before it is refused.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::{Client, Resource};
use serde::Deserialize;

use super::cache::Cache;
use super::discovered::{ApiVersions, Discovered, StartWatch};
use super::optional::Watching;
use super::{Freshness, LookupError, WatchOptions};
use crate::metrics::Metrics;
use crate::rules::{
    ClaimRef, ContentInfo, SNAPSHOT_GROUP, SOURCE_PROTECTION_FINALIZER, SnapshotFact, SnapshotInfo,
};

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
    /// The API, and once it is served (and a rule reads snapshots) the two caches.
    api: Arc<Discovered<SnapshotCaches>>,
}

/// The VolumeSnapshot cache and the VolumeSnapshotContent cache.
type SnapshotCaches = (Arc<Cache<SnapshotInfo>>, Arc<Cache<ContentInfo>>);

/// The VolumeSnapshot API the restore rules read.
const SNAPSHOT_API: ApiVersions = ApiVersions {
    group: SNAPSHOT_GROUP,
    versions: &["v1"],
    plural: "volumesnapshots",
};

impl Snapshots {
    /// Asks discovery now and every [`DISCOVERY_INTERVAL`](super::discovered::DISCOVERY_INTERVAL);
    /// starts the watches (when `watch`, i.e. a restore rule is on) the first time the API is
    /// served.
    pub fn start(
        client: Client,
        metrics: Metrics,
        options: WatchOptions,
        watch: bool,
    ) -> Arc<Self> {
        let watching = Watching { metrics, options };
        let start = move |client: &Client, _version: &'static str| -> SnapshotCaches {
            let caches = (
                Cache::new("volumesnapshots"),
                Cache::new("volumesnapshotcontents"),
            );
            watching.all(client, &caches.0, |s: VolumeSnapshot| Some(s.slim()));
            watching.all(client, &caches.1, |c: VolumeSnapshotContent| Some(c.slim()));
            caches
        };
        let start: StartWatch<SnapshotCaches> = Box::new(start);
        Arc::new(Snapshots {
            api: Discovered::start(client, SNAPSHOT_API, watch.then_some(start)),
        })
    }

    /// The VolumeSnapshot `namespace/name` and its content.
    pub async fn lookup(
        &self,
        namespace: &str,
        name: &str,
        freshness: Freshness,
    ) -> Result<SnapshotFact, LookupError> {
        if self
            .api
            .served_now(freshness == Freshness::Live)
            .await
            .is_none()
        {
            return Ok(SnapshotFact::NotServed);
        }
        let client = self.api.client();
        let caches = self
            .api
            .watched()
            .filter(|_| freshness == Freshness::Cached);
        let cached_snapshot =
            caches.and_then(|(snapshots, _)| snapshots.get_namespaced(namespace, name));
        let snapshot = match cached_snapshot {
            Some(snapshot) => SnapshotInfo::clone(&snapshot),
            None => {
                let api = Api::<VolumeSnapshot>::namespaced(client.clone(), namespace);
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
                None => Api::<VolumeSnapshotContent>::all(client.clone())
                    .get_opt(content_name)
                    .await
                    .map_err(|e| LookupError::api("volumesnapshotcontents", e))?
                    .map(VolumeSnapshotContent::slim),
            },
        };
        Ok(SnapshotFact::Found { snapshot, content })
    }
}
