//! End-to-end: a real kube-apiserver calls pvc-clone-guard through the
//! ValidatingWebhookConfiguration shipped in manifests/, and `kubectl create` prints the
//! verdict. Started by `tests/e2e.sh`, which brings up the control plane
//! (`tests/cluster/dev-env.sh`) and sets PVC_CLONE_GUARD_E2E_DIR; these tests are ignored by
//! a plain `cargo test`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Value, json};

use common::cluster::*;

/// `source` created in a namespace of its own, then `kubectl create` of clone "clone" of it
/// with `class` and `size`.
fn clone_from(source: Source<'_>, class: &str, size: &str) -> Run {
    namespace(source.namespace);
    let source = source.create();
    create(&clone_of_data(source.namespace, Some(class), size), &[])
}

/// `kubectl create` of clone `name` (Filesystem) of claim `source` with `class` and `size`.
fn create_clone(namespace: &str, name: &str, source: &str, class: &str, size: &str) -> Run {
    create(
        &clone_yaml(namespace, name, source, Some(class), size, "Filesystem"),
        &[],
    )
}

// ---- admitted ------------------------------------------------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn valid_clones_are_admitted_including_another_class_of_the_same_driver() {
    assert_created(
        &clone_from(Source::new("e2e-valid"), "gp3", "10Gi"),
        "clone",
        &[],
    );
    let other_class = create_clone(
        "e2e-valid",
        "clone-encrypted",
        "data",
        "gp3-encrypted",
        "20Gi",
    );
    assert_created(&other_class, "clone-encrypted", &[]);
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_populator_source_gets_a_warning_while_populators_are_not_served() {
    namespace("e2e-plain");
    let plain = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: plain, namespace: e2e-plain}\nspec:\n  \
                 accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  resources: {requests: {storage: 1Mi}}\n";
    assert_created(&create(plain, &[]), "plain", &[]);
    // tests/e2e.sh runs this file before any suite installs the project's CRDs: no
    // VolumePopulator can be checked, so a populator's claim is admitted with a warning
    // (tests/sources.rs has the served API). AnyVolumeDataSource is on in the local API
    // server, so it keeps the data source.
    assert_ne!(
        kubectl(&["get", "crd", "volumepopulators.populator.storage.k8s.io"]).code,
        0,
        "populator.storage.k8s.io must not be served yet"
    );
    let populated = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: populated, namespace: e2e-plain}\nspec:\n  \
                     accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {requests: {storage: 1Mi}}\n  \
                     dataSource: {apiGroup: populators.example.com, kind: Archive, name: backup}\n";
    assert_created(
        &create(populated, &[]),
        "populated",
        &[
            "[populator] populator.storage.k8s.io is not served: no VolumePopulator for Archive.populators.example.com can be checked",
        ],
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn the_opt_out_label_and_kube_system_are_never_reviewed() {
    namespace("e2e-optout");
    let mut skipped = clone_yaml(
        "e2e-optout",
        "skipped",
        "missing",
        Some("gp3"),
        "1Gi",
        "Filesystem",
    );
    skipped = skipped.replace("metadata: {name: skipped, namespace: e2e-optout}", "metadata:\n  name: skipped\n  namespace: e2e-optout\n  labels: {pvc-clone-guard.io/skip: \"true\"}");
    assert_created(&create(&skipped, &[]), "skipped", &[]);
    let in_kube_system = clone_yaml(
        "kube-system",
        "e2e-unchecked",
        "missing",
        Some("gp3"),
        "1Gi",
        "Filesystem",
    );
    assert_created(&create(&in_kube_system, &[]), "e2e-unchecked", &[]);
}

// ---- one test per rule, exact text -------------------------------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn source_exists() {
    namespace("e2e-exists");
    assert_denied(
        &create_clone("e2e-exists", "clone", "nope", "gp3", "1Gi"),
        "[source-exists] source claim \"nope\" does not exist in namespace \"e2e-exists\"; create it first, or fix spec.dataSource.name",
    );
}

