//! End-to-end: data sources that are neither a claim nor a VolumeSnapshot, through `kubectl`
//! against the real kube-apiserver, with the project's own VolumePopulator and
//! VolumeGroupSnapshot CRDs (tests/cluster/crds/). The API server keeps a `dataSource` of any
//! kind because it runs with `AnyVolumeDataSource=true` (Kubernetes 1.20 has no
//! `dataSourceRef`). Started by tests/e2e.sh on the control plane of tests/e2e.rs and
//! tests/restores.rs, after them; the populator API not being served is proven in
//! tests/e2e.rs, which runs before any CRD is installed.

mod common;

use std::sync::Once;

use common::cluster::*;

fn crds() {
    static ONCE: Once = Once::new();
    ONCE.call_once(install_crds);
}

/// A claim "name" (gp3, 1Gi) whose `spec.dataSource` is `{apiGroup: group, kind, name: source}`.
fn sourced(namespace: &str, name: &str, group: &str, kind: &str, source: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {{requests: {{storage: 1Gi}}}}\n  \
         dataSource: {{apiGroup: {group}, kind: {kind}, name: {source}}}\n"
    )
}

// ---- populators ----------------------------------------------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_populator_source_is_admitted_only_when_a_volume_populator_registers_its_kind() {
    crds();
    let ns = "s-populator";
    namespace(ns);
    apply(
        "apiVersion: populator.storage.k8s.io/v1beta1\nkind: VolumePopulator\nmetadata: {name: hello}\n\
         sourceKind: {group: hello.example.com, kind: Hello}\n",
    );
    assert_created(
        &create(
            &sourced(ns, "hello", "hello.example.com", "Hello", "src"),
            &[],
        ),
        "hello",
        &[],
    );
    // A typo in the kind, and the right kind in another group: nothing would ever populate them.
    for (name, group, kind) in [
        ("typo", "hello.example.com", "Helo"),
        ("other-group", "hello.example.org", "Hello"),
    ] {
        assert_denied(
            &create(&sourced(ns, name, group, kind, "src"), &[]),
            &format!(
                "[populator] spec.dataSource names kind {kind} of apiGroup \"{group}\", but no VolumePopulator registers it, so the claim would wait forever; install the populator of {kind}, or fix kind and apiGroup"
            ),
        );
    }
}

// ---- group snapshots -----------------------------------------------------------------------

/// Creates VolumeSnapshot `name` in `namespace` and sets its status through the status
/// subresource, as the snapshot controller would.
fn snapshot(namespace: &str, name: &str, metadata: &str, status: &str) {
    apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: {name}, namespace: {namespace}{metadata}}}\n\
         spec: {{source: {{persistentVolumeClaimName: data}}}}\n"
    ));
    status_patch(
        &format!(
            "/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots/{name}/status"
        ),
        &format!(r#"{{"status":{status}}}"#),
    );
}

/// Merge-patches a status subresource as the admin (kubectl 1.20 has no --subresource).
fn status_patch(path: &str, body: &str) {
    local_cluster(&["status-patch", ENV.dir.to_str().expect("utf-8"), path, body]);
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_group_snapshot_source_is_refused_naming_its_members() {
    crds();
    let ns = "s-group";
    namespace(ns);
    let cached = || metric("pvc_clone_guard_cached_objects{resource=\"volumesnapshots\"}");
    let before = cached().unwrap_or(0.0);
    for group in ["group-1", "empty"] {
        apply(&format!(
            "apiVersion: groupsnapshot.storage.k8s.io/v1beta1\nkind: VolumeGroupSnapshot\n\
             metadata: {{name: {group}, namespace: {ns}}}\n\
             spec: {{volumeGroupSnapshotClassName: csi-group, source: {{selector: {{matchLabels: {{app: db}}}}}}}}\n"
        ));
    }
    let uid = uid_of("vgs/group-1", ns);
    // Members are found from the snapshots' side: the status the snapshot controller sets, or
    // (snapshotter v8.2+) an owner reference to the group; a snapshot of its own is no member.
    let ready = r#"{"readyToUse":true,"restoreSize":"1Gi""#;
    snapshot(
        ns,
        "snap-b",
        "",
        &format!(r#"{ready},"volumeGroupSnapshotName":"group-1"}}"#),
    );
    snapshot(
        ns,
        "snap-a",
        &format!(
            ", ownerReferences: [{{apiVersion: groupsnapshot.storage.k8s.io/v1beta1, kind: VolumeGroupSnapshot, name: group-1, uid: {uid}}}]"
        ),
        &format!("{ready}}}"),
    );
    snapshot(ns, "alone", "", &format!("{ready}}}"));
    // Judged once the webhook's snapshot cache holds all three (its watch starts within a
    // discovery interval, 30 s, of the CRDs' installation).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while cached().unwrap_or(0.0) < before + 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook has not seen the member snapshots"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let refused = "[group-snapshot] spec.dataSource names VolumeGroupSnapshot";
    let restore_each = "but a claim cannot be restored from a group snapshot; restore each of its member VolumeSnapshots into a claim of its own";
    let group_source = |claim: &str, group: &str| {
        create(
            &sourced(
                ns,
                claim,
                "groupsnapshot.storage.k8s.io",
                "VolumeGroupSnapshot",
                group,
            ),
            &[],
        )
    };
    assert_denied(
        &group_source("restore", "group-1"),
        &format!("{refused} \"group-1\", {restore_each}: \"snap-a\", \"snap-b\""),
    );
    assert_denied(
        &group_source("restore", "empty"),
        &format!("{refused} \"empty\", {restore_each}"),
    );
    assert_denied(
        &group_source("restore", "nope"),
        &format!(
            "{refused} \"nope\", {restore_each} (VolumeGroupSnapshot \"nope\" does not exist in namespace \"s-group\")"
        ),
    );
}
