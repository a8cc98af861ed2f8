//! StatefulSets: each `spec.volumeClaimTemplates[]` entry is the claim the StatefulSet
//! controller will create for every replica, so a template with a data source is judged
//! by the rules as that claim would be, and the StatefulSet is refused at apply instead of
//! its pods waiting on claims that the claim webhook refuses one by one.
//!
//! The claims the controller creates are named `<template>-<set>-<ordinal>` and differ only
//! in name: every replica of a clone template clones the same source, which is valid, so a
//! template is judged once.

use kube::core::admission::Operation;
use serde::{Deserialize, Deserializer};

use super::envelope::{ReviewKind, ReviewRequest};
use super::triage::{SkipReason, Triage, claim_request, review_namespace};
use crate::lenient::{d_any, lenient_string};
use crate::rules::{ClaimSpec, DataSourceRequest};

const APPS_GROUP: &str = "apps";
const STATEFULSET_KIND: &str = "StatefulSet";

/// One `volumeClaimTemplates[]` entry, reduced to what the rules read.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ClaimTemplate {
    name: Option<String>,
    spec: ClaimSpec,
}

/// The claim a template stands for, and how messages name the template.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateRequest {
    /// `volumeClaimTemplates[0] "data"`: the prefix of each line about this template.
    pub label: String,
    pub request: DataSourceRequest,
}

pub(super) fn is_statefulset(request: &ReviewRequest) -> bool {
    is_statefulset_kind(&request.kind)
}

pub(super) fn is_statefulset_kind(kind: &ReviewKind) -> bool {
    kind.group == APPS_GROUP && kind.kind == STATEFULSET_KIND
}

/// Which templates of a StatefulSet the rules judge: on CREATE, every template with a clone
/// or restore data source; on UPDATE, the same, but only when the templates changed.
///
/// The API server refuses an update that changes `volumeClaimTemplates` before validating
/// webhooks are called, so an UPDATE (a scale, a new image) normally leaves them as they
/// were: its claims exist already, and judging it again could refuse a healthy StatefulSet
/// because a clone's source has since been deleted.
pub(super) fn triage(request: &ReviewRequest) -> Triage {
    if request.sub_resource.is_some() {
        return Triage::Skip(SkipReason::NotAClaim);
    }
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return Triage::Skip(SkipReason::NotCreate);
    }
    let Some(set) = request.object.as_ref() else {
        return Triage::Skip(SkipReason::NoObject);
    };
    let unchanged = request.operation == Operation::Update
        && request
            .old_object
            .as_ref()
            .is_some_and(|old| old.templates == set.templates);
    if unchanged {
        return Triage::Skip(SkipReason::TemplatesUnchanged);
    }
    // The controller creates the claims in the StatefulSet's namespace, whatever a
    // template's own metadata says. A nil storageClassName is still nil here: the
    // DefaultStorageClass admission plugin fills it only when each claim is created, and
    // the rules read a nil class as the default class, which is what the claim will get.
    let namespace = review_namespace(request, set);
    let templates: Vec<TemplateRequest> = set
        .templates
        .iter()
        .enumerate()
        .filter_map(|(index, template)| {
            let request = claim_request(|| namespace.clone(), &template.spec)?;
            Some(TemplateRequest {
                label: format!(
                    "volumeClaimTemplates[{index}] {:?}",
                    template.name.as_deref().unwrap_or_default()
                ),
                request,
            })
        })
        .collect();
    if templates.is_empty() {
        Triage::Skip(SkipReason::NotAClone)
    } else {
        Triage::JudgeTemplates(templates)
    }
}

// ---- Tolerant deserialization, as for the claim: the pod template, managedFields and
// everything else not read are skipped without being built.