/// One clone of claim "data" per rule, each source in a namespace of its own: the source as
/// the rule needs it, the clone's class and size, and the exact refusal.
#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn each_rule_refuses_with_its_exact_text_several_in_table_order() {
    let ebs_hint = "set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    let cases = [
        (
            Source { bind: false, ..Source::new("e2e-bound") },
            "gp3",
            "10Gi",
            "[source-bound] source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone".to_owned(),
        ),
        (
            Source { driver: None, ..Source::new("e2e-csi") },
            "gp3",
            "10Gi",
            "[csi-source] source volume \"e2e-csi-data\" is not a CSI volume (it uses hostPath), and only CSI volumes can be cloned; copy the data into a claim of a CSI StorageClass instead".to_owned(),
        ),
        (
            Source::new("e2e-driver"),
            "standard-rwo",
            "10Gi",
            format!("[same-driver] StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"e2e-driver-data\" belongs to CSI driver ebs.csi.aws.com; {ebs_hint}"),
        ),
        (
            Source { mode: "Block", ..Source::new("e2e-mode") },
            "gp3",
            "10Gi",
            "[volume-mode] source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block".to_owned(),
        ),
        (
            Source { class: "nfs", driver: Some("nfs.csi.k8s.io"), ..Source::new("e2e-capable") },
            "nfs",
            "10Gi",
            "[clone-capable-driver] CSI driver nfs.csi.k8s.io is not in the configured list of clone-capable drivers (ebs.csi.aws.com, pd.csi.storage.gke.io, disk.csi.azure.com); clone a volume of one of those drivers, or ask an administrator to add nfs.csi.k8s.io to the list".to_owned(),
        ),
        // Several violations: one line each, in table order.
        (
            Source { mode: "Block", ..Source::new("e2e-many") },
            "standard-rwo",
            "1Gi",
            format!(
                "[same-driver] StorageClass \"standard-rwo\" is provisioned by pd.csi.storage.gke.io but source volume \"e2e-many-data\" belongs to CSI driver ebs.csi.aws.com; {ebs_hint}\n\
                 [volume-mode] source claim \"data\" is Block but this claim asks for Filesystem; set spec.volumeMode: Block\n\
                 [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
            ),
        ),
    ];
    // The cases are independent: judged side by side, as separate tests would be.
    std::thread::scope(|scope| {
        for (source, class, size, message) in cases {
            scope.spawn(move || assert_denied(&clone_from(source, class, size), &message));
        }
    });
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn source_deleting() {
    namespace_with_source("e2e-deleting");
    must(
        kubectl(&[
            "patch",
            "pvc",
            "data",
            "-n",
            "e2e-deleting",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["e2e.pvc-clone-guard.io/hold"]}}"#,
        ]),
        "add finalizer",
    );
    must(
        kubectl(&[
            "delete",
            "pvc",
            "data",
            "-n",
            "e2e-deleting",
            "--wait=false",
        ]),
        "delete",
    );
    let since = must(
        kubectl(&[
            "get",
            "pvc",
            "data",
            "-n",
            "e2e-deleting",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]),
        "read deletionTimestamp",
    )
    .stdout;
    assert_denied(
        &create(&clone_of_data("e2e-deleting", Some("gp3"), "10Gi"), &[]),
        &format!(
            "[source-deleting] source claim \"data\" is being deleted (since {since}); clone a claim that is not being deleted"
        ),
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn source_volume_missing_and_bound_elsewhere() {
    namespace_with_source("e2e-volume");
    // The volume is re-bound to another claim behind the source's back.
    must(
        kubectl(&[
            "patch",
            "pv",
            "e2e-volume-data",
            "--type=merge",
            "-p",
            r#"{"spec":{"claimRef":{"namespace":"e2e-volume","name":"other","uid":null}}}"#,
        ]),
        "re-point claimRef",
    );
    assert_denied(
        &create(&clone_of_data("e2e-volume", Some("gp3"), "10Gi"), &[]),
        "[source-volume] PersistentVolume \"e2e-volume-data\" is bound to claim \"e2e-volume/other\", not to source claim \"e2e-volume/data\"; repair the volume's binding or clone another claim",
    );
    must(
        kubectl(&["delete", "pv", "e2e-volume-data", "--wait=false"]),
        "delete the volume",
    );
    must(
        kubectl(&[
            "patch",
            "pv",
            "e2e-volume-data",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ]),
        "drop the pv-protection finalizer",
    );
    wait_until(
        || kubectl(&["get", "pv", "e2e-volume-data"]).code != 0,
        "the volume is gone",
    );
    assert_denied(
        &create(&clone_of_data("e2e-volume", Some("gp3"), "10Gi"), &[]),
        "[source-volume] PersistentVolume \"e2e-volume-data\" of source claim \"data\" does not exist; restore the volume or clone another claim",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn dynamic_provisioning_empty_missing_and_static_classes() {
    namespace_with_source("e2e-dynamic");
    let hint = "set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"";
    for (class, problem) in [
        ("", "storageClassName is \"\", which turns off dynamic provisioning, and a clone must be provisioned".to_owned()),
        ("fast", "StorageClass \"fast\" does not exist".to_owned()),
        ("local-disks", "StorageClass \"local-disks\" has provisioner kubernetes.io/no-provisioner, which cannot provision a clone".to_owned()),
    ] {
        assert_denied(
            &create(&clone_of_data("e2e-dynamic", Some(class), "10Gi"), &[]),
            &format!("[dynamic-provisioning] {problem}; {hint}"),
        );
    }
}

/// The only test that touches which class is the default: serialized by this lock.
static DEFAULT_CLASS: Mutex<()> = Mutex::new(());

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn an_omitted_class_needs_a_default_class_of_the_same_driver() {
    let _guard = DEFAULT_CLASS.lock().unwrap_or_else(|e| e.into_inner());
    namespace_with_source("e2e-default");
    assert_denied(
        &create(&clone_of_data("e2e-default", None, "10Gi"), &[]),
        "[dynamic-provisioning] this claim names no StorageClass and the cluster has no default StorageClass; set spec.storageClassName to a class provisioned by ebs.csi.aws.com, e.g. \"gp3\" or \"gp3-encrypted\"",
    );
    let annotate = |value: &str| {
        must(
            kubectl(&[
                "annotate",
                "storageclass",
                "gp3",
                &format!("storageclass.kubernetes.io/is-default-class={value}"),
                "--overwrite",
            ]),
            "annotate",
        )
    };
    annotate("true");
    // The API server's DefaultStorageClass admission fills in gp3 before the webhook runs.
    let run = create(&clone_of_data("e2e-default", None, "10Gi"), &[]);
    annotate("false");
    assert_created(&run, "clone", &[]);
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn size_in_the_units_written() {
    namespace("e2e-size");
    Source {
        request: "1Gi",
        capacity: "1Gi",
        ..Source::new("e2e-size")
    }
    .create();
    for asked in ["1000Mi", "1G"] {
        assert_denied(
            &create(&clone_of_data("e2e-size", Some("gp3"), asked), &[]),
            &format!(
                "[size] this claim requests {asked} but source claim \"data\" requests 1Gi; request at least 1Gi"
            ),
        );
    }
    assert_created(
        &create(&clone_of_data("e2e-size", Some("gp3"), "1024Mi"), &[]),
        "clone",
        &[],
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn size_capacity_is_a_warning() {
    let source = Source {
        request: "8Gi",
        capacity: "10Gi",
        ..Source::new("e2e-capacity")
    };
    assert_created(
        &clone_from(source, "gp3", "8Gi"),
        "clone",
        &[
            "[size-capacity] source claim \"data\" holds 10Gi (its request: 8Gi); some drivers refuse a smaller clone: request 10Gi",
        ],
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn source_in_use_is_a_warning() {
    namespace_with_source("e2e-inuse");
    apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: e2e-inuse}\nspec:\n  containers: [{name: web, image: nginx, \
         volumeMounts: [{name: data, mountPath: /data}]}]\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n",
    );
    // The webhook learns of pods through a watch: wait until it has seen this one.
    wait_until(
        || metric("pvc_clone_guard_cached_objects{resource=\"pods\"}").unwrap_or(0.0) >= 1.0,
        "the pod index holds the pod",
    );
    assert_created(
        &create(&clone_of_data("e2e-inuse", Some("gp3"), "10Gi"), &[]),
        "clone",
        &[
            "[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent",
        ],
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn source_api_group() {
    namespace("e2e-group");
    let yaml = clone_of_data("e2e-group", Some("gp3"), "10Gi").replace(
        "dataSource: {kind: PersistentVolumeClaim",
        "dataSource: {apiGroup: example.com, kind: PersistentVolumeClaim",
    );
    assert_denied(
        &create(&yaml, &[]),
        "[source-api-group] spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\"",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn server_side_dry_run_gets_the_same_verdict() {
    namespace_with_source("e2e-dryrun");
    assert_denied(
        &create(
            &clone_of_data("e2e-dryrun", Some("gp3"), "1Gi"),
            &["--dry-run=server"],
        ),
        "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi",
    );
    let run = create(
        &clone_of_data("e2e-dryrun", Some("gp3"), "10Gi"),
        &["--dry-run=server"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "persistentvolumeclaim/clone created (server dry run)\n"
    );
    assert_ne!(
        kubectl(&["get", "pvc", "clone", "-n", "e2e-dryrun"]).code,
        0,
        "a dry run creates nothing"
    );
}

// ---- claim fields the provisioner refuses, and what a driver may refuse --------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_clone_with_a_selector_is_refused() {
    let ns = "e2e-selector";
    let with_selector = format!(
        "{}  selector: {{matchLabels: {{tier: db}}}}\n",
        clone_of_data(ns, Some("gp3"), "10Gi")
    );
    namespace_with_source(ns);
    assert_denied(
        &create(&with_selector, &[]),
        "[selector] this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to clone claim \"data\"",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn another_access_mode_and_a_source_pinned_to_a_node_are_warnings() {
    let ns = "e2e-node";
    let source = Source {
        node: Some("node-1"),
        ..Source::new(ns)
    };
    let pinned = "[source-node] source volume \"e2e-node-data\" is on node \"node-1\" only; node-local drivers clone only there (the clone's pods too)";
    assert_created(&clone_from(source, "gp3", "10Gi"), "clone", &[pinned]);
    let shared = clone_yaml(ns, "shared", "data", Some("gp3"), "10Gi", "Filesystem").replace(
        "accessModes: [ReadWriteOnce]",
        "accessModes: [ReadWriteMany]",
    );
    assert_created(
        &create(&shared, &[]),
        "shared",
        &[
            "[access-modes] this claim asks for ReadWriteMany but source claim \"data\" is ReadWriteOnce; block drivers refuse that",
            pinned,
        ],
    );
}

// ---- StatefulSets: refused at apply ---------------------------------------------------------

const STATEFULSET_WEBHOOK: &str = "statefulsets.pvc-clone-guard.io";

/// StatefulSet "db" whose template "data" clones claim "data" with `size`.
fn statefulset_yaml(namespace: &str, replicas: u32, size: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {namespace}}}\nspec:\n  \
         replicas: {replicas}\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  \
         template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers:\n      - name: db\n        \
         image: postgres:16\n        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]\n  \
         volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      \
         storageClassName: gp3\n      resources: {{requests: {{storage: {size}}}}}\n      \
         dataSource: {{kind: PersistentVolumeClaim, name: data}}\n"
    )
}

/// `kubectl apply -f sts.yaml` as a user runs it.
fn apply_sts(yaml: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("sts.yaml"), yaml).expect("write sts.yaml");
    kubectl_in(dir.path(), &["apply", "-f", "sts.yaml"], None)
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_statefulset_with_a_bad_clone_template_is_refused_at_apply_and_a_good_one_created() {
    namespace_with_source("e2e-sts");
    let run = apply_sts(&statefulset_yaml("e2e-sts", 3, "1Gi"));
    assert_ne!(run.code, 0, "kubectl apply must fail:\n{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!(
            "Error from server (Forbidden): error when creating \"sts.yaml\": admission webhook \"{STATEFULSET_WEBHOOK}\" \
             denied the request: volumeClaimTemplates[0] \"data\": [size] this claim requests 1Gi but source claim \"data\" \
             requests 10Gi; request at least 10Gi\n"
        )
    );
    assert_ne!(
        kubectl(&["get", "statefulset", "db", "-n", "e2e-sts"]).code,
        0,
        "nothing is created"
    );

    // Every replica's claim clones the same source: valid.
    let run = apply_sts(&statefulset_yaml("e2e-sts", 3, "10Gi"));
    assert_eq!(run.code, 0, "kubectl apply must succeed:\n{}", run.stderr);
    assert_eq!(run.stdout, "statefulset.apps/db created\n");
    assert_eq!(run.stderr, "");

    // Once its claims exist, the StatefulSet no longer depends on the source: a scale
    // (an UPDATE with the templates unchanged) is admitted after the source is deleted.
    must(
        kubectl(&["delete", "pvc", "data", "-n", "e2e-sts", "--wait=false"]),
        "delete the source",
    );
    let run = apply_sts(&statefulset_yaml("e2e-sts", 5, "10Gi"));
    assert_eq!(run.code, 0, "kubectl apply must succeed:\n{}", run.stderr);
    assert_eq!(run.stdout, "statefulset.apps/db configured\n");
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_statefulset_template_gets_the_rules_of_a_claim() {
    let ns = "e2e-sts-rules";
    namespace_with_source(ns);
    let template = statefulset_yaml(ns, 1, "10Gi");
    let source = "      dataSource: {kind: PersistentVolumeClaim, name: data}\n";
    let with_selector = template.replace(
        source,
        &format!("{source}      selector: {{matchLabels: {{tier: db}}}}\n"),
    );
    assert_ne!(with_selector, template, "the selector is set");
    let run = apply_sts(&with_selector);
    assert_ne!(run.code, 0, "kubectl apply must fail:\n{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!(
            "Error from server (Forbidden): error when creating \"sts.yaml\": admission webhook \"{STATEFULSET_WEBHOOK}\" \
             denied the request: volumeClaimTemplates[0] \"data\": [selector] this claim has spec.selector, and the CSI \
             provisioner refuses a dynamically provisioned claim with a selector; remove spec.selector to clone claim \"data\"\n"
        )
    );
    // Warnings are the claim's too, with the template named.
    let run = apply_sts(&template.replace(
        "accessModes: [ReadWriteOnce]",
        "accessModes: [ReadWriteMany]",
    ));
    assert_eq!(run.code, 0, "kubectl apply must succeed:\n{}", run.stderr);
    assert_eq!(run.stdout, "statefulset.apps/db created\n");
    assert_eq!(
        run.stderr,
        "Warning: volumeClaimTemplates[0] \"data\": [access-modes] this claim asks for ReadWriteMany but source claim \"data\" is ReadWriteOnce; block drivers refuse that\n"
    );
}

// ---- what Kubernetes 1.20 cannot express: reviews posted straight to the webhook ------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn data_source_ref_and_cross_namespace_references_through_the_running_webhook() {
    namespace_with_source("e2e-ref");
    let claim_with_ref = |reference: Value, size: &str| {
        let mut claim = common::claim("clone", None, size);
        claim["metadata"]["namespace"] = json!("e2e-ref");
        claim["spec"]["dataSourceRef"] = reference;
        let mut review = common::create(claim);
        review["request"]["namespace"] = json!("e2e-ref");
        review
    };
    // dataSourceRef alone, read against the live cluster's facts.
    let answer = post_to_webhook(&claim_with_ref(
        json!({"kind": "PersistentVolumeClaim", "name": "data"}),
        "1Gi",
    ));
    assert_eq!(answer["response"]["uid"], common::UID);
    assert_eq!(
        answer["response"]["status"]["message"],
        "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
    );
    let answer = post_to_webhook(&claim_with_ref(
        json!({"kind": "PersistentVolumeClaim", "name": "data"}),
        "10Gi",
    ));
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    // A cross-namespace reference.
    let answer = post_to_webhook(&claim_with_ref(
        json!({"kind": "PersistentVolumeClaim", "name": "data", "namespace": "e2e-valid"}),
        "10Gi",
    ));
    assert_eq!(
        answer["response"]["status"]["message"],
        "[same-namespace] dataSourceRef names claim \"data\" in namespace \"e2e-valid\", but this claim is in namespace \"e2e-ref\"; a clone must be created in its source's namespace: create this claim in namespace \"e2e-valid\""
    );
}

/// Kubernetes 1.20 has no VolumeAttributesClass API and drops `volumeAttributesClassName` at
/// create: the webhook reads the field only from reviews posted to it. Where no
/// VolumeAttributesClass API is served it says nothing (the v6 provisioner then ignores the
/// field); the refusals when one is served are proven against the fake API server
/// (tests/facts_fake_api.rs).
#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_volume_attributes_class_is_not_judged_where_its_api_is_not_served() {
    let ns = "e2e-vac";
    namespace_with_source(ns);
    assert_ne!(
        kubectl(&["get", "volumeattributesclasses"]).code,
        0,
        "Kubernetes 1.20 serves no VolumeAttributesClass"
    );
    let mut claim = common::claim(
        "clone",
        Some(json!({"kind": "PersistentVolumeClaim", "name": "data"})),
        "10Gi",
    );
    claim["metadata"]["namespace"] = json!(ns);
    claim["spec"]["volumeAttributesClassName"] = json!("gold");
    let mut review = common::create(claim);
    review["request"]["namespace"] = json!(ns);
    let answer = post_to_webhook(&review);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["warnings"], Value::Null, "{answer}");
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_source_created_a_moment_before_the_clone_is_judged_not_missing() {
    namespace("e2e-fresh");
    // Source and clone in one apply: the clone's review can arrive before the watch has
    // delivered the source, and the direct lookup must find it (Pending, so source-bound).
    let source = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: e2e-fresh}\nspec:\n  \
                  accessModes: [ReadWriteOnce]\n  storageClassName: gp3\n  resources: {requests: {storage: 10Gi}}\n---\n";
    let run = kubectl_in(
        &ENV.dir,
        &["apply", "-f", "-"],
        Some(&format!(
            "{source}{}",
            clone_of_data("e2e-fresh", Some("gp3"), "10Gi")
        )),
    );
    assert_ne!(run.code, 0);
    assert_eq!(run.stdout, "persistentvolumeclaim/data created\n");
    assert_eq!(
        run.stderr,
        format!(
            "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"{WEBHOOK}\" denied the request: \
                 [source-bound] source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone\n"
        )
    );
}

// ---- the shipped manifests and certificate rotation (install on a cluster) -------------------

/// `pvc-clone-guard certs ARGS`, which must succeed.
fn certs_command(args: &[&str]) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"))
            .arg("certs")
            .args(args),
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn the_self_managed_overlay_passes_server_side_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    common::copy_tree(&ENV.repo.join("manifests"), &manifests);
    let certs = manifests.join("overlays/self-managed/certs");
    certs_command(&["--out-dir", certs.to_str().expect("utf-8")]);
    let rendered = must(
        kubectl(&[
            "kustomize",
            manifests
                .join("overlays/self-managed")
                .to_str()
                .expect("utf-8"),
        ]),
        "kustomize",
    )
    .stdout;
    // Both webhooks (claims, StatefulSets) get the CA, or the API server cannot call one.
    assert_eq!(
        rendered.matches("caBundle: ").count(),
        2,
        "a caBundle for each webhook:\n{rendered}"
    );
    // Kubernetes 1.20 serves PodDisruptionBudget as policy/v1beta1 only (v1 arrived in 1.21,
    // v1beta1 left in 1.25); the fields used are the same in both.
    assert!(rendered.contains("apiVersion: policy/v1\nkind: PodDisruptionBudget"));
    let for_1_20 = rendered.replace(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget",
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget",
    );
    // Namespaced objects of a dry run need their namespace to exist.
    let _ = kubectl(&["create", "namespace", "pvc-clone-guard"]);
    let run = kubectl_in(
        &ENV.dir,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&for_1_20),
    );
    assert_eq!(run.code, 0, "server validation failed:\n{}", run.stderr);
    for object in [
        "namespace/pvc-clone-guard",
        "serviceaccount/pvc-clone-guard",
        "clusterrole.rbac.authorization.k8s.io/pvc-clone-guard",
        "clusterrolebinding.rbac.authorization.k8s.io/pvc-clone-guard",
        "secret/pvc-clone-guard-tls",
        "service/pvc-clone-guard",
        "deployment.apps/pvc-clone-guard",
        "poddisruptionbudget.policy/pvc-clone-guard",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/pvc-clone-guard",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{object} ")) && l.ends_with("(server dry run)")),
            "{object} missing from:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("configmap/pvc-clone-guard-config-"),
        "{}",
        run.stdout
    );
}

