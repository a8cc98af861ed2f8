//! The caches: maps of slim objects that kube's watcher keeps in step with the API server.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use super::WatchOptions;
use super::slim::{ClaimObject, PodClaims, VolumeObject};
use crate::metrics::Metrics;

/// Calls `f` with the key `namespace/name`, joined in a buffer kept per thread: a lookup
/// (one or two per clone review) allocates no key.
fn with_key<R>(namespace: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let join = |key: &mut String| {
        key.clear();
        key.push_str(namespace);
        key.push('/');
        key.push_str(name);
    };
    KEY.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut key) => {
            join(&mut key);
            f(&key)
        }
        // Only if `f` itself asked for a key: that one gets a buffer of its own.
        Err(_) => {
            let mut key = String::new();
            join(&mut key);
            f(&key)
        }
    })
}

/// A map of slim objects filled by a watch. Served only while its watch is healthy.
pub struct Cache<T> {
    pub(super) resource: &'static str,
    /// Keyed `namespace/name` (or `name`): boxed, since tens of thousands of keys never grow.
    objects: RwLock<BTreeMap<Box<str>, Arc<T>>>,
    /// The first list is complete (never reset: readiness).
    pub(super) listed: AtomicBool,
    /// Listed, and no watch error since the last event: lookups may use it.
    pub(super) serving: AtomicBool,
}

impl<T> Cache<T> {
    pub(super) fn new(resource: &'static str) -> Arc<Self> {
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
    pub(super) fn get(&self, key: &str) -> Option<Arc<T>> {
        if !self.is_serving() {
            return None;
        }
        self.read().get(key).cloned()
    }

    /// Every cached object, only while the cache is served.
    pub(super) fn snapshot(&self) -> Option<Vec<Arc<T>>> {
        self.is_serving()
            .then(|| self.read().values().cloned().collect())
    }

    /// The cached object `namespace/name`, only while the cache is served.
    pub(super) fn get_namespaced(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        with_key(namespace, name, |key| self.get(key))
    }

    /// What `read` makes of the objects whose key starts with `namespace/`, read under the
    /// lock (no list of them is made), only while the cache is served.
    pub(super) fn in_namespace_with<R>(
        &self,
        namespace: &str,
        read: impl FnOnce(&mut dyn Iterator<Item = &Arc<T>>) -> R,
    ) -> Option<R> {
        if !self.is_serving() {
            return None;
        }
        let objects = self.read();
        with_key(namespace, "", |prefix| {
            let mut in_namespace = objects
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(_, object)| object);
            Some(read(&mut in_namespace))
        })
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means a writer panicked mid-update of a plain map; the map is
    // still usable, and refusing every review would be worse.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Box<str>, Arc<T>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Box<str>, Arc<T>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
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

/// The slim core types: the API server validates those objects against their shape, so
/// one that reached us decodes (a stream that does not parse is a watch error).
macro_rules! delivered_as_is {
    ($($type:ty),*) => {$(
        impl Delivered for $type {
            type Object = $type;
            fn object(self) -> Result<$type, String> {
                Ok(self)
            }
        }
    )*};
}

delivered_as_is!(PodClaims, ClaimObject, VolumeObject);

/// The parts of a cache that readiness looks at.
pub(super) trait Listed: Send + Sync {
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
pub(super) fn delivered_key<W: Resource>(object: &W) -> Option<Box<str>> {
    let name = object.meta().name.as_deref()?;
    Some(match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}").into_boxed_str(),
        None => name.into(),
    })
}

/// Mirrors a resource into a cache with kube's watcher: a paged initial list (its memory
/// bounded by the page size, whatever the size of the cluster), then a watch that resumes
/// by itself after an error, with kube's backoff, and relists only when the API server no
/// longer has the events it missed. After a watch error the cache is not served (lookups
/// go to the API server) until the watch delivers again. An object that cannot be read is
/// skipped and counted; the watch goes on.
pub(super) fn spawn_watch<W, T>(
    client: &kube::Client,
    cache: &Arc<Cache<T>>,
    // `None`: not worth keeping (and removed if it was kept).
    slim: fn(W::Object) -> Option<T>,
    metrics: &Metrics,
    options: WatchOptions,
) where
    W: Delivered,
    T: Send + Sync + 'static,
{
    let (api, cache, metrics) = (
        Api::<W>::all(client.clone()),
        Arc::clone(cache),
        metrics.clone(),
    );
    metrics.set_cache_synced(cache.resource, false);
    metrics.watch_started(cache.resource);
    let resource = cache.resource;
    let keep = move |object: W, metrics: &Metrics| -> (Option<Box<str>>, Option<T>) {
        let key = delivered_key(&object);
        match object.object() {
            // Read leniently, an object always decodes; one without a name cannot be kept.
            Ok(_) if key.is_none() => {
                metrics.record_undecodable(resource);
                tracing::warn!("skipped an object the watch delivered without a name");
                (None, None)
            }
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
        // The objects of a (re)list, in the order listed: made into the map once complete,
        // which packs its nodes (a map filled one insert at a time keeps them half empty).
        let mut listing: Vec<(Box<str>, Arc<T>)> = Vec::new();
        let started = Instant::now();
        // A failing watch retries with backoff, each try an error: the first of a streak is
        // logged, the rest only counted (pvc_clone_guard_watch_errors_total), and the streak's
        // end is logged with its count.
        let mut failures: u64 = 0;
        while let Some(event) = stream.next().await {
            // `Init` only says a (re)list begins; anything else came from the API server.
            let delivered = matches!(&event, Ok(event) if !matches!(event, Event::Init));
            if delivered && failures > 0 {
                tracing::info!(
                    resource = cache.resource,
                    api_server = options.api_server,
                    failures,
                    "cache watch delivering again after {failures} failed attempt(s)"
                );
                failures = 0;
            }
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => {
                    if let (Some(key), Some(kept)) = keep(object, &metrics) {
                        listing.push((key, Arc::new(kept)));
                    }
                }
                Ok(Event::InitDone) => {
                    // A key listed twice (a list resumed across pages) keeps its last object.
                    let listed: BTreeMap<Box<str>, Arc<T>> =
                        std::mem::take(&mut listing).into_iter().collect();
                    let count = listed.len();
                    *cache.write() = listed;
                    crate::memory::trim();
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
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(resource = cache.resource, api_server = options.api_server, %error, "cache watch failed; retrying with backoff (further failures are counted, not logged), and lookups go to the API server until the watch delivers again");
                    }
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