impl<'de> Deserialize<'de> for ClaimTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct Meta {
            #[serde(default, deserialize_with = "lenient_string")]
            name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default, deserialize_with = "lenient_meta")]
            metadata: Meta,
            #[serde(default, deserialize_with = "lenient_spec")]
            spec: ClaimSpec,
        }
        fn lenient_meta<'de, D: Deserializer<'de>>(d: D) -> Result<Meta, D::Error> {
            d_any(d)
        }
        fn lenient_spec<'de, D: Deserializer<'de>>(d: D) -> Result<ClaimSpec, D::Error> {
            d_any(d)
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(ClaimTemplate {
            name: wire.metadata.name,
            spec: wire.spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::review::parse;
    use crate::rules::{SourceKind, SourceReference, TypedReference};

    /// A StatefulSet as the API server sends it: defaulted, with a pod template and
    /// managedFields that the parser skips.
    fn statefulset(templates: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": "db", "namespace": "dev",
                "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                             "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
                "volumeClaimTemplates": templates
            }
        })
    }

    fn review(operation: &str, object: Value, old_object: Value) -> crate::review::ReviewRequest {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0c5b6a3e-2f0e-4b8e-9d2e-3c1f5a7b9d11",
                "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
                "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
                "name": "db",
                "namespace": "dev",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "oldObject": old_object,
                "dryRun": false
            }
        });
        parse(&serde_json::to_vec(&body).expect("json")).expect("a StatefulSet review parses")
    }

    fn template(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name}, "spec": spec, "status": {"phase": "Pending"}})
    }

    fn templates() -> Value {
        json!([
            template(
                "data",
                json!({
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "10Gi"}},
                    "dataSource": {"kind": "PersistentVolumeClaim", "name": "golden"}
                })
            ),
            template(
                "logs",
                json!({
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "gp3",
                    "resources": {"requests": {"storage": "1Gi"}}
                })
            ),
            template(
                "restored",
                json!({
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "gp3",
                    "volumeMode": "Block",
                    "resources": {"requests": {"storage": "5Gi"}},
                    "dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                      "name": "nightly"}
                })
            )
        ])
    }

    #[test]
    fn create_judges_each_template_with_a_data_source_as_the_claim_it_will_create() {
        let request = review("CREATE", statefulset(templates()), Value::Null);
        assert_eq!(
            crate::review::triage(&request),
            Triage::JudgeTemplates(vec![
                TemplateRequest {
                    label: r#"volumeClaimTemplates[0] "data""#.to_owned(),
                    request: DataSourceRequest {
                        namespace: "dev".to_owned(),
                        source: SourceReference {
                            kind: SourceKind::Claim,
                            name: "golden".to_owned(),
                            namespace: None,
                            api_group: None,
                            field: "dataSource",
                        },
                        spec: ClaimSpec {
                            data_source: Some(Box::new(TypedReference {
                                kind: Some("PersistentVolumeClaim".to_owned()),
                                name: Some("golden".to_owned()),
                                ..TypedReference::default()
                            })),
                            data_source_ref: None,
                            volume_mode: None,
                            // Nil: the claim gets the default class when it is created.
                            storage_class: None,
                            requested_storage: Some("10Gi".to_owned()),
                            access_modes: vec!["ReadWriteOnce".to_owned()],
                            selector: None,
                            volume_attributes_class_name: None,
                        },
                    },
                },
                TemplateRequest {
                    label: r#"volumeClaimTemplates[2] "restored""#.to_owned(),
                    request: DataSourceRequest {
                        namespace: "dev".to_owned(),
                        source: SourceReference {
                            kind: SourceKind::Snapshot,
                            name: "nightly".to_owned(),
                            namespace: None,
                            api_group: Some("snapshot.storage.k8s.io".to_owned()),
                            field: "dataSourceRef",
                        },
                        spec: ClaimSpec {
                            data_source: None,
                            data_source_ref: Some(Box::new(TypedReference {
                                api_group: Some("snapshot.storage.k8s.io".to_owned()),
                                kind: Some("VolumeSnapshot".to_owned()),
                                name: Some("nightly".to_owned()),
                                namespace: None,
                            })),
                            volume_mode: Some("Block".to_owned()),
                            storage_class: Some("gp3".to_owned()),
                            requested_storage: Some("5Gi".to_owned()),
                            access_modes: vec!["ReadWriteOnce".to_owned()],
                            selector: None,
                            volume_attributes_class_name: None,
                        },
                    },
                },
            ])
        );
    }

    #[test]
    fn the_claims_go_to_the_statefulsets_namespace_whatever_a_template_says() {
        let mut object = statefulset(templates());
        object["spec"]["volumeClaimTemplates"][0]["metadata"]["namespace"] = json!("elsewhere");
        let Triage::JudgeTemplates(templates) =
            crate::review::triage(&review("CREATE", object, Value::Null))
        else {
            panic!("judged");
        };
        assert_eq!(templates[0].request.namespace, "dev");
    }

    #[test]
    fn an_update_that_leaves_the_templates_as_they_were_is_skipped() {
        let old = statefulset(templates());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:17");
        assert_eq!(
            crate::review::triage(&review("UPDATE", new, old)),
            Triage::Skip(SkipReason::TemplatesUnchanged)
        );
    }

    #[test]
    fn an_update_that_changes_a_template_is_judged() {
        let old = statefulset(templates());
        let mut new = old.clone();
        new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
            json!("20Gi");
        let Triage::JudgeTemplates(templates) = crate::review::triage(&review("UPDATE", new, old))
        else {
            panic!("judged");
        };
        assert_eq!(templates.len(), 2);
        assert_eq!(
            templates[0].request.spec.requested_storage.as_deref(),
            Some("20Gi")
        );
    }

    #[test]
    fn a_statefulset_without_data_sources_or_a_delete_is_skipped() {
        let plain = json!([template(
            "logs",
            json!({"resources": {"requests": {"storage": "1Gi"}}})
        )]);
        assert_eq!(
            crate::review::triage(&review("CREATE", statefulset(plain), Value::Null)),
            Triage::Skip(SkipReason::NotAClone)
        );
        assert_eq!(
            crate::review::triage(&review("CREATE", statefulset(Value::Null), Value::Null)),
            Triage::Skip(SkipReason::NotAClone)
        );
        assert_eq!(
            crate::review::triage(&review("DELETE", Value::Null, statefulset(templates()))),
            Triage::Skip(SkipReason::NotCreate)
        );
    }

    #[test]
    fn odd_shapes_are_read_as_absent_not_refused() {
        for odd in [
            json!("data"),
            json!(42),
            json!({"name": "data"}),
            json!([1, "data", null, [], {"metadata": "m", "spec": "s"}]),
        ] {
            assert_eq!(
                crate::review::triage(&review("CREATE", statefulset(odd.clone()), Value::Null)),
                Triage::Skip(SkipReason::NotAClone),
                "{odd}"
            );
        }
        // A template without a name is still judged, and says so.
        let unnamed =
            json!([{"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "golden"}}}]);
        let Triage::JudgeTemplates(templates) =
            crate::review::triage(&review("CREATE", statefulset(unnamed), Value::Null))
        else {
            panic!("judged");
        };
        assert_eq!(templates[0].label, r#"volumeClaimTemplates[0] """#);
    }
}