/// The certificate the running webhook presents to a new connection.
fn served_leaf() -> Vec<u8> {
    let addr = ENV.vars["WEBHOOK_URL"]
        .trim_start_matches("https://")
        .trim_end_matches("/validate")
        .to_owned();
    let config = common::tls_client(
        Path::new(&ENV.vars["WEBHOOK_CA"]),
        &[&rustls::version::TLS13],
    );
    let body =
        serde_json::to_vec(&common::create(common::claim("probe", None, "1Gi"))).expect("json");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(common::https_request(&addr, config, &body))
        .leaf
}

fn leaf_on_disk() -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let path = Path::new(&ENV.vars["WEBHOOK_CERT_DIR"]).join("tls.crt");
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .expect("tls.crt")
        .next()
        .expect("a certificate")
        .expect("pem")
        .to_vec()
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn rotating_the_serving_certificate_while_the_api_server_calls_fails_no_review() {
    namespace_with_source("e2e-rotate");
    let before = served_leaf();
    assert_eq!(before, leaf_on_disk());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut created = 0;
            // At least 10 creates whatever the machine's speed, and until told to stop.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while (created < 10 || !stop.load(std::sync::atomic::Ordering::Relaxed))
                && std::time::Instant::now() < deadline
            {
                let name = format!("clone-{created}");
                let run = create(
                    &clone_yaml(
                        "e2e-rotate",
                        &name,
                        "data",
                        Some("gp3"),
                        "10Gi",
                        "Filesystem",
                    ),
                    &[],
                );
                if run.code == 0 {
                    created += 1;
                } else {
                    failures.push(run.stderr);
                }
            }
            (created, failures)
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(2));
    certs_command(&[
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        &ENV.vars["WEBHOOK_CERT_DIR"],
    ]);
    let after = leaf_on_disk();
    assert_ne!(before, after, "a new serving certificate was issued");
    wait_until(
        || served_leaf() == after,
        "the webhook serves the new certificate",
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (created, failures) = load.join().expect("load thread");
    assert!(
        failures.is_empty(),
        "{} of {} creates failed: {failures:?}",
        failures.len(),
        created + failures.len()
    );
    assert!(
        created >= 10,
        "the API server kept calling the webhook ({created} clones)"
    );
}

