//! The fast path answers only what serde would answer: wherever `read` gives a review,
//! serde gives the same one.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::read;
use crate::review::{ReviewRequest, parse, parse_with_serde};

const PLAIN: &[u8] = include_bytes!("../../../benches/load/review-plain.json");
const CLONE: &[u8] = include_bytes!("../../../benches/load/review-clone.json");

/// serde's review, if it parses.
fn serde(body: &[u8]) -> Option<ReviewRequest> {
    parse_with_serde(body).ok()
}

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

fn clone_review() -> Value {
    serde_json::from_slice(CLONE).expect("fixture")
}

/// `edit` applied to the clone review's JSON.
fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = clone_review();
    edit(&mut review);
    body(&review)
}

#[test]
fn the_benchmark_reviews_are_read_as_serde_reads_them() {
    for fixture in [PLAIN, CLONE] {
        let fast = read(fixture).expect("the usual shape is read by hand");
        assert_eq!(Some(fast), serde(fixture));
    }
}

#[test]
fn the_fields_read_are_those_serde_reads() {
    let request = read(CLONE).expect("read");
    assert_eq!(request.uid, "7a4e2b9d-1c3f-4d5e-8f6a-2b9c4d7e1f02");
    assert_eq!(request.kind.kind, "PersistentVolumeClaim");
    assert_eq!(request.name, "data-clone");
    let claim = request.object.expect("object");
    assert_eq!(claim.spec.requested_storage.as_deref(), Some("10Gi"));
    assert_eq!(
        claim.spec.data_source.and_then(|s| s.name).as_deref(),
        Some("data")
    );
}

#[test]
fn usual_variations_are_read_as_serde_reads_them() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "pretty-printed",
            serde_json::to_vec_pretty(&clone_review()).expect("json"),
        ),
        (
            "null metadata and spec",
            edited(|r| {
                r["request"]["object"]["metadata"] = Value::Null;
                r["request"]["object"]["spec"] = Value::Null;
            }),
        ),
        (
            "null object",
            edited(|r| r["request"]["object"] = Value::Null),
        ),
        (
            "no object",
            edited(|r| {
                r["request"]
                    .as_object_mut()
                    .expect("request")
                    .remove("object");
            }),
        ),
        (
            "nulls for every optional field",
            edited(|r| {
                let request = &mut r["request"];
                request["subResource"] = Value::Null;
                request["requestKind"] = Value::Null;
                request["requestResource"] = Value::Null;
                request["requestSubResource"] = Value::Null;
                request["namespace"] = Value::Null;
                request["oldObject"] = Value::Null;
                request["options"] = Value::Null;
                let spec = &mut request["object"]["spec"];
                spec["dataSource"] = Value::Null;
                spec["volumeMode"] = Value::Null;
                spec["resources"] = json!({"requests": null});
            }),
        ),
        (
            "a dataSourceRef with a namespace, dry run, an UPDATE",
            edited(|r| {
                r["request"]["object"]["spec"]["dataSourceRef"] =
                    json!({"kind": "PersistentVolumeClaim", "name": "data", "namespace": "other"});
                r["request"]["dryRun"] = json!(true);
                r["request"]["operation"] = json!("UPDATE");
                r["request"]["subResource"] = json!("status");
            }),
        ),
        (
            "escapes, numbers and literals where nothing is read",
            edited(|r| {
                r["request"]["object"]["metadata"]["annotations"] = json!({
                    "a\"b\\c\u{1}": "\u{7f}\n\t\"\u{0}",
                    "n": [0, -0, 1.5, -2e10, 3E+2, 4e-1, 12345678901234567890u64, 1e300],
                    "l": [true, false, null, {}, [], [[{}]]],
                });
                r["request"]["userInfo"]["extra"] = json!({"x": ["\u{e9}t\u{e9}"]});
            }),
        ),
        (
            "unknown fields everywhere",
            edited(|r| {
                r["x"] = json!({"y": [1]});
                r["request"]["x"] = json!("y");
                r["request"]["kind"]["x"] = json!(1);
                r["request"]["object"]["x"] = json!(null);
                r["request"]["object"]["spec"]["dataSource"]["x"] = json!([]);
            }),
        ),
        (
            "non-ASCII names",
            edited(|r| r["request"]["name"] = json!("d\u{e9}j\u{e0}-vu")),
        ),
    ];
    for (what, case) in cases {
        let fast = read(&case);
        assert!(fast.is_some(), "{what}: not read by hand");
        assert_eq!(fast, serde(&case), "{what}");
    }
}

