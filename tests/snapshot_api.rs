//! The VolumeSnapshot API appearing while the webhook runs: before the CRDs exist a restore
//! is refused saying the API is not served; once they are installed (no webhook restart), a
//! valid restore is admitted, and the snapshot caches start. Run by tests/e2e.sh on the
//! serial control plane, which starts without the snapshot CRDs.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;

fn restore(namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: restore, namespace: {namespace}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  \
         dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}}\n  \
         resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_restore_is_judged_once_the_snapshot_api_appears_without_a_restart() {
    let ns = "appear";
    namespace(ns);
    let pid = webhook_pid();
    assert_denied(
        &create(&restore(ns), &[]),
        "[snapshot-exists] the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served by this cluster; install the external-snapshotter CRDs and controller, or remove spec.dataSource",
    );
    install_crds();
    let snapshot = format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: snap, namespace: {ns}}}\n\
         spec: {{source: {{persistentVolumeClaimName: data}}}}\n"
    );
    apply(&snapshot);
    let uid = uid_of("volumesnapshot/snap", ns);
    apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {{name: appear-snap}}\n\
         spec: {{driver: ebs.csi.aws.com, deletionPolicy: Delete, source: {{snapshotHandle: h1}},\n  \
         volumeSnapshotRef: {{namespace: {ns}, name: snap, uid: {uid}}}}}\n"
    ));
    status_patch(
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/appear-snap/status",
        r#"{"status":{"snapshotHandle":"h1","readyToUse":true}}"#,
    );
    status_patch(
        &format!("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots/snap/status"),
        r#"{"status":{"boundVolumeSnapshotContentName":"appear-snap","readyToUse":true,"restoreSize":"1Gi"}}"#,
    );
    // Judged at once: a refusal for "not served" asks discovery again before it is given.
    assert_created(&create(&restore(ns), &[]), "restore", &[]);
    assert_eq!(webhook_pid(), pid, "no restart");
    // And within a discovery interval the snapshot caches are watching.
    let deadline = Instant::now() + Duration::from_secs(45);
    while metric("pvc_clone_guard_cache_synced{resource=\"volumesnapshots\"}") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the snapshot caches did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Merge-patches a status subresource as the admin (kubectl 1.20 has no --subresource).
fn status_patch(path: &str, body: &str) {
    local_cluster(&["status-patch", ENV.dir.to_str().expect("utf-8"), path, body]);
}
