//! End-to-end: restores from a VolumeSnapshot and cross-namespace sources, against the real
//! kube-apiserver through the shipped webhook configuration. The snapshot and ReferenceGrant
//! CRDs are the project's own (tests/cluster/crds/): structural schemas with the fields the
//! rules read, which is enough for the API server to store and serve real objects, with
//! status set through the status subresource as the snapshot controller would. Started by
//! tests/e2e.sh on the same control plane as tests/e2e.rs.

mod common;

use std::sync::Once;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use common::binary::{Webhook, admin_get};
use common::cluster::*;

fn crds() {
    static ONCE: Once = Once::new();
    ONCE.call_once(install_crds);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let (group, version, plural) = match kind {
        "VolumeSnapshot" => ("snapshot.storage.k8s.io", "v1", "volumesnapshots"),
        "VolumeSnapshotContent" => ("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents"),
        _ => ("gateway.networking.k8s.io", "v1beta1", "referencegrants"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A snapshot and its content, as the snapshot controller leaves them; each test changes
/// what its rule is about.
#[derive(Clone)]
struct Snapshot<'a> {
    namespace: &'a str,
    name: &'a str,
    driver: &'a str,
    /// `status` of the VolumeSnapshot; `None`: no status at all.
    status: Option<Value>,
    /// `None`: no content is created.
    content: Option<Value>,
    /// Deleted while this finalizer keeps it: deletionTimestamp set.
    deleting: Option<&'a str>,
}

impl<'a> Snapshot<'a> {
    fn ready(namespace: &'a str, name: &'a str) -> Self {
        Snapshot {
            namespace,
            name,
            driver: "ebs.csi.aws.com",
            status: Some(json!({"readyToUse": true, "restoreSize": "1Gi"})),
            content: Some(
                json!({"status": {"snapshotHandle": "snap-handle-1", "readyToUse": true}}),
            ),
            deleting: None,
        }
    }

    fn content_name(&self) -> String {
        format!("{}-{}-content", self.namespace, self.name)
    }

    /// Creates the objects; returns the VolumeSnapshot's deletionTimestamp, if deleting.
    fn create(&self) -> Option<String> {
        crds();
        runtime().block_on(async {
            let client = admin_client().await;
            let snapshots = api(&client, "VolumeSnapshot", Some(self.namespace));
            let mut object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "finalizers": self.deleting.into_iter().collect::<Vec<_>>()},
                "spec": {"source": {"persistentVolumeClaimName": "data"}}
            }))
            .expect("snapshot");
            object = snapshots
                .create(&PostParams::default(), &object)
                .await
                .expect("snapshot created");
            let uid = object.metadata.uid.clone().expect("uid");
            let content_name = self.content_name();
            if let Some(content) = &self.content {
                let mut spec = json!({
                    "driver": self.driver, "deletionPolicy": "Delete",
                    "source": {"snapshotHandle": "snap-handle-1"},
                    "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                          "namespace": self.namespace, "name": self.name, "uid": uid}
                });
                if let Some(overrides) = content.get("spec").and_then(Value::as_object) {
                    for (key, value) in overrides {
                        spec[key] = value.clone();
                    }
                }
                let mut metadata = json!({"name": content_name});
                if let Some(annotations) = content.get("annotations") {
                    metadata["annotations"] = annotations.clone();
                }
                let contents = api(&client, "VolumeSnapshotContent", None);
                let created: DynamicObject = contents
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({
                            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                            "metadata": metadata, "spec": spec
                        }))
                        .expect("content"),
                    )
                    .await
                    .expect("content created");
                if let Some(status) = content.get("status") {
                    contents
                        .patch_status(
                            &created.metadata.name.clone().expect("name"),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await
                        .expect("content status");
                }
            }
            if let Some(status) = &self.status {
                let mut status = status.clone();
                if self.content.is_some() && status.get("boundVolumeSnapshotContentName").is_none() {
                    status["boundVolumeSnapshotContentName"] = json!(content_name);
                }
                snapshots
                    .patch_status(self.name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                    .await
                    .expect("snapshot status");
            }
            if self.deleting.is_some() {
                snapshots
                    .delete(self.name, &Default::default())
                    .await
                    .expect("delete requested");
                let object = snapshots.get(self.name).await.expect("still there");
                return object.metadata.deletion_timestamp.map(|t| t.0.to_string());
            }
            None
        })
    }

    /// Creates the objects, then `kubectl create` of a claim named after the snapshot that
    /// restores it, with `size` (class gp3, Filesystem).
    fn restored(&self, size: &str) -> Run {
        self.create();
        let claim = restore_yaml(
            self.namespace,
            self.name,
            self.name,
            "gp3",
            size,
            "Filesystem",
        );
        create(&claim, &[])
    }
}

