//! The facts of one review, from the caches where they are served and from the API
//! server otherwise (and always, to confirm a denial).

use std::sync::Arc;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};

use super::cluster::ClusterFacts;
use super::slim::{ClaimObject, ClassInfo, PodClaims, PodUse, VolumeObject, slim_class};
use super::{FactSource, Freshness, LookupError};
use crate::rules::{
    AttributesClassFact, ClassFact, DataSourceRequest, Fact, Facts, FoundClass, GrantFact,
    PodsFact, Policy, SnapshotFact, SourceClaim, SourceKind, SourceVolume, match_grant,
};

impl ClusterFacts {
    async fn claim(
        &self,
        namespace: &str,
        name: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<SourceClaim>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(claim) = self.claims.get_namespaced(namespace, name)
        {
            return Ok(Some(claim));
        }
        let api = Api::<ClaimObject>::namespaced(self.client.clone(), namespace);
        let claim = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.claims.resource, e))?;
        Ok(claim.map(|c| Arc::new(c.slim())))
    }

    async fn volume(
        &self,
        name: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<SourceVolume>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(volume) = self.volumes.get(name)
        {
            return Ok(Some(volume));
        }
        let api = Api::<VolumeObject>::all(self.client.clone());
        let volume = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.volumes.resource, e))?;
        Ok(volume.map(|v| Arc::new(v.slim())))
    }

    async fn all_classes(&self, freshness: Freshness) -> Result<Vec<Arc<ClassInfo>>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(classes) = self.classes.snapshot()
        {
            return Ok(classes);
        }
        let api = Api::<StorageClass>::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| LookupError::api(self.classes.resource, e))?;
        Ok(list
            .items
            .into_iter()
            .map(|c| Arc::new(slim_class(c)))
            .collect())
    }

    async fn class(
        &self,
        requested: Option<&str>,
        all: &[Arc<ClassInfo>],
    ) -> Result<ClassFact, LookupError> {
        if let Some(fact) = class_among(requested, all) {
            return Ok(fact);
        }
        let name = requested.unwrap_or_default();
        // Not cached yet: a class created a moment ago must not be reported missing.
        let api = Api::<StorageClass>::all(self.client.clone());
        let class = api
            .get_opt(name)
            .await
            .map_err(|e| LookupError::api(self.classes.resource, e))?;
        Ok(class.map_or_else(
            || ClassFact::Missing(name.to_owned()),
            |c| class_fact(&slim_class(c), requested),
        ))
    }

    /// Pods that mount the source, from the pods index (or nothing to read while
    /// no rule that reads pods is on); `None` while the index is not served.
    fn cached_pods(&self, policy: &Policy, namespace: &str, claim: &str) -> Option<PodsFact> {
        if !policy.reads(Fact::Pods) {
            return Some(PodsFact::default());
        }
        self.cached_pods_using(namespace, claim)
            .map(PodsFact::Known)
    }

    /// The pods that mount `claim`, from the pods index; `None` while it is not served.
    fn cached_pods_using(&self, namespace: &str, claim: &str) -> Option<Vec<String>> {
        self.pods.as_ref()?.in_namespace_with(namespace, |pods| {
            pods_mounting(pods.map(|pod| pod.as_ref()), claim)
        })
    }

    async fn pods_using(
        &self,
        namespace: &str,
        claim: &str,
        freshness: Freshness,
    ) -> Result<Vec<String>, LookupError> {
        if freshness == Freshness::Cached
            && let Some(pods) = self.cached_pods_using(namespace, claim)
        {
            return Ok(pods);
        }
        // Read as the pods index reads them (PodClaims), so both paths keep the same pods.
        let api = Api::<PodClaims>::namespaced(self.client.clone(), namespace);
        // resourceVersion=0 is served from the API server's watch cache, not from etcd; a
        // confirmation reads the current state.
        let params = match freshness {
            Freshness::Cached => ListParams::default().match_any(),
            Freshness::Live => ListParams::default(),
        };
        let pods = api
            .list(&params)
            .await
            .map_err(|e| LookupError::api("pods", e))?;
        let pods: Vec<PodUse> = pods
            .items
            .into_iter()
            .filter_map(PodClaims::into_use)
            .collect();
        Ok(pods_mounting(pods.iter(), claim))
    }
}

impl ClusterFacts {
    /// The VolumeAttributesClass a clone or restore names, while a rule reads it.
    async fn attributes_class(
        &self,
        request: &DataSourceRequest,
        freshness: Freshness,
    ) -> Result<AttributesClassFact, LookupError> {
        match (
            self.apis.attributes_classes.as_ref(),
            attributes_class_name(request),
        ) {
            (Some(classes), Some(name)) => classes.lookup(name, freshness).await,
            _ => Ok(AttributesClassFact::NotChecked),
        }
    }