// ---- parity and placement rules added with restores ----------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_source_without_a_storage_class_is_refused() {
    // No default class may appear while the source is created, or it would get one.
    let _guard = DEFAULT_CLASS.lock().unwrap_or_else(|e| e.into_inner());
    let ns = "e2e-noclass";
    namespace(ns);
    apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {ns}-pv}}\nspec:\n  capacity: {{storage: 10Gi}}\n  \
         accessModes: [ReadWriteOnce]\n  csi: {{driver: ebs.csi.aws.com, volumeHandle: {ns}-pv}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 10Gi}}}}\n"
    ));
    bind(ns, "data", &format!("{ns}-pv"));
    assert_denied(
        &create(&clone_of_data(ns, Some("gp3"), "10Gi"), &[]),
        "[source-class] source claim \"data\" has no storageClassName, and the CSI provisioner refuses to clone such a claim; clone a claim that has a StorageClass",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn placement_warnings_name_the_zone_and_the_parameters() {
    let ns = "e2e-placement";
    namespace(ns);
    // Classes of a driver of their own, so that no other test's hints list them.
    apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: az-premium}\nprovisioner: disk.csi.azure.com\n\
         parameters: {skuName: Premium_LRS, cachingMode: ReadOnly}\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: az-standard}\nprovisioner: disk.csi.azure.com\n\
         parameters: {skuName: StandardSSD_LRS, cachingMode: ReadOnly}\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: az-premium-west}\nprovisioner: disk.csi.azure.com\n\
         parameters: {skuName: Premium_LRS, cachingMode: ReadOnly}\n\
         allowedTopologies:\n- matchLabelExpressions:\n  - {key: topology.disk.csi.azure.com/zone, values: [westeurope-1]}\n",
    );
    apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {ns}-pv}}\nspec:\n  capacity: {{storage: 10Gi}}\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: az-premium\n  \
         csi: {{driver: disk.csi.azure.com, volumeHandle: {ns}-pv}}\n  \
         nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        \
         - {{key: topology.disk.csi.azure.com/zone, operator: In, values: [westeurope-2]}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec:\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: az-premium\n  resources: {{requests: {{storage: 10Gi}}}}\n"
    ));
    bind(ns, "data", &format!("{ns}-pv"));
    // The same class: nothing to say.
    assert_created(
        &create(
            &clone_yaml(ns, "same", "data", Some("az-premium"), "10Gi", "Filesystem"),
            &[],
        ),
        "same",
        &[],
    );
    assert_created(
        &create(
            &clone_yaml(
                ns,
                "west",
                "data",
                Some("az-premium-west"),
                "10Gi",
                "Filesystem",
            ),
            &[],
        ),
        "west",
        &[
            "[topology] StorageClass \"az-premium-west\" allows topology.disk.csi.azure.com/zone in [westeurope-1] but source volume \"e2e-placement-pv\" is in [westeurope-2]; most drivers clone only in the source's zone",
        ],
    );
    assert_created(
        &create(
            &clone_yaml(
                ns,
                "standard",
                "data",
                Some("az-standard"),
                "10Gi",
                "Filesystem",
            ),
            &[],
        ),
        "standard",
        &[
            "[class-parameters] StorageClass \"az-standard\" and the source's class \"az-premium\" differ in parameters skuName; the clone may not mount",
        ],
    );
}

