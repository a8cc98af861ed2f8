//! The facts of the APIs a cluster may not serve, besides snapshots: VolumePopulators,
//! VolumeGroupSnapshots, VolumeAttributesClasses and ReferenceGrants. Each is read (and
//! the first two kinds watched) only while a rule that reads it is on.

use kube::Client;

use super::WatchOptions;
use super::attributes::AttributesClasses;
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
