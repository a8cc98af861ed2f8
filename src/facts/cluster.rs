//! The watch-backed caches of the live cluster: which resources are watched (what the
//! policy's rules read), and readiness (the first sync, or a bounded wait for it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::core::DeserializeGuard;

use super::cache::{Cache, Listed, spawn_watch};
use super::optional::OptionalApis;
use super::slim::{ClaimObject, ClassInfo, PodClaims, PodUse, VolumeObject, slim_class};
use super::snapshots::Snapshots;
use crate::metrics::Metrics;
use crate::rules::{Fact, Policy, SourceClaim, SourceVolume};

/// Facts from the live cluster.
pub struct ClusterFacts {
    pub(super) client: Client,
    pub(super) claims: Arc<Cache<SourceClaim>>,
    pub(super) volumes: Arc<Cache<SourceVolume>>,
    pub(super) classes: Arc<Cache<ClassInfo>>,
    /// `None` while no rule that reads pods is on: not watched at all.
    pub(super) pods: Option<Arc<Cache<PodUse>>>,
    pub(super) snapshots: Arc<Snapshots>,
    /// Populators, group snapshots, attributes classes, grants.
    pub(super) apis: OptionalApis,
    pub(super) started: Instant,
    /// How long readiness waits for the first sync before it gives up on it.
    pub(super) sync_wait: Duration,
}

/// Pods per page when the pods index lists them (at most; `--list-page-size` if smaller).
pub const POD_PAGE_SIZE: u32 = 100;

/// How the watches are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Objects per page of the initial (and any later) list: bounds the memory a list
    /// takes, whatever the size of the cluster.
    pub page_size: u32,
    /// Readiness waits at most this long for the first sync of every cache.
    pub sync_wait: Duration,
    /// The API server's address, named in the line that reports a failing watch. Set once
    /// per process from the kubeconfig (static, so that the options stay `Copy`).
    pub api_server: &'static str,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            page_size: 500,
            sync_wait: Duration::from_secs(10),
            api_server: "the API server",
        }
    }
}

impl ClusterFacts {
    /// No watch: every fact is read from the API server when a review asks for it. For
    /// `check` and `explain`, which judge a few claims once: listing the whole cluster
    /// first would cost more than the lookups, and needs rights a reader may not have.
    pub fn lookups_only(client: Client, metrics: Metrics) -> Self {
        ClusterFacts {
            claims: Cache::new("persistentvolumeclaims"),
            volumes: Cache::new("persistentvolumes"),
            classes: Cache::new("storageclasses"),
            pods: None,
            apis: OptionalApis::lookups_only(&client, &metrics),
            snapshots: Snapshots::start(client.clone(), metrics, WatchOptions::default(), false),
            client,
            started: Instant::now(),
            sync_wait: Duration::ZERO,
        }
    }

    /// Starts the watches a policy needs; the caches fill in the background (see
    /// [`FactSource::ready`]).
    pub fn start(client: Client, metrics: Metrics, policy: &Policy, options: WatchOptions) -> Self {
        // Pods and snapshots are watched only while a rule that reads them is on (snapshots
        // once their API is served).
        let watches_pods = policy.reads(Fact::Pods);
        let watches_snapshots = policy.reads(Fact::Snapshot);
        let facts = ClusterFacts {
            claims: Cache::new("persistentvolumeclaims"),
            volumes: Cache::new("persistentvolumes"),
            classes: Cache::new("storageclasses"),
            pods: watches_pods.then(|| Cache::new("pods")),
            snapshots: Snapshots::start(
                client.clone(),
                metrics.clone(),
                options,
                watches_snapshots,
            ),
            apis: OptionalApis::start(&client, &metrics, policy, options, true),
            client,
            started: Instant::now(),
            sync_wait: options.sync_wait,
        };
        let client = &facts.client;
        spawn_watch::<ClaimObject, _>(client, &facts.claims, |c| Some(c.slim()), &metrics, options);
        spawn_watch::<VolumeObject, _>(
            client,
            &facts.volumes,
            |v| Some(v.slim()),
            &metrics,
            options,
        );
        spawn_watch::<DeserializeGuard<StorageClass>, _>(
            client,
            &facts.classes,
            |class| Some(slim_class(class)),
            &metrics,
            options,
        );
        if let Some(pods) = &facts.pods {
            // Realistic pods are large (containers, env, managedFields): smaller pages keep
            // the list's transient memory (the page's JSON and kube's parse tree of it) small.
            let pod_pages = WatchOptions {
                page_size: options.page_size.min(POD_PAGE_SIZE),
                ..options
            };
            // Listed once ready: the API server's time goes first to the lists readiness
            // waits for (BENCHMARKS.md, scale: listed at the same time as them, 50,000
            // realistic pods made readiness 8-13 s instead of 4.7 s). Not synced meanwhile.
            metrics.set_cache_synced(pods.resource, false);
            let (until_ready, client) = (facts.until_ready(), facts.client.clone());
            let (pods, metrics) = (pods.clone(), metrics.clone());
            tokio::spawn(async move {
                until_ready.await;
                spawn_watch::<PodClaims, _>(
                    &client,
                    &pods,
                    PodClaims::into_use,
                    &metrics,
                    pod_pages,
                );
            });
        }
        facts.spawn_sync_deadline();
        facts
    }

    /// The caches readiness waits for. Not the pods index: it only serves a warning, and in
    /// a large cluster listing every pod takes the API server far longer than the rest
    /// (50,000 realistic pods: ~25 s more, see BENCHMARKS.md), so it is listed after these
    /// (once ready). Until it is listed, the pods are read in the source's namespace from
    /// the API server.
    pub(super) fn readiness_caches(&self) -> [Arc<dyn Listed>; 3] {
        [
            Arc::clone(&self.claims) as Arc<dyn Listed>,
            Arc::clone(&self.volumes) as Arc<dyn Listed>,
            Arc::clone(&self.classes) as Arc<dyn Listed>,
        ]
    }

    /// Says once, at the deadline, which caches readiness stopped waiting for (their
    /// `cache_synced` gauge is 0 until their watch lists them).
    fn spawn_sync_deadline(&self) {
        let caches = self.readiness_caches();
        let wait = self.sync_wait;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let pending: Vec<&str> = caches
                .iter()
                .filter(|c| !c.listed())
                .map(|c| c.resource())
                .collect();
            if !pending.is_empty() {
                tracing::warn!(
                    caches = %pending.join(","),
                    waited = ?wait,
                    "ready without the first sync of these caches: their lookups go to the API server until their watch lists them"
                );
            }
        });
    }

    pub(super) fn is_ready(&self) -> bool {
        ready(self.started, self.sync_wait, &self.readiness_caches())
    }

    /// Done when [`ClusterFacts::is_ready`] turns true.
    fn until_ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let (started, wait, caches) = (self.started, self.sync_wait, self.readiness_caches());
        async move {
            while !ready(started, wait, &caches) {
                tokio::time::sleep(READY_POLL).await;
            }
        }
    }
}

/// How often a watch that waits for readiness looks (a flag read: costs nothing).
const READY_POLL: Duration = Duration::from_millis(20);

fn ready(started: Instant, wait: Duration, caches: &[Arc<dyn Listed>]) -> bool {
    started.elapsed() >= wait || caches.iter().all(|cache| cache.listed())
}
