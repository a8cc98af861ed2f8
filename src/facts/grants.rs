//! ReferenceGrants (`gateway.networking.k8s.io/v1beta1`): whether a claim may use a source
//! in another namespace (`crossNamespace: reference-grant`). Read from the API server, only
//! by the reviews that ask.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use serde::Deserialize;

use super::LookupError;
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

slim_resource!(
    ReferenceGrant,
    "ReferenceGrant",
    "gateway.networking.k8s.io",
    "v1beta1",
    "referencegrants",
    NamespaceResourceScope
);

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

/// The ReferenceGrants in `namespace`, read from the API server (only cross-namespace
/// reviews in `reference-grant` mode ask). A cluster without the API has none.
pub async fn grants_in(
    client: &Client,
    namespace: &str,
) -> Result<Vec<ReferenceGrantInfo>, LookupError> {
    let api = Api::<ReferenceGrant>::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.into_iter().map(ReferenceGrant::slim).collect()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Vec::new()),
        Err(error) => Err(LookupError::api("referencegrants", error)),
    }
}