    /// [`ClusterFacts::attributes_class`] from the cache alone; `None`: it cannot say.
    fn cached_attributes_class(&self, request: &DataSourceRequest) -> Option<AttributesClassFact> {
        match (
            self.apis.attributes_classes.as_ref(),
            attributes_class_name(request),
        ) {
            (Some(classes), Some(name)) => classes.cached(name),
            _ => Some(AttributesClassFact::NotChecked),
        }
    }
}

fn attributes_class_name(request: &DataSourceRequest) -> Option<&str> {
    request
        .spec
        .volume_attributes_class_name
        .as_deref()
        .filter(|name| !name.is_empty())
}

/// The names of the pods that mount `claim`, sorted.
fn pods_mounting<'a>(pods: impl Iterator<Item = &'a PodUse>, claim: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .filter(|pod| pod.mounts(claim))
        .map(|pod| pod.name().to_owned())
        .collect();
    names.sort();
    names
}

impl FactSource for ClusterFacts {
    async fn gather(
        &self,
        request: &DataSourceRequest,
        policy: &Policy,
        freshness: Freshness,
    ) -> Result<Facts, LookupError> {
        let namespace = request
            .source_namespace(policy)
            .unwrap_or(&request.namespace);
        let name = &request.source.name;
        let mut facts = Facts::default();
        if request.needs_grant(policy) {
            // Nothing of the other namespace is read before a grant allows it.
            let grants = self.apis.grants.grants_in(namespace).await?;
            facts.grant = match_grant(&grants, request);
            if facts.grant == GrantFact::NotFound {
                return Ok(facts);
            }
        }
        match request.source.kind {
            SourceKind::Claim | SourceKind::Snapshot => {}
            SourceKind::GroupSnapshot => {
                if policy.reads(Fact::GroupSnapshot) {
                    facts.group_snapshot = self.apis.group_snapshots.lookup(namespace, name).await;
                }
                return Ok(facts);
            }
            SourceKind::Populator => {
                if let Some(populators) = &self.apis.populators {
                    facts.populator = populators
                        .lookup(request.source_group(), request.source_kind(), freshness)
                        .await;
                }
                return Ok(facts);
            }
        }
        let attributes_class = self.attributes_class(request, freshness).await?;
        if request.is_restore() {
            facts.attributes_class = attributes_class;
            facts.snapshot = self.snapshots.lookup(namespace, name, freshness).await?;
            let classes = self.all_classes(freshness).await?;
            facts.class = self
                .class(request.spec.storage_class.as_deref(), &classes)
                .await?;
            let driver = match &facts.snapshot {
                SnapshotFact::Found {
                    content: Some(content),
                    ..
                } => Some(content.driver.as_str()),
                _ => None,
            };
            facts.classes_for_source_driver = classes_of(&classes, driver);
            return Ok(facts);
        }
        let Some(source) = self.claim(namespace, name, freshness).await? else {
            return Ok(facts);
        };
        // The volume, the classes and the pods do not depend on each other: asked at once,
        // a lookup that misses every cache (or a confirmation) costs two round trips to the
        // API server, not four.
        let volume = async {
            match source.volume_name.as_deref().filter(|v| !v.is_empty()) {
                Some(volume_name) => self.volume(volume_name, freshness).await,
                None => Ok(None),
            }
        };
        let classes = async {
            let classes = self.all_classes(freshness).await?;
            let class = self
                .class(request.spec.storage_class.as_deref(), &classes)
                .await?;
            Ok::<_, LookupError>((classes, class))
        };
        let pods = async {
            if !policy.reads(Fact::Pods) {
                return PodsFact::default();
            }
            // Pods are read for a warning only: when they cannot be read (e.g. the pods rule
            // is missing from a customised ClusterRole), the rule says so, and the clone is
            // judged on everything else.
            match self.pods_using(namespace, name, freshness).await {
                Ok(pods) => PodsFact::Known(pods),
                Err(LookupError::Api { message, .. }) => PodsFact::Unknown(message),
                Err(timeout) => PodsFact::Unknown(timeout.to_string()),
            }
        };
        let (volume, classes, pods) = futures::join!(volume, classes, pods);
        let (volume, (classes, class)) = (volume?, classes?);
        Ok(Facts {
            grant: facts.grant,
            attributes_class,
            ..clone_facts(&source, volume.as_deref(), &classes, class, pods)
        })
    }

