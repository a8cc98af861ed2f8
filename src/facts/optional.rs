//! The facts of the APIs a cluster may not serve, besides snapshots: VolumePopulators,
//! VolumeGroupSnapshots, VolumeAttributesClasses and ReferenceGrants. Each is read (and
//! the first two kinds watched) only while a rule that reads it is on.

use std::fmt::Debug;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::WatchOptions;
use super::attributes::AttributesClasses;
use super::cache::{Cache, spawn_watch};
use super::discovered::StartWatch;
use super::grants::Grants;
use super::group_snapshots::GroupSnapshots;
use super::populators::Populators;
use crate::metrics::Metrics;
use crate::rules::{Fact, Policy};

pub struct OptionalApis {
    /// `None` while no rule reads them: not discovered, not watched.
    pub(super) populators: Option<Populators>,
    pub(super) attributes_classes: Option<AttributesClasses>,
    pub(super) group_snapshots: GroupSnapshots,
    pub(super) grants: Grants,
}

impl OptionalApis {
    /// With `watch`, the populators and the attributes classes are watched once served.
    pub fn start(
        client: &Client,
        metrics: &Metrics,
        policy: &Policy,
        options: WatchOptions,
        watch: bool,
    ) -> Self {
        OptionalApis {
            populators: policy
                .reads(Fact::Populators)
                .then(|| Populators::start(client.clone(), metrics.clone(), options, watch)),
            attributes_classes: policy
                .reads(Fact::AttributesClass)
                .then(|| AttributesClasses::start(client.clone(), metrics.clone(), options, watch)),
            group_snapshots: GroupSnapshots::new(client.clone()),
            grants: Grants::new(client.clone()),
        }
    }
}

impl OptionalApis {
    /// Every API readable, none watched: for `check` and `explain`.
    pub fn lookups_only(client: &Client, metrics: &Metrics) -> Self {
        OptionalApis {
            populators: Some(Populators::start(
                client.clone(),
                metrics.clone(),
                WatchOptions::default(),
                false,
            )),
            attributes_classes: Some(AttributesClasses::start(
                client.clone(),
                metrics.clone(),
                WatchOptions::default(),
                false,
            )),
            group_snapshots: GroupSnapshots::new(client.clone()),
            grants: Grants::new(client.clone()),
        }
    }
}

/// What the watches of an API the cluster may not serve start with: the metrics they report
/// to and their options.
#[derive(Clone)]
pub(super) struct Watching {
    pub(super) metrics: Metrics,
    pub(super) options: WatchOptions,
}

impl Watching {
    /// Mirrors every `K` of the cluster into `cache`, keeping `slim(object)`; one that does
    /// not decode is skipped and counted.
    pub(super) fn all<K, T>(&self, client: &Client, cache: &Arc<Cache<T>>, slim: fn(K) -> Option<T>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        T: Send + Sync + 'static,
    {
        spawn_watch::<DeserializeGuard<K>, _>(client, cache, slim, &self.metrics, self.options);
    }

    /// Starts, in whatever version is served, the watch of every `K` into a new cache of
    /// `resource`, keeping `slim(object)`: for an API served in one version.
    pub(super) fn into_cache<K, T>(
        self,
        resource: &'static str,
        slim: fn(K) -> Option<T>,
    ) -> StartWatch<Arc<Cache<T>>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        T: Send + Sync + 'static,
    {
        Box::new(move |client, _version| {
            let cache = Cache::new(resource);
            self.all(client, &cache, slim);
            cache
        })
    }
}