// ---- opt-outs ----------------------------------------------------------------------------------

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_namespace_labelled_skip_is_reviewed_by_neither_webhook() {
    let ns = "e2e-nsoptout";
    namespace(ns);
    let clone = clone_yaml(ns, "clone", "ghost", Some("gp3"), "1Gi", "Filesystem");
    let statefulset = statefulset_yaml(ns, 1, "1Gi");
    // Reviewed while the namespace is not labelled: both refused.
    assert_denied(
        &create(&clone, &[]),
        "[source-exists] source claim \"ghost\" does not exist in namespace \"e2e-nsoptout\"; create it first, or fix spec.dataSource.name",
    );
    let run = apply_sts(&statefulset);
    assert_eq!(
        run.stderr,
        format!(
            "Error from server (Forbidden): error when creating \"sts.yaml\": admission webhook \"{STATEFULSET_WEBHOOK}\" \
             denied the request: volumeClaimTemplates[0] \"data\": [source-exists] source claim \"data\" does not exist \
             in namespace \"e2e-nsoptout\"; create it first, or fix spec.dataSource.name\n"
        )
    );

    // The runbooks' emergency opt-out: neither webhook is called for the namespace any more
    // (the API server sees the label through its namespace informer, within moments).
    must(
        kubectl(&["label", "namespace", ns, "pvc-clone-guard.io/skip=true"]),
        "label the namespace",
    );
    let mut admitted = None;
    wait_until(
        || {
            let run = create(&clone, &[]);
            let created = run.code == 0;
            admitted = created.then_some(run);
            created
        },
        "the bad clone is created in the opted-out namespace",
    );
    assert_created(&admitted.expect("created"), "clone", &[]);
    let run = apply_sts(&statefulset);
    assert_eq!(run.code, 0, "kubectl apply must succeed:\n{}", run.stderr);
    assert_eq!(run.stdout, "statefulset.apps/db created\n");
    assert_eq!(run.stderr, "");

    // Label removed: reviewed again.
    must(
        kubectl(&["label", "namespace", ns, "pvc-clone-guard.io/skip-"]),
        "unlabel the namespace",
    );
    let mut attempt = 0;
    let mut refused = None;
    wait_until(
        || {
            attempt += 1;
            let name = format!("again-{attempt}");
            let run = create(
                &clone_yaml(ns, &name, "ghost", Some("gp3"), "1Gi", "Filesystem"),
                &[],
            );
            let denied = run.code != 0;
            refused = denied.then_some(run);
            denied
        },
        "the namespace is reviewed again",
    );
    assert_denied(
        &refused.expect("refused"),
        "[source-exists] source claim \"ghost\" does not exist in namespace \"e2e-nsoptout\"; create it first, or fix spec.dataSource.name",
    );
}

#[test]
#[ignore = "needs the local control plane: run tests/e2e.sh"]
fn a_statefulset_labelled_skip_is_not_reviewed() {
    let ns = "e2e-stsoptout";
    namespace(ns);
    // Its template clones a claim that does not exist: refused when reviewed.
    let labelled = statefulset_yaml(ns, 1, "1Gi").replace(
        &format!("metadata: {{name: db, namespace: {ns}}}"),
        &format!(
            "metadata: {{name: db, namespace: {ns}, labels: {{pvc-clone-guard.io/skip: \"true\"}}}}"
        ),
    );
    assert_ne!(labelled, statefulset_yaml(ns, 1, "1Gi"), "the label is set");
    let run = apply_sts(&labelled);
    assert_eq!(run.code, 0, "kubectl apply must succeed:\n{}", run.stderr);
    assert_eq!(run.stdout, "statefulset.apps/db created\n");
    assert_eq!(run.stderr, "");
}