    fn cached(&self, request: &DataSourceRequest, policy: &Policy) -> Option<Facts> {
        // Only clones are read here; restores, other sources and grants by `gather`
        // (their lookups are not all cached).
        if request.source.kind != SourceKind::Claim || request.needs_grant(policy) {
            return None;
        }
        let namespace = request
            .source_namespace(policy)
            .unwrap_or(&request.namespace);
        let name = &request.source.name;
        let source = self.claims.get_namespaced(namespace, name)?;
        let volume = match source.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(volume) => Some(self.volumes.get(volume)?),
            None => None,
        };
        let classes = self.classes.snapshot()?;
        let class = class_among(request.spec.storage_class.as_deref(), &classes)?;
        let pods = self.cached_pods(policy, namespace, name)?;
        let attributes_class = self.cached_attributes_class(request)?;
        Some(Facts {
            attributes_class,
            ..clone_facts(&source, volume.as_deref(), &classes, class, pods)
        })
    }
    fn ready(&self) -> bool {
        self.is_ready()
    }
}

/// The facts of a clone, from its source, volume, classes and pods however they were read
/// (from the caches or the API server).
fn clone_facts(
    source: &SourceClaim,
    volume: Option<&SourceVolume>,
    classes: &[Arc<ClassInfo>],
    class: ClassFact,
    pods: PodsFact,
) -> Facts {
    let driver = volume.and_then(|v| v.csi_driver.as_deref());
    Facts {
        source: Some(source.clone()),
        volume: volume.cloned(),
        class,
        pods,
        classes_for_source_driver: classes_of(classes, driver),
        source_class_parameters: volume
            .and_then(|v| v.storage_class.as_deref())
            .and_then(|class| classes.iter().find(|c| c.name == class))
            .map(|class| class.parameters.clone()),
        ..Facts::default()
    }
}

/// The class a claim asks for (`requested`: its `storageClassName`), among `all`; `None`
/// when it names one that is not among them.
fn class_among(requested: Option<&str>, all: &[Arc<ClassInfo>]) -> Option<ClassFact> {
    match requested {
        Some("") => Some(ClassFact::Disabled),
        None => Some(default_class(all).map_or(ClassFact::NoDefault, |c| class_fact(c, None))),
        Some(name) => all
            .iter()
            .find(|c| c.name == name)
            .map(|c| class_fact(c, requested)),
    }
}

fn class_fact(class: &ClassInfo, requested: Option<&str>) -> ClassFact {
    ClassFact::Found(FoundClass {
        name: class.name.clone(),
        provisioner: class.provisioner.clone(),
        is_default: class.is_default && requested.is_none(),
        allowed_topologies: class.allowed_topologies.clone(),
        parameters: class.parameters.clone(),
    })
}

/// The names of the classes provisioned by `driver`, sorted, for the hints.
fn classes_of(classes: &[Arc<ClassInfo>], driver: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = classes
        .iter()
        .filter(|c| Some(c.provisioner.as_str()) == driver)
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    names
}

