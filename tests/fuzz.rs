//! Property-based fuzzing: whatever bytes or JSON a review holds, and whatever the cluster
//! looks like, nothing panics and every parsed review is answered with its uid. Bounded:
//! PROPTEST_CASES (default 256 per property) keeps it to seconds in CI.

mod common;

use proptest::prelude::*;
use pvc_clone_guard::config::{Action, Policy, RuleId};
use pvc_clone_guard::quantity;
use pvc_clone_guard::review;
use pvc_clone_guard::rules::{
    self, ClaimRef, ClaimSpec, ClassFact, DataSourceRequest, Facts, FoundClass, PodsFact,
    SourceClaim, SourceKind, SourceReference, SourceVolume,
};
use serde_json::{Value, json};

use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "PersistentVolumeClaim",
            "Block",
            "Filesystem",
            "10Gi",
            "1e400",
            "",
            "data"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "kind",
                    "name",
                    "apiGroup",
                    "namespace",
                    "spec",
                    "metadata",
                    "storage",
                    "requests",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The places in a review where hostile values are put.
const PATHS: [&[&str]; 12] = [
    &["request", "object"],
    &["request", "object", "metadata"],
    &["request", "object", "spec"],
    &["request", "object", "spec", "dataSource"],
    &["request", "object", "spec", "dataSourceRef"],
    &["request", "object", "spec", "resources"],
    &[
        "request",
        "object",
        "spec",
        "resources",
        "requests",
        "storage",
    ],
    &["request", "object", "spec", "volumeMode"],
    &["request", "kind"],
    &["request", "operation"],
    &["request", "namespace"],
    &["request", "dryRun"],
];

fn set(review: &mut Value, path: &[&str], value: Value) {
    let mut node = review;
    for key in &path[..path.len() - 1] {
        if !node.get(*key).is_some_and(Value::is_object) {
            node[*key] = json!({});
        }
        node = &mut node[*key];
    }
    node[path[path.len() - 1]] = value;
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = review::parse(&body);
        let reviewer = reviewer(Ok(good_facts()), Policy::default());
        let _ = runtime().block_on(reviewer.review(&body));
    }

    #[test]
    fn hostile_values_in_a_valid_review_are_answered_with_the_uid(
        edits in prop::collection::vec((prop::sample::select(PATHS.to_vec()), any_json()), 1..4),
        facts_fail in any::<bool>(),
    ) {
        let mut review = create(claim("clone", Some(claim_source("data")), "10Gi"));
        for (path, value) in edits {
            set(&mut review, path, value);
        }
        let body = serde_json::to_vec(&review).expect("json");
        let facts = if facts_fail { Err("unavailable".to_owned()) } else { Ok(good_facts()) };
        let reviewer = reviewer(facts, Policy::default());
        if let Ok(response) = runtime().block_on(reviewer.review(&body)) {
            prop_assert_eq!(response.uid.as_str(), UID);
            let text = String::from_utf8(review::to_body(response)).expect("utf-8");
            prop_assert!(text.starts_with("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\""), "{}", text);
        }
    }

    #[test]
    fn arbitrary_quantity_strings_never_panic(text in ".{0,80}") {
        let _ = quantity::parse(&text);
    }

    #[test]
    fn integer_quantities_are_exact(n in 0u64..1_000_000_000, suffix in prop::sample::select(vec![
        ("", 1u128), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30),
    ])) {
        let parsed = quantity::parse(&format!("{n}{}", suffix.0)).expect("valid");
        prop_assert_eq!(parsed.whole_units() as u128, u128::from(n) * suffix.1);
        let as_exponent = quantity::parse(&format!("{n}e0")).expect("valid");
        prop_assert_eq!(as_exponent.whole_units() as u128, u128::from(n));
    }

    #[test]
    fn quantity_order_matches_byte_order(a in 0u64..1 << 40, b in 0u64..1 << 40) {
        let (qa, qb) = (quantity::parse(&format!("{a}Ki")).expect("a"), quantity::parse(&format!("{}", b)).expect("b"));
        prop_assert_eq!(qa.cmp(&qb), (u128::from(a) * 1024).cmp(&u128::from(b)));
    }

    #[test]
    fn the_rules_never_panic_and_respect_the_policy(
        request in clone_request(),
        facts in facts(),
        actions in prop::collection::vec(prop::sample::select(vec![Action::Deny, Action::Warn, Action::Off]), RuleId::ALL.len()),
        drivers in prop::collection::vec(small_string(), 0..3),
    ) {
        let mut policy = Policy::default();
        for (rule, action) in RuleId::ALL.into_iter().zip(actions) {
            policy.set_action(rule, action);
        }
        policy.clone_capable_drivers = drivers;
        let verdict = rules::decide(&request, Some(&facts), &policy);
        for finding in &verdict.denials {
            prop_assert_eq!(policy.action(finding.rule), Action::Deny);
            prop_assert!(!finding.message.is_empty());
        }
        for finding in &verdict.warnings {
            prop_assert_eq!(policy.action(finding.rule), Action::Warn);
        }
        let order: Vec<_> = verdict.denials.iter().map(|f| f.rule).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "table order, one finding per rule: {:?}", order);
    }
}

