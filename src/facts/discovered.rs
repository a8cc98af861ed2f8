//! APIs a cluster may not serve: CRDs (VolumeSnapshots, VolumePopulators, group snapshots,
//! ReferenceGrants) and built-in APIs of newer releases (VolumeAttributesClasses).
//!
//! Discovery is asked at start and again every [`DISCOVERY_INTERVAL`], so installing the
//! CRDs later needs no restart; the resource is watched (when a rule reads it) from the
//! first time it is served, in the first version of the preference list that serves it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};

/// Implements `Resource` for a slim type of an API whose version is found at run time
/// (discovery): the version comes with the [`ApiResource`] an `Api` is made with.
macro_rules! versioned_resource {
    ($type:ident, $scope:ty) => {
        impl Resource for $type {
            type DynamicType = kube::core::ApiResource;
            type Scope = $scope;

            fn kind(resource: &kube::core::ApiResource) -> std::borrow::Cow<'_, str> {
                resource.kind.as_str().into()
            }
            fn group(resource: &kube::core::ApiResource) -> std::borrow::Cow<'_, str> {
                resource.group.as_str().into()
            }
            fn version(resource: &kube::core::ApiResource) -> std::borrow::Cow<'_, str> {
                resource.version.as_str().into()
            }
            fn api_version(resource: &kube::core::ApiResource) -> std::borrow::Cow<'_, str> {
                resource.api_version.as_str().into()
            }
            fn plural(resource: &kube::core::ApiResource) -> std::borrow::Cow<'_, str> {
                resource.plural.as_str().into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// How often discovery is asked whether an API is served.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// An API group's resource, in the versions it may be served in, most preferred first.
#[derive(Clone, Copy, Debug)]
pub struct ApiVersions {
    pub group: &'static str,
    pub versions: &'static [&'static str],
    /// The resource, e.g. `volumesnapshots`.
    pub plural: &'static str,
}

impl ApiVersions {
    /// The resource of `kind` in `version`, to make an `Api` of a `versioned_resource!` type.
    pub fn resource(&self, version: &str, kind: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, version, kind),
            self.plural,
        )
    }
}

/// Starts the watches of an API once it is served, in the version served; what it returns
/// (the caches) is kept for the lookups.
pub type StartWatch<C> = Box<dyn Fn(&Client, &'static str) -> C + Send + Sync>;

/// What discovery says of one API, and the caches watched once it is served.
pub struct Discovered<C> {
    client: Client,
    api: ApiVersions,
    /// 0: not served; `i + 1`: served in `api.versions[i]`.
    served: AtomicUsize,
    /// Starts the watches, once the API is served; `None`: not watched.
    start_watch: Option<StartWatch<C>>,
    watched: OnceLock<C>,
}

impl Discovered<()> {
    /// Discovery asked only when a lookup asks ([`Discovered::discover`]): for APIs that are
    /// not watched and are read by few reviews.
    pub fn on_demand(client: Client, api: ApiVersions) -> Arc<Self> {
        Arc::new(Discovered {
            client,
            api,
            served: AtomicUsize::new(0),
            start_watch: None,
            watched: OnceLock::new(),
        })
    }
}

impl<C: Send + Sync + 'static> Discovered<C> {
    /// Asks discovery now and every [`DISCOVERY_INTERVAL`]; with `watch`, starts the
    /// watches the first time the API is served.
    pub fn start(client: Client, api: ApiVersions, watch: Option<StartWatch<C>>) -> Arc<Self> {
        let discovered = Arc::new(Discovered {
            client,
            api,
            served: AtomicUsize::new(0),
            start_watch: watch,
            watched: OnceLock::new(),
        });
        let this = Arc::clone(&discovered);
        tokio::spawn(async move {
            loop {
                this.discover().await;
                tokio::time::sleep(DISCOVERY_INTERVAL).await;
            }
        });
        discovered
    }

    /// Asks discovery which version serves the resource (on an error other than "not
    /// found", keeps the last answer), and starts the watches the first time it is served.
    pub async fn discover(&self) -> Option<&'static str> {
        let served = self.ask_discovery().await;
        if let (Some(version), Some(start)) = (served, &self.start_watch) {
            self.watched.get_or_init(|| {
                tracing::info!(
                    group = self.api.group,
                    version,
                    resource = self.api.plural,
                    "the API is served: watching it"
                );
                start(&self.client, version)
            });
        }
        served
    }

    async fn ask_discovery(&self) -> Option<&'static str> {
        let mut found = 0;
        for (index, version) in self.api.versions.iter().enumerate() {
            let group_version = format!("{}/{version}", self.api.group);
            match self.client.list_api_group_resources(&group_version).await {
                Ok(list) if list.resources.iter().any(|r| r.name == self.api.plural) => {
                    found = index + 1;
                    break;
                }
                Ok(_) => {}
                // A group version that is not served is a bare `404 page not found` (no
                // Status body), which kube reports with code 404 but not reason NotFound.
                Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 404 => {}
                Err(error) => {
                    tracing::debug!(%error, group_version, "API discovery failed");
                    return self.served();
                }
            }
        }
        if self.served.swap(found, Ordering::AcqRel) != found {
            tracing::info!(
                group = self.api.group,
                resource = self.api.plural,
                served = self.version(found).unwrap_or("no"),
                "API discovery changed"
            );
        }
        self.version(found)
    }

    /// The version discovery found last; `None`: not served.
    pub fn served(&self) -> Option<&'static str> {
        self.version(self.served.load(Ordering::Acquire))
    }

    /// The served version from the last discovery (`Cached`), or from discovery asked now.
    pub async fn served_now(&self, ask: bool) -> Option<&'static str> {
        if ask {
            self.discover().await
        } else {
            self.served()
        }
    }

    fn version(&self, index: usize) -> Option<&'static str> {
        index
            .checked_sub(1)
            .and_then(|i| self.api.versions.get(i).copied())
    }

    /// The caches, once watched.
    pub fn watched(&self) -> Option<&C> {
        self.watched.get()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