/// The default class: annotated as default, the newest if several are (Kubernetes 1.26+).
fn default_class(classes: &[Arc<ClassInfo>]) -> Option<&ClassInfo> {
    classes
        .iter()
        .filter(|c| c.is_default)
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| b.name.cmp(&a.name)))
        .map(|c| c.as_ref())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use kube::ResourceExt;

    use super::*;
    use crate::facts::cache::{Cache, delivered_key};
    use crate::facts::slim;

    fn class(name: &str, default: bool, created: &str) -> Arc<ClassInfo> {
        Arc::new(ClassInfo {
            name: name.into(),
            provisioner: "p".into(),
            is_default: default,
            created: created.into(),
            allowed_topologies: Vec::new(),
            parameters: Default::default(),
        })
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("old", true, "2026-01-01T00:00:00Z"),
            class("new", true, "2026-06-01T00:00:00Z"),
            class("plain", false, "2026-09-01T00:00:00Z"),
        ];
        assert_eq!(
            default_class(&classes).map(|c| c.name.as_str()),
            Some("new")
        );
        assert_eq!(default_class(&classes[2..]), None);
    }

    #[test]
    fn slim_objects_keep_what_the_rules_read() {
        let claim: ClaimObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "dev", "uid": "u1",
                         "deletionTimestamp": "2026-11-21T10:00:00Z",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"volumeName": "pv-1", "volumeMode": "Block",
                     "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                     "resources": {"requests": {"storage": "8Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}
        }))
        .expect("claim");
        assert_eq!(
            claim.slim(),
            SourceClaim {
                uid: Some("u1".into()),
                phase: Some("Bound".into()),
                deletion_timestamp: Some("2026-11-21T10:00:00Z".into()),
                volume_name: Some("pv-1".into()),
                volume_mode: Some("Block".into()),
                requested_storage: Some("8Gi".into()),
                capacity: Some("10Gi".into()),
                storage_class: None,
                access_modes: Some("ReadWriteOnce,ReadOnlyMany".into()),
            }
        );
        let volume: VolumeObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-1", "labels": {"a": "b"}},
            "spec": {"hostPath": {"path": "/data"}, "claimRef": {"namespace": "dev", "name": "data", "uid": "u1"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "zone", "operator": "In", "values": ["a", "b"]},
                         {"key": "rack", "operator": "NotIn", "values": ["r1"]}]}]}}},
            "status": {"phase": "Bound"}
        }))
        .expect("volume");
        let slim = volume.slim();
        assert_eq!(&*slim.plugin, "hostPath");
        assert_eq!(slim.csi_driver, None);
        assert_eq!(slim.claim_ref.and_then(|r| r.uid).as_deref(), Some("u1"));
        assert_eq!(
            slim.node_affinity.to_vec(),
            vec![std::collections::BTreeMap::from([(
                "zone".to_owned(),
                vec!["a".to_owned(), "b".to_owned()]
            )])],
            "only In expressions name where the volume is"
        );
        // Shared values are kept once.
        let again: VolumeObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-2"}, "spec": {"csi": {"driver": "d"}},
            "status": {"phase": "Bound"}
        }))
        .expect("volume");
        let again = again.slim();
        assert_eq!(&*again.plugin, "csi");
        assert!(Arc::ptr_eq(
            again.phase.as_ref().expect("phase"),
            &slim::shared("Bound")
        ));
        let class: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "ebs.csi.aws.com"
        }))
        .expect("class");
        let slim = slim_class(class);
        assert!(slim.is_default);
        assert_eq!(slim.provisioner, "ebs.csi.aws.com");
    }

    #[test]
    fn pods_count_only_while_they_can_use_the_claim() {
        let pod = |phase: &str, claim: &str| -> serde_json::Value {
            serde_json::json!({
                "metadata": {"name": "p", "namespace": "dev", "resourceVersion": "7",
                             "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}},
                                     {"name": "cfg", "configMap": {"name": "x"}}]},
                "status": {"phase": phase}
            })
        };
        let as_slim = |value: serde_json::Value| -> PodClaims {
            serde_json::from_value(value).expect("slim pod")
        };
        let mounting = |pods: Vec<serde_json::Value>| -> Vec<String> {
            let pods: Vec<PodUse> = pods
                .into_iter()
                .filter_map(|pod| as_slim(pod).into_use())
                .collect();
            pods_mounting(pods.iter(), "data")
        };
        assert_eq!(mounting(vec![pod("Running", "data")]), ["p"]);
        assert_eq!(mounting(vec![pod("Pending", "data")]), ["p"]);
        assert_eq!(
            mounting(vec![pod("Succeeded", "data")]),
            Vec::<String>::new()
        );
        assert_eq!(mounting(vec![pod("Failed", "data")]), Vec::<String>::new());
        assert_eq!(
            mounting(vec![pod("Running", "other")]),
            Vec::<String>::new()
        );
        let slim = as_slim(pod("Running", "data"));
        assert_eq!(delivered_key(&slim).as_deref(), Some("dev/p"));
        assert_eq!(slim.resource_version().as_deref(), Some("7"));
        assert_eq!(slim.into_use(), Some(PodUse::new("p", ["data"])));
        assert_eq!(
            as_slim(pod("Succeeded", "data")).into_use(),
            None,
            "finished pods are dropped"
        );
        let no_claims = serde_json::json!({"metadata": {"name": "q", "namespace": "dev"},
                                           "spec": {"volumes": null}, "status": {}});
        assert_eq!(
            as_slim(no_claims).into_use(),
            None,
            "pods without claims cost nothing"
        );
    }

    #[test]
    fn a_namespace_is_a_range_of_the_cache() {
        let cache: Arc<Cache<u32>> = Cache::new("test");
        for (key, value) in [("a/x", 1), ("ab/y", 2), ("b/z", 3), ("a/w", 4)] {
            cache.write().insert(key.into(), Arc::new(value));
        }
        let values = |namespace: &str| {
            cache.in_namespace_with(namespace, |objects| {
                objects.map(|v| **v).collect::<Vec<u32>>()
            })
        };
        assert_eq!(values("a"), None, "not served before the cache is in sync");
        cache.serving.store(true, Ordering::Release);
        assert_eq!(values("a"), Some(vec![4, 1]));
        assert_eq!(values("c"), Some(vec![]));
        assert_eq!(cache.get_namespaced("ab", "y").as_deref(), Some(&2));
    }
}
