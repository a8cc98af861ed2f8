//! VolumeGroupSnapshots (`groupsnapshot.storage.k8s.io`): the group snapshot a claim names,
//! and its member VolumeSnapshots, which are what can be restored.
//!
//! The API moved through `v1alpha1`, `v1beta1`, `v1beta2` and `v1`; the first of those the
//! cluster serves is read ([`Discovered`], asked for each review: one is rare). Members are
//! found from the VolumeSnapshot side, which every version keeps: `status.volumeGroupSnapshotName`,
//! or an owner reference to the group snapshot (matched by group, kind, name and uid, not
//! by version), and under `v1alpha1` the group's own `status.pvcVolumeSnapshotRefList`.
//!
//! Not watched: `group-snapshot` refuses every such claim, so each review of one ends in a
//! denial, which is confirmed against the API server; a cache would serve no review.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::{DynamicResourceScope, NamespaceResourceScope};
use kube::{Client, Resource};
use serde::Deserialize;

use super::discovered::{ApiVersions, Discovered};
use crate::rules::{GROUP_SNAPSHOT_GROUP, GroupSnapshotFact, SNAPSHOT_GROUP};

const GROUP_SNAPSHOT_API: ApiVersions = ApiVersions {
    group: GROUP_SNAPSHOT_GROUP,
    versions: &["v1", "v1beta2", "v1beta1", "v1alpha1"],
    plural: "volumegroupsnapshots",
};

const GROUP_SNAPSHOT_KIND: &str = "VolumeGroupSnapshot";

/// A VolumeGroupSnapshot of any version: its uid, and (`v1alpha1`) the members its status lists.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupSnapshot {
    metadata: ObjectMeta,
    status: Option<GroupStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GroupStatus {
    pvc_volume_snapshot_ref_list: Vec<MemberPair>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MemberPair {
    volume_snapshot_ref: NameRef,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct NameRef {
    name: Option<String>,
}

versioned_resource!(GroupSnapshot, DynamicResourceScope);

/// A VolumeSnapshot, as far as its membership of a group snapshot goes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupMember {
    metadata: ObjectMeta,
    status: Option<MemberStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MemberStatus {
    volume_group_snapshot_name: Option<String>,
}

slim_resource!(
    GroupMember,
    "VolumeSnapshot",
    SNAPSHOT_GROUP,
    "v1",
    "volumesnapshots",
    NamespaceResourceScope
);

impl GroupMember {
    /// Whether this snapshot belongs to the group snapshot `name` of `uid`.
    fn belongs_to(&self, name: &str, uid: Option<&str>) -> bool {
        let named = self
            .status
            .as_ref()
            .and_then(|s| s.volume_group_snapshot_name.as_deref())
            == Some(name);
        let owned = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| {
                owner.kind == GROUP_SNAPSHOT_KIND
                    && owner.api_version.split('/').next() == Some(GROUP_SNAPSHOT_GROUP)
                    && owner.name == name
                    && Some(owner.uid.as_str()) == uid
            });
        named || owned
    }
}

/// The group snapshots of the live cluster.
pub struct GroupSnapshots {
    api: Arc<Discovered<()>>,
}

impl GroupSnapshots {
    pub fn new(client: Client) -> Self {
        GroupSnapshots {
            api: Discovered::on_demand(client, GROUP_SNAPSHOT_API),
        }
    }

    /// The group snapshot `namespace/name` and its members. What cannot be read is
    /// [`GroupSnapshotFact::Unknown`]: the rule refuses the claim either way, naming fewer
    /// details.
    pub async fn lookup(&self, namespace: &str, name: &str) -> GroupSnapshotFact {
        let Some(version) = self.api.discover().await else {
            return GroupSnapshotFact::Unknown;
        };
        let client = self.api.client();
        let resource = GROUP_SNAPSHOT_API.resource(version, GROUP_SNAPSHOT_KIND);
        let groups = Api::<GroupSnapshot>::namespaced_with(client.clone(), namespace, &resource);
        let group = match groups.get_opt(name).await {
            Ok(Some(group)) => group,
            Ok(None) => return GroupSnapshotFact::Missing,
            Err(error) => {
                tracing::debug!(%error, "reading a VolumeGroupSnapshot failed");
                return GroupSnapshotFact::Unknown;
            }
        };
        let uid = group.metadata.uid.as_deref();
        let mut members: BTreeSet<String> = group
            .status
            .iter()
            .flat_map(|s| &s.pvc_volume_snapshot_ref_list)
            .filter_map(|pair| pair.volume_snapshot_ref.name.clone())
            .collect();
        let snapshots = Api::<GroupMember>::namespaced(client.clone(), namespace);
        match snapshots.list(&ListParams::default()).await {
            Ok(list) => members.extend(
                list.items
                    .iter()
                    .filter(|snapshot| snapshot.belongs_to(name, uid))
                    .filter_map(|snapshot| snapshot.metadata.name.clone()),
            ),
            Err(error) => {
                tracing::debug!(%error, "listing the members of a VolumeGroupSnapshot failed")
            }
        }
        GroupSnapshotFact::Found {
            members: members.into_iter().collect(),
        }
    }
}
