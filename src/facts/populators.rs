//! VolumePopulators (`populator.storage.k8s.io/v1beta1`, cluster-scoped): whether a
//! populator handles the kind a claim's data source names, as the volume-data-source-validator
//! checks it (a `sourceKind` equal to the source's group and kind).
//!
//! A CRD the cluster may not have ([`Discovered`]): watched once served while `populator`
//! is on. A review that finds it not served asks discovery again (a populator source is
//! rare, and a CRD installed a moment ago must be seen); one that finds no registration is
//! confirmed against the API server before it is refused, as every denial is.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::ClusterResourceScope;
use kube::{Client, Resource};
use serde::Deserialize;

use super::cache::Cache;
use super::discovered::{ApiVersions, Discovered};
use super::optional::Watching;
use super::{Freshness, LookupError, WatchOptions};
use crate::metrics::Metrics;
use crate::rules::PopulatorFact;

/// The API group of VolumePopulators.
const POPULATOR_GROUP: &str = "populator.storage.k8s.io";

const POPULATOR_API: ApiVersions = ApiVersions {
    group: POPULATOR_GROUP,
    versions: &["v1beta1"],
    plural: "volumepopulators",
};

/// A VolumePopulator: its `sourceKind` (top level, no spec).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumePopulator {
    metadata: ObjectMeta,
    source_kind: GroupKind,
}

/// The group and kind a populator handles (`""` is the core group).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct GroupKind {
    group: String,
    kind: String,
}

slim_resource!(
    VolumePopulator,
    "VolumePopulator",
    POPULATOR_GROUP,
    "v1beta1",
    "volumepopulators",
    ClusterResourceScope
);

/// The VolumePopulators of the live cluster.
pub struct Populators {
    api: Arc<Discovered<Arc<Cache<GroupKind>>>>,
}

impl Populators {
    /// Discovery now and every interval; the watch (with `watch`) once the API is served.
    pub fn start(client: Client, metrics: Metrics, options: WatchOptions, watch: bool) -> Self {
        let start = Watching { metrics, options }
            .into_cache("volumepopulators", |p: VolumePopulator| Some(p.source_kind));
        Populators {
            api: Discovered::start(client, POPULATOR_API, watch.then_some(start)),
        }
    }

    /// Whether a VolumePopulator registers `group`/`kind`. An API that cannot be read is a
    /// fact too ([`PopulatorFact::Unknown`]): the rule warns, and never refuses on it.
    pub async fn lookup(&self, group: &str, kind: &str, freshness: Freshness) -> PopulatorFact {
        let wanted = GroupKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
        };
        let served = match (freshness, self.api.served()) {
            (Freshness::Cached, Some(version)) => Some(version),
            _ => self.api.discover().await,
        };
        if served.is_none() {
            return PopulatorFact::NotServed;
        }
        let cached = self
            .api
            .watched()
            .filter(|_| freshness == Freshness::Cached)
            .and_then(|cache| cache.snapshot());
        let registered = match cached {
            Some(kinds) => kinds.iter().any(|k| **k == wanted),
            None => match self.list().await {
                Ok(kinds) => kinds.contains(&wanted),
                Err(LookupError::Api { message, .. }) => return PopulatorFact::Unknown(message),
                Err(timeout) => return PopulatorFact::Unknown(timeout.to_string()),
            },
        };
        if registered {
            PopulatorFact::Registered
        } else {
            PopulatorFact::NotRegistered
        }
    }

    async fn list(&self) -> Result<Vec<GroupKind>, LookupError> {
        let api = Api::<VolumePopulator>::all(self.api.client().clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| LookupError::api("volumepopulators", e))?;
        Ok(list.items.into_iter().map(|p| p.source_kind).collect())
    }
}
