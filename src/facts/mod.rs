//! Gathering facts: the only module that talks to the API server.
//!
//! Claims, volumes, StorageClasses and the pods that mount claims are mirrored by watches
//! into caches that keep only what the rules read, so a clone review is answered from
//! memory, without a request to the API server. A cache miss (a source created a moment
//! ago) or a cache that is not served (never listed yet, or its watch failed) falls back
//! to a direct request. Of a pod, only its name and the claims it mounts are kept, and
//! only while it mounts one and has not finished: most pods cost nothing; and pods are
//! watched only while a rule that reads them is on (the rule table says which).
//!
//! The caches are an optimisation, never a precondition: readiness waits for the first
//! sync only for a bounded time, a watch that fails later resumes by itself (kube's
//! watcher, with its backoff) while lookups go to the API server, and a denial read from
//! a cache is confirmed against the API server before it is given ([`Freshness::Live`]).

use std::future::Future;
use std::time::Duration;

use crate::rules::{DataSourceRequest, Facts, Policy};
pub use cache::{Cache, Delivered};
pub use cluster::{ClusterFacts, POD_PAGE_SIZE, WatchOptions};
pub use slim::{ClaimObject, ClassInfo, PodClaims, PodUse, VolumeObject, slim_class};
pub use snapshots::Snapshots;

// First: its `slim_resource!` is used by the modules below.
#[macro_use]
mod slim;
mod attributes;
mod cache;
mod cluster;
// Before the modules whose types it declares: its `versioned_resource!` is used there.
#[macro_use]
mod discovered;
mod gather;
mod grants;
mod group_snapshots;
mod optional;
mod populators;
mod snapshots;

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

    /// The facts of `request` if the caches hold every one of them, read at once: the
    /// steady state of a clone review. `None` (a miss, or a source that is not cached this
    /// way) sends the review to [`FactSource::gather`]. Reading them here rather than in
    /// `gather` spares every such review `gather`'s future, which holds the API requests a
    /// miss makes (6.8 KB, allocated and moved per review: BENCHMARKS.md, issue 12).
    fn cached(&self, _request: &DataSourceRequest, _policy: &Policy) -> Option<Facts> {
        None
    }

    /// Whether reviews can be answered (the `/readyz` answer): the first sync of the
    /// caches of claims, volumes and classes is done, or was given up on after a bounded wait
    /// (lookups then go to the API server); the pods index is listed after that, in the
    /// background. A watch that fails later does not make the webhook unready.
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