fn small_string() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "a",
        "data",
        "dev",
        "Bound",
        "Pending",
        "Block",
        "Filesystem",
        "10Gi",
        "1Gi",
        "x.csi",
        "1e9",
        "bad",
    ])
    .prop_map(String::from)
}

fn maybe() -> impl Strategy<Value = Option<String>> {
    prop::option::of(small_string())
}

/// A text of the cached facts (`rules::Text`).
fn maybe_text() -> impl Strategy<Value = Option<pvc_clone_guard::rules::Text>> {
    maybe().prop_map(|text| text.map(Into::into))
}

fn clone_request() -> impl Strategy<Value = DataSourceRequest> {
    (
        small_string(),
        small_string(),
        maybe(),
        maybe(),
        maybe(),
        maybe(),
        maybe(),
    )
        .prop_map(
            |(
                namespace,
                name,
                source_namespace,
                api_group,
                volume_mode,
                storage_class,
                requested_storage,
            )| DataSourceRequest {
                namespace,
                source: SourceReference {
                    kind: SourceKind::Claim,
                    name,
                    namespace: source_namespace,
                    api_group,
                    field: "dataSource",
                },
                spec: ClaimSpec {
                    volume_mode,
                    storage_class,
                    requested_storage,
                    ..ClaimSpec::default()
                },
            },
        )
}

fn facts() -> impl Strategy<Value = Facts> {
    let source = prop::option::of(
        (
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
        )
            .prop_map(|field| SourceClaim {
                uid: field.0,
                phase: field.1,
                deletion_timestamp: field.2,
                volume_name: field.3,
                volume_mode: field.4,
                requested_storage: field.5,
                capacity: field.6,
                storage_class: field.7,
                ..SourceClaim::default()
            }),
    );
    let volume = prop::option::of(
        (
            small_string(),
            maybe_text(),
            prop::option::of((maybe_text(), maybe_text(), maybe_text())),
            maybe_text(),
            small_string(),
            maybe_text(),
        )
            .prop_map(
                |(name, phase, claim_ref, csi_driver, plugin, volume_mode)| SourceVolume {
                    name: name.into(),
                    phase,
                    claim_ref: claim_ref.map(|(namespace, name, uid)| ClaimRef {
                        namespace,
                        name,
                        uid,
                    }),
                    csi_driver,
                    plugin: plugin.into(),
                    volume_mode,
                    ..SourceVolume::default()
                },
            ),
    );
    let class = prop_oneof![
        (small_string(), small_string(), any::<bool>()).prop_map(
            |(name, provisioner, is_default)| ClassFact::Found(FoundClass {
                name,
                provisioner,
                is_default,
                allowed_topologies: vec![],
                parameters: Default::default(),
            })
        ),
        small_string().prop_map(ClassFact::Missing),
        Just(ClassFact::NoDefault),
        Just(ClassFact::Disabled),
    ];
    (
        source,
        volume,
        class,
        prop::collection::vec(small_string(), 0..3),
        prop::collection::vec(small_string(), 0..3),
    )
        .prop_map(
            |(source, volume, class, pods, classes_for_source_driver)| Facts {
                source,
                volume,
                class,
                pods: PodsFact::Known(pods),
                classes_for_source_driver,
                ..Facts::default()
            },
        )
}
