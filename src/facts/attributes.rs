//! VolumeAttributesClasses (`storage.k8s.io`, cluster-scoped): the class a clone or restore
//! names in `spec.volumeAttributesClassName`, and its driver.
//!
//! GA (`v1`) in Kubernetes 1.34, `v1beta1` from 1.31 behind a gate: read as `v1`, else as
//! `v1beta1` where only that is served ([`Discovered`]), watched once served while a rule
//! that reads it is on. Where neither is served the API server drops the field (gate off)
//! or the provisioner ignores it (v6 turns the feature off without `v1`): nothing to check.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::ClusterResourceScope;
use kube::{Client, Resource};
use serde::Deserialize;

use super::cache::Cache;
use super::discovered::{ApiVersions, Discovered, StartWatch};
use super::optional::Watching;
use super::{Freshness, LookupError, WatchOptions};
use crate::metrics::Metrics;
use crate::rules::AttributesClassFact;

const ATTRIBUTES_CLASS_API: ApiVersions = ApiVersions {
    group: "storage.k8s.io",
    versions: &["v1", "v1beta1"],
    plural: "volumeattributesclasses",
};

/// A VolumeAttributesClass of one API version, as far as the rule reads it: its driver.
macro_rules! attributes_class {
    ($type:ident, $version:literal) => {
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(default, rename_all = "camelCase")]
        pub struct $type {
            metadata: ObjectMeta,
            driver_name: String,
        }

        impl $type {
            /// What the cache keeps of it.
            fn driver(self) -> Option<String> {
                Some(self.driver_name)
            }
        }

        slim_resource!(
            $type,
            "VolumeAttributesClass",
            "storage.k8s.io",
            $version,
            "volumeattributesclasses",
            ClusterResourceScope
        );
    };
}

attributes_class!(AttributesClassV1, "v1");
attributes_class!(AttributesClassV1beta1, "v1beta1");

/// The VolumeAttributesClasses of the live cluster: name -> driver.
pub struct AttributesClasses {
    api: Arc<Discovered<Arc<Cache<String>>>>,
}

impl AttributesClasses {
    /// Discovery now and every interval; the watch (with `watch`) once the API is served.
    pub fn start(client: Client, metrics: Metrics, options: WatchOptions, watch: bool) -> Self {
        let watching = Watching { metrics, options };
        let start: StartWatch<Arc<Cache<String>>> = Box::new(move |client, version| {
            let cache = Cache::new("volumeattributesclasses");
            match version {
                "v1" => watching.all(client, &cache, AttributesClassV1::driver),
                _ => watching.all(client, &cache, AttributesClassV1beta1::driver),
            }
            cache
        });
        AttributesClasses {
            api: Discovered::start(client, ATTRIBUTES_CLASS_API, watch.then_some(start)),
        }
    }

    /// The class `name` from the cache alone; `None` when the cache cannot say.
    pub fn cached(&self, name: &str) -> Option<AttributesClassFact> {
        if self.api.served().is_none() {
            return Some(AttributesClassFact::NotChecked);
        }
        let cache = self.api.watched()?;
        if !cache.is_serving() {
            return None;
        }
        // A miss may be a class created a moment ago: the API server is asked.
        cache.get(name).map(|driver| AttributesClassFact::Found {
            driver: String::clone(&driver),
        })
    }

    /// The class `name`: from the cache, else (and to confirm) from the API server.
    pub async fn lookup(
        &self,
        name: &str,
        freshness: Freshness,
    ) -> Result<AttributesClassFact, LookupError> {
        if freshness == Freshness::Cached
            && let Some(fact) = self.cached(name)
        {
            return Ok(fact);
        }
        let client = self.api.client().clone();
        let driver = match self.api.served_now(freshness == Freshness::Live).await {
            None => return Ok(AttributesClassFact::NotChecked),
            Some("v1") => Api::<AttributesClassV1>::all(client)
                .get_opt(name)
                .await
                .map(|class| class.map(|c| c.driver_name)),
            Some(_) => Api::<AttributesClassV1beta1>::all(client)
                .get_opt(name)
                .await
                .map(|class| class.map(|c| c.driver_name)),
        }
        .map_err(|e| LookupError::api("volumeattributesclasses", e))?;
        Ok(driver.map_or(AttributesClassFact::Missing, |driver| {
            AttributesClassFact::Found { driver }
        }))
    }
}