fn restore_yaml(
    namespace: &str,
    name: &str,
    snapshot: &str,
    class: &str,
    size: &str,
    mode: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  volumeMode: {mode}\n  \
         dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {snapshot}}}\n  \
         resources: {{requests: {{storage: {size}}}}}\n"
    )
}

/// Namespace `ns` with a ready VolumeSnapshot `snap` in it.
fn namespace_with_snapshot(ns: &str) {
    namespace(ns);
    Snapshot::ready(ns, "snap").create();
}

fn restore(namespace: &str, snapshot: &str) -> String {
    restore_yaml(namespace, "restore", snapshot, "gp3", "1Gi", "Filesystem")
}

// ---- restores ------------------------------------------------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_valid_restore_is_admitted() {
    let ns = "r-valid";
    namespace_with_snapshot(ns);
    assert_created(&create(&restore(ns, "snap"), &[]), "restore", &[]);
    // A bigger claim, another class of the same driver: also fine.
    assert_created(
        &create(
            &restore_yaml(ns, "bigger", "snap", "gp3-encrypted", "5Gi", "Filesystem"),
            &[],
        ),
        "bigger",
        &[],
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_missing_snapshot_is_refused_and_a_deleting_one_unless_a_restore_holds_it() {
    let ns = "r-exists";
    namespace(ns);
    crds();
    assert_denied(
        &create(&restore(ns, "nope"), &[]),
        "[snapshot-exists] VolumeSnapshot \"nope\" does not exist in namespace \"r-exists\"; create it first, or fix spec.dataSource.name",
    );
    // Kept by a finalizer that is not the provisioner's: nothing holds it for a restore.
    let since = Snapshot {
        deleting: Some("e2e.pvc-clone-guard.io/keep"),
        ..Snapshot::ready(ns, "going")
    }
    .create()
    .expect("deletionTimestamp");
    assert_denied(
        &create(&restore(ns, "going"), &[]),
        &format!(
            "[snapshot-deleting] VolumeSnapshot \"going\" is being deleted (since {since}); restore from a snapshot that is not being deleted"
        ),
    );
    // Kept by the provisioner's finalizer: a restore is under way, and the provisioner (v6.2+,
    // v6.1.2) lets new ones proceed too.
    let held = Snapshot {
        deleting: Some("provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection"),
        ..Snapshot::ready(ns, "held")
    };
    assert_created(
        &held.restored("1Gi"),
        "held",
        &[
            "[snapshot-deleting] VolumeSnapshot \"held\" is being deleted but a restore holds it: this one proceeds while it lasts",
        ],
    );
}

/// The provisioner's `getSnapshotSource` refuses a VolumeSnapshot of another API group, and
/// any dynamically provisioned claim with a selector.
#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_snapshot_of_another_api_group_and_a_restore_with_a_selector_are_refused() {
    let ns = "r-fields";
    namespace_with_snapshot(ns);
    assert_denied(
        &create(
            &restore(ns, "snap").replace(
                "apiGroup: snapshot.storage.k8s.io",
                "apiGroup: unsupported.group.io",
            ),
            &[],
        ),
        "[source-api-group] spec.dataSource names kind VolumeSnapshot with apiGroup \"unsupported.group.io\", but VolumeSnapshots belong to snapshot.storage.k8s.io; set apiGroup: snapshot.storage.k8s.io to restore VolumeSnapshot \"snap\"",
    );
    assert_denied(
        &create(
            &format!(
                "{}  selector: {{matchLabels: {{tier: db}}}}\n",
                restore(ns, "snap")
            ),
            &[],
        ),
        "[selector] this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to restore VolumeSnapshot \"snap\"",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_snapshot_not_bound_to_its_content_is_refused() {
    let ns = "r-bound";
    namespace(ns);
    let fresh = Snapshot {
        status: None,
        content: None,
        ..Snapshot::ready(ns, "fresh")
    };
    assert_denied(
        &fresh.restored("1Gi"),
        "[snapshot-bound] VolumeSnapshot \"fresh\" is not bound to a VolumeSnapshotContent (status.boundVolumeSnapshotContentName is empty); wait until it is bound, then create the claim\n\
         [snapshot-ready] VolumeSnapshot \"fresh\" is not ready to use (status.readyToUse is not set); wait until it is, then create the claim",
    );
    let orphan = Snapshot {
        content: None,
        status: Some(json!({"readyToUse": true, "boundVolumeSnapshotContentName": "gone"})),
        ..Snapshot::ready(ns, "orphan")
    };
    assert_denied(
        &orphan.restored("1Gi"),
        "[snapshot-bound] VolumeSnapshotContent \"gone\" of VolumeSnapshot \"orphan\" does not exist; restore from another snapshot",
    );
    Snapshot {
        content: Some(json!({"spec": {"volumeSnapshotRef": {"namespace": ns, "name": "other", "uid": "u-other"}},
                             "status": {"snapshotHandle": "h"}})),
        ..Snapshot::ready(ns, "stolen")
    }
    .create();
    let run = create(&restore(ns, "stolen"), &[]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(
            "[snapshot-bound] VolumeSnapshotContent \"r-bound-stolen-content\" points at VolumeSnapshot \"r-bound/other\" (uid u-other), not at \"r-bound/stolen\" (uid "
        ) && run.stderr.ends_with("); repair the binding or restore from another snapshot\n"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn driver_readiness_size_and_volume_mode_are_checked() {
    let ns = "r-rules";
    namespace(ns);
    let block = json!({"spec": {"sourceVolumeMode": "Block"}, "status": {"snapshotHandle": "h"}});
    let mut allowed = block.clone();
    allowed["annotations"] =
        json!({"snapshot.storage.kubernetes.io/allow-volume-mode-change": "true"});
    // Each snapshot as its rule needs it, the restore's size, and its refusal (None: admitted).
    let cases = [
        (
            Snapshot {
                driver: "pd.csi.storage.gke.io",
                ..Snapshot::ready(ns, "gke")
            },
            "1Gi",
            Some(
                "[snapshot-driver] VolumeSnapshot \"gke\" was taken by CSI driver pd.csi.storage.gke.io but StorageClass \"gp3\" is provisioned by ebs.csi.aws.com; set spec.storageClassName to a class provisioned by pd.csi.storage.gke.io, e.g. \"standard-rwo\"",
            ),
        ),
        (
            Snapshot {
                status: Some(json!({"readyToUse": false, "restoreSize": "1Gi"})),
                content: Some(json!({})),
                ..Snapshot::ready(ns, "cutting")
            },
            "1Gi",
            Some(
                "[snapshot-ready] VolumeSnapshot \"cutting\" is not ready to use (status.readyToUse is false); wait until it is, then create the claim",
            ),
        ),
        (
            Snapshot::ready(ns, "gib"),
            "100Mi",
            Some(
                "[restore-size] this claim requests 100Mi but snapshot \"gib\" needs at least 1Gi (its restoreSize); request at least 1Gi",
            ),
        ),
        (
            Snapshot {
                content: Some(block),
                ..Snapshot::ready(ns, "block")
            },
            "1Gi",
            Some(
                "[snapshot-volume-mode] VolumeSnapshot \"block\" was taken of a Block volume but this claim asks for Filesystem; set spec.volumeMode: Block, or annotate VolumeSnapshotContent \"r-rules-block-content\" with snapshot.storage.kubernetes.io/allow-volume-mode-change: \"true\"",
            ),
        ),
        (
            Snapshot {
                content: Some(allowed),
                ..Snapshot::ready(ns, "allowed")
            },
            "1Gi",
            None,
        ),
    ];
    for (snapshot, size, refusal) in cases {
        let run = snapshot.restored(size);
        match refusal {
            Some(message) => assert_denied(&run, message),
            None => assert_created(&run, snapshot.name, &[]),
        }
    }
}

// ---- cross-namespace sources (posted straight to a webhook in reference-grant mode) --------

fn cross_namespace_review(
    namespace: &str,
    kind: &str,
    group: Option<&str>,
    source_namespace: &str,
    name: &str,
) -> Value {
    let source =
        json!({"apiGroup": group, "kind": kind, "name": name, "namespace": source_namespace});
    let mut claim = common::claim("cross", None, "10Gi");
    claim["metadata"]["namespace"] = json!(namespace);
    claim["spec"]["dataSourceRef"] = source;
    let mut review = common::create(claim);
    review["request"]["namespace"] = json!(namespace);
    review
}

fn grant(namespace: &str, name: &str, from_namespace: &str, to: Value) {
    let grant = json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": from_namespace}],
                 "to": [to]}
    });
    // JSON is YAML: kubectl applies it as written (empty groups included).
    apply(&grant.to_string());
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn cross_namespace_sources_need_a_reference_grant() {
    crds();
    let (own, other) = ("x-dev", "x-prod");
    namespace(own);
    namespace_with_source(other);
    Snapshot::ready(other, "snap").create();
    let config = ENV.dir.join("reference-grant.yaml");
    std::fs::write(&config, "crossNamespace: reference-grant\n").expect("config");
    let runtime = runtime();
    let webhook = runtime.block_on(Webhook::start_with_kubeconfig(
        &["--config", config.to_str().expect("utf-8")],
        Some(&ENV.dir.join("webhook.kubeconfig")),
    ));
    runtime.block_on(async {
        for _ in 0..300 {
            if admin_get(&webhook.admin, "/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the reference-grant webhook is not ready");
    });
    let post = |review: &Value| -> Value {
        let (status, body) =
            runtime.block_on(webhook.post(&serde_json::to_vec(review).expect("json")));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("AdmissionReview")
    };
    let message = |answer: &Value| {
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let claim = cross_namespace_review(own, "PersistentVolumeClaim", None, other, "data");
    let snapshot = cross_namespace_review(
        own,
        "VolumeSnapshot",
        Some("snapshot.storage.k8s.io"),
        other,
        "snap",
    );
    // Hello is a registered populator kind here, so only the namespace is in question.
    apply(
        "apiVersion: populator.storage.k8s.io/v1beta1\nkind: VolumePopulator\nmetadata: {name: hello}\n\
         sourceKind: {group: hello.example.com, kind: Hello}\n",
    );
    let populated = cross_namespace_review(own, "Hello", Some("hello.example.com"), other, "src");
    // Refused by the webhook of the other suites (crossNamespace: deny) without a look at the
    // other namespace.
    assert_eq!(
        post_to_webhook(&populated)["response"]["status"]["message"],
        "[same-namespace] dataSourceRef names Hello \"src\" in namespace \"x-prod\", but this claim is in namespace \"x-dev\"; a populated claim must be created in its source's namespace: create this claim in namespace \"x-prod\""
    );

    // No grant: refused, naming the grant that would allow it; nothing else is read.
    let answer = post(&claim);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        message(&answer),
        "[same-namespace] dataSourceRef names PersistentVolumeClaim \"data\" in namespace \"x-prod\", but no ReferenceGrant in namespace \"x-prod\" allows PersistentVolumeClaims in namespace \"x-dev\" to use PersistentVolumeClaim \"data\"; create one: ReferenceGrant in \"x-prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: x-dev} and to {group: \"\", kind: PersistentVolumeClaim, name: data}"
    );
    // A grant for another claim, or from another namespace, does not count.
    grant(
        other,
        "other-claim",
        own,
        json!({"group": "", "kind": "PersistentVolumeClaim", "name": "logs"}),
    );
    grant(
        other,
        "other-namespace",
        "x-test",
        json!({"group": "", "kind": "PersistentVolumeClaim"}),
    );
    assert_eq!(post(&claim)["response"]["allowed"], false);
    // The grant for this claim: admitted, and every other rule judged in the source's namespace.
    grant(
        other,
        "clones-from-dev",
        own,
        json!({"group": "", "kind": "PersistentVolumeClaim", "name": "data"}),
    );
    let answer = post(&claim);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut small = claim.clone();
    small["request"]["object"]["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    assert_eq!(
        message(&post(&small)),
        "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
    );

    // Restores: a grant for claims does not cover snapshots; one for the snapshot group does.
    let answer = post(&snapshot);
    assert_eq!(answer["response"]["allowed"], false);
    assert!(message(&answer).starts_with("[same-namespace] dataSourceRef names VolumeSnapshot \"snap\" in namespace \"x-prod\", but no ReferenceGrant"), "{answer}");
    grant(
        other,
        "restores-from-dev",
        own,
        json!({"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": ""}),
    );
    let mut restore = snapshot.clone();
    restore["request"]["object"]["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    let answer = post(&restore);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // A populator's source: the provisioner checks the grant before it looks at the kind, so
    // the same rule applies; with a grant, the populator rule judges it as any other.
    let answer = post(&populated);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        message(&answer),
        "[same-namespace] dataSourceRef names Hello \"src\" in namespace \"x-prod\", but no ReferenceGrant in namespace \"x-prod\" allows PersistentVolumeClaims in namespace \"x-dev\" to use Hello \"src\"; create one: ReferenceGrant in \"x-prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: x-dev} and to {group: \"hello.example.com\", kind: Hello, name: src}"
    );
    // This grant is written as v1: the same stored object as v1beta1.
    let populators = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
        "metadata": {"name": "populated-from-dev", "namespace": other},
        "spec": {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": own}],
                 "to": [{"group": "hello.example.com", "kind": "Hello", "name": "src"}]}
    });
    apply(&populators.to_string());
    let answer = post(&populated);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // The webhook read the grants as gateway.networking.k8s.io/v1 (served here beside the
    // stored v1beta1): the API server's own request counts say so.
    let metrics = must(kubectl(&["get", "--raw", "/metrics"]), "API server metrics").stdout;
    let reads = |version: &str| {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("apiserver_request_total{")
                    && line.contains("group=\"gateway.networking.k8s.io\"")
                    && line.contains("resource=\"referencegrants\"")
                    && line.contains(&format!("version=\"{version}\""))
                    && ["LIST", "WATCH"]
                        .iter()
                        .any(|verb| line.contains(&format!("verb=\"{verb}\"")))
            })
            .count()
    };
    assert!(reads("v1") > 0, "no LIST or WATCH of referencegrants v1");
}
