//! ReferenceGrants (`gateway.networking.k8s.io`): whether a claim may use a source in
//! another namespace (`crossNamespace: reference-grant`). Read from the API server, only by
//! the reviews that ask, as `v1` where the cluster serves it (Gateway API 1.5+), else as
//! `v1beta1` (the same stored objects: the provisioner reads `v1beta1`).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::DynamicResourceScope;
use kube::{Client, Resource};
use serde::Deserialize;

use super::LookupError;
use super::discovered::{ApiVersions, Discovered};
use crate::rules::{GrantFrom, GrantTo, ReferenceGrantInfo};

/// A ReferenceGrant, as far as the matching reads it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReferenceGrant {
    metadata: ObjectMeta,
    spec: GrantSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct GrantSpec {
    from: Vec<GrantEntry>,
    to: Vec<GrantEntry>,
}

/// A `from` or `to` entry; a null field reads as empty, as Go's zero value (the core
/// group is `""`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct GrantEntry {
    group: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

versioned_resource!(ReferenceGrant, DynamicResourceScope);

const GRANT_API: ApiVersions = ApiVersions {
    group: "gateway.networking.k8s.io",
    versions: &["v1", "v1beta1"],
    plural: "referencegrants",
};

impl ReferenceGrant {
    pub fn slim(self) -> ReferenceGrantInfo {
        ReferenceGrantInfo {
            name: self.metadata.name.unwrap_or_default(),
            from: self
                .spec
                .from
                .into_iter()
                .map(|f| GrantFrom {
                    group: f.group.unwrap_or_default(),
                    kind: f.kind.unwrap_or_default(),
                    namespace: f.namespace.unwrap_or_default(),
                })
                .collect(),
            to: self
                .spec
                .to
                .into_iter()
                .map(|t| GrantTo {
                    group: t.group.unwrap_or_default(),
                    kind: t.kind.unwrap_or_default(),
                    name: t.name,
                })
                .collect(),
        }
    }
}

/// The ReferenceGrants of the live cluster.
pub struct Grants {
    api: Arc<Discovered<()>>,
}

impl Grants {
    pub fn new(client: Client) -> Self {
        Grants {
            api: Discovered::on_demand(client, GRANT_API),
        }
    }

    /// The ReferenceGrants in `namespace`, read from the API server (only cross-namespace
    /// reviews in `reference-grant` mode ask), in the version discovery found (asked once,
    /// and again while it finds none). A cluster without the API has none.
    pub async fn grants_in(&self, namespace: &str) -> Result<Vec<ReferenceGrantInfo>, LookupError> {
        let version = match self.api.served() {
            Some(version) => version,
            None => match self.api.discover().await {
                Some(version) => version,
                None => return Ok(Vec::new()),
            },
        };
        let resource = GRANT_API.resource(version, "ReferenceGrant");
        let api =
            Api::<ReferenceGrant>::namespaced_with(self.api.client().clone(), namespace, &resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list.items.into_iter().map(ReferenceGrant::slim).collect()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Vec::new()),
            Err(error) => Err(LookupError::api("referencegrants", error)),
        }
    }
}