#[test]
fn unusual_bodies_are_left_to_serde() {
    let text = String::from_utf8(CLONE.to_vec()).expect("utf-8");
    let replaced = |from: &str, to: &str| {
        assert!(text.contains(from), "{from}");
        text.replacen(from, to, 1).into_bytes()
    };
    // In a value serde only skips (and does not check): serde takes the body, the reader
    // leaves it to serde.
    let mut invalid_utf8 = CLONE.to_vec();
    let at = text.find("storage-platform").expect("an annotation");
    invalid_utf8[at + 2] = 0xff;
    assert!(serde(&invalid_utf8).is_some());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an escaped uid",
            replaced("\"uid\":\"7a4e", "\"uid\":\"\\u0037a4e"),
        ),
        (
            "an escaped key",
            replaced("\"uid\":\"7a4e", "\"u\\u0069d\":\"7a4e"),
        ),
        (
            "a duplicate uid",
            replaced("\"uid\":\"7a4e", "\"uid\":\"x\",\"uid\":\"7a4e"),
        ),
        (
            "an oldObject",
            edited(|r| r["request"]["oldObject"] = json!({})),
        ),
        (
            "templates",
            edited(|r| r["request"]["object"]["spec"]["volumeClaimTemplates"] = json!([])),
        ),
        (
            "an escaped key in userInfo, which serde parses",
            replaced("\"username\"", "\"user\\ud800name\""),
        ),
        (
            "a null name",
            edited(|r| r["request"]["name"] = Value::Null),
        ),
        (
            "a number for a name serde reads leniently",
            edited(|r| r["request"]["object"]["metadata"]["name"] = json!(1e300)),
        ),
        (
            "a string for the spec",
            edited(|r| r["request"]["object"]["spec"] = json!("x")),
        ),
        (
            "an unknown operation",
            edited(|r| r["request"]["operation"] = json!("PATCH")),
        ),
        (
            "no userInfo",
            edited(|r| {
                r["request"]
                    .as_object_mut()
                    .expect("request")
                    .remove("userInfo");
            }),
        ),
        ("a null request", edited(|r| r["request"] = Value::Null)),
        (
            "another version",
            edited(|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
        ),
        ("invalid UTF-8 in a value skipped", invalid_utf8),
        ("trailing characters", [CLONE, b" x"].concat()),
        (
            "a trailing comma",
            replaced("\"dryRun\":false", "\"dryRun\":false,"),
        ),
        (
            "a control character",
            replaced("data-clone", "data\u{1}clone"),
        ),
        (
            "a bad escape",
            replaced("\\\"apiVersion", "\\x\"apiVersion"),
        ),
        (
            "a leading zero",
            replaced("\"dryRun\":false", "\"dryRun\":false,\"x\":01"),
        ),
        (
            "nesting deeper than the fast path goes",
            edited(|r| {
                let mut deep = json!(1);
                for _ in 0..super::MAX_DEPTH {
                    deep = json!([deep]);
                }
                r["request"]["object"]["metadata"]["labels"] = deep;
            }),
        ),
        ("empty", Vec::new()),
    ];
    for (what, case) in cases {
        assert_eq!(read(&case), None, "{what}: read by hand");
        // What the webhook answers is serde's answer.
        assert_eq!(parse(&case).ok(), serde(&case), "{what}");
    }
}

/// Any JSON value, a few levels deep, with the strings the reader compares.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::String),
        prop::sample::select(vec!["CREATE", "PersistentVolumeClaim", "", "10Gi", "\\\""])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "kind",
                    "name",
                    "group",
                    "version",
                    "resource",
                    "uid",
                    "spec",
                    "metadata",
                    "storage",
                    "requests",
                    "dataSource",
                    "namespace",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly what the reader reads (a string, null), so that many edited reviews are read by
/// hand and compared; else any JSON.
fn edit_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => "[a-z0-9.-]{0,8}".prop_map(Value::String),
        1 => Just(Value::Null),
        2 => any_json(),
    ]
}

/// Where edits go: every field the reader reads, and a few it skips.
const PATHS: [&[&str]; 22] = [
    &["apiVersion"],
    &["kind"],
    &["request"],
    &["request", "uid"],
    &["request", "kind"],
    &["request", "kind", "group"],
    &["request", "resource"],
    &["request", "requestKind"],
    &["request", "requestSubResource"],
    &["request", "subResource"],
    &["request", "name"],
    &["request", "namespace"],
    &["request", "operation"],
    &["request", "userInfo"],
    &["request", "object"],
    &["request", "object", "metadata"],
    &["request", "object", "metadata", "name"],
    &["request", "object", "spec"],
    &["request", "object", "spec", "dataSource"],
    &["request", "object", "spec", "dataSourceRef", "namespace"],
    &["request", "object", "spec", "resources", "requests"],
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
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn edited_reviews_read_by_hand_are_what_serde_reads(
        edits in prop::collection::vec((prop::sample::select(PATHS.to_vec()), edit_value()), 1..3),
    ) {
        let mut review = clone_review();
        for (path, value) in edits {
            set(&mut review, path, value);
        }
        let bytes = body(&review);
        if let Some(fast) = read(&bytes) {
            prop_assert_eq!(Some(fast), serde(&bytes));
        }
    }

    #[test]
    fn mutated_bytes_read_by_hand_are_what_serde_reads(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        plain in any::<bool>(),
    ) {
        let mut bytes = if plain { PLAIN.to_vec() } else { CLONE.to_vec() };
        for (at, byte, how) in edits {
            let at = at.index(bytes.len());
            match how {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        if let Some(fast) = read(&bytes) {
            prop_assert_eq!(Some(fast), serde(&bytes));
        }
    }
}
