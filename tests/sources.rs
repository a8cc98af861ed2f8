//! End-to-end: data sources that are neither a claim nor a VolumeSnapshot, through `kubectl`
//! against the real kube-apiserver, with the project's own VolumePopulator CRD
//! (tests/cluster/crds/). The API server keeps a `dataSource` of any
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
