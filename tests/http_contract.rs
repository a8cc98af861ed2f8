//! The HTTP contract of POST /validate and the admin endpoints, driven in-process through
//! what production serves, `Webhook::service` and `Webhook::admin_router` (no sockets).

mod common;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use pvc_clone_guard::Webhook;
use pvc_clone_guard::config::{Action, FailureMode, Policy, RuleId};
use pvc_clone_guard::facts::StaticFacts;
use pvc_clone_guard::server::ReviewPort;
use pvc_clone_guard::server::{Limits, MAX_REVIEW_BYTES, Timeouts};
use serde_json::{Value, json};
use tower::ServiceExt;

use common::*;

/// A response's status, headers and body.
async fn answer(response: axum::response::Response) -> (StatusCode, header::HeaderMap, Bytes) {
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, body)
}

async fn post_raw(
    app: ReviewPort<StaticFacts>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("request");
    let (status, _, body) = answer(app.oneshot(request).await.expect("infallible")).await;
    (status, body.to_vec())
}

/// Posts a review and returns the HTTP status and the parsed `response` of the review.
async fn post(app: ReviewPort<StaticFacts>, review: &Value) -> (StatusCode, Value) {
    let (status, body) = post_raw(
        app,
        "application/json",
        serde_json::to_vec(review).expect("json"),
    )
    .await;
    let parsed: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, parsed)
}

fn webhook(
    facts: Result<pvc_clone_guard::rules::Facts, String>,
    policy: Policy,
) -> Webhook<StaticFacts> {
    Webhook::new(
        reviewer(facts, policy),
        Timeouts::default(),
        Limits::default(),
    )
}

fn app(
    facts: Result<pvc_clone_guard::rules::Facts, String>,
    policy: Policy,
) -> ReviewPort<StaticFacts> {
    webhook(facts, policy).service()
}

fn default_app() -> ReviewPort<StaticFacts> {
    app(Ok(good_facts()), Policy::default())
}

#[tokio::test]
async fn a_plain_claim_is_allowed_and_the_uid_echoed() {
    let (status, body) = post(default_app(), &create(claim("plain", None, "1Gi"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], UID);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("warnings").is_none());
}

#[tokio::test]
async fn a_valid_clone_is_allowed() {
    let (status, body) = post(
        default_app(),
        &create(claim("clone", Some(claim_source("data")), "10Gi")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test]
async fn a_violating_clone_is_refused_with_403_forbidden_and_every_violation() {
    let mut facts = good_facts();
    let source = facts.source.as_mut().expect("source");
    source.phase = Some("Pending".into());
    source.volume_name = None;
    facts.volume = None;
    let mut object = claim("clone", Some(claim_source("data")), "1000Mi");
    object["spec"]["volumeMode"] = json!("Block");
    let (status, body) = post(app(Ok(facts), Policy::default()), &create(object)).await;
    assert_eq!(status, StatusCode::OK);
    let response = &body["response"];
    assert_eq!(response["uid"], UID);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert_eq!(
        response["status"]["message"],
        "[source-bound] source claim \"data\" is Pending, not Bound; wait until it is Bound, then create the clone\n\
         [volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem\n\
         [size] this claim requests 1000Mi but source claim \"data\" requests 10Gi; request at least 10Gi"
    );
}

#[tokio::test]
async fn each_kind_of_violation_reaches_the_response() {
    type Mutation = fn(&mut pvc_clone_guard::rules::Facts);
    let cases: Vec<(Mutation, &str)> = vec![
        (|f| f.source = None, "[source-exists] "),
        (
            |f| {
                f.source.as_mut().expect("s").deletion_timestamp =
                    Some("2026-11-21T10:00:00Z".into())
            },
            "[source-deleting] ",
        ),
        (|f| f.volume = None, "[source-volume] "),
        (
            |f| {
                let v = f.volume.as_mut().expect("v");
                v.csi_driver = None;
                v.plugin = "hostPath".into();
            },
            "[csi-source] ",
        ),
        (
            |f| f.class = pvc_clone_guard::rules::ClassFact::Disabled,
            "[dynamic-provisioning] ",
        ),
        (
            |f| {
                f.class =
                    pvc_clone_guard::rules::ClassFact::Found(pvc_clone_guard::rules::FoundClass {
                        name: "other".into(),
                        provisioner: "other.csi.example.com".into(),
                        is_default: false,
                        allowed_topologies: vec![],
                        parameters: Default::default(),
                    })
            },
            "[same-driver] ",
        ),
    ];
    for (mutate, prefix) in cases {
        let mut facts = good_facts();
        mutate(&mut facts);
        let (status, body) = post(
            app(Ok(facts), Policy::default()),
            &create(claim("clone", Some(claim_source("data")), "10Gi")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["allowed"], false, "{prefix}");
        let message = body["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(message.starts_with(prefix), "{message}");
    }
}

#[tokio::test]
async fn a_cross_namespace_reference_is_refused_without_facts() {
    let mut object = claim("clone", None, "10Gi");
    object["spec"]["dataSourceRef"] =
        json!({"kind": "PersistentVolumeClaim", "name": "data", "namespace": "prod"});
    // No facts at all: the rule must not need them.
    let (_, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(object),
    )
    .await;
    assert_eq!(
        body["response"]["status"]["message"],
        "[same-namespace] dataSourceRef names claim \"data\" in namespace \"prod\", but this claim is in namespace \"dev\"; \
         a clone must be created in its source's namespace: create this claim in namespace \"prod\""
    );
}

#[tokio::test]
async fn a_claim_kind_with_an_api_group_is_refused_without_facts() {
    let object = claim(
        "clone",
        Some(json!({"apiGroup": "example.com", "kind": "PersistentVolumeClaim", "name": "data"})),
        "10Gi",
    );
    let (_, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(object),
    )
    .await;
    assert_eq!(
        body["response"]["status"]["message"],
        "[source-api-group] spec.dataSource names kind PersistentVolumeClaim with apiGroup \"example.com\", but claims belong to the core API group; remove apiGroup to clone claim \"data\""
    );
}

#[tokio::test]
async fn a_data_source_ref_alone_is_read() {
    let mut object = claim("clone", None, "1Gi");
    object["spec"]["dataSourceRef"] = json!({"kind": "PersistentVolumeClaim", "name": "data"});
    let (_, body) = post(default_app(), &create(object)).await;
    assert_eq!(
        body["response"]["status"]["message"],
        "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
    );
}

fn restore_claim(storage: &str) -> Value {
    claim(
        "restore",
        Some(
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap-1"}),
        ),
        storage,
    )
}

#[tokio::test]
async fn a_valid_restore_is_allowed() {
    let (status, body) = post(
        app(Ok(good_restore_facts()), Policy::default()),
        &create(restore_claim("10Gi")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["uid"], UID);
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test]
async fn a_restore_smaller_than_its_snapshot_is_refused_with_403_forbidden() {
    let (status, body) = post(
        app(Ok(good_restore_facts()), Policy::default()),
        &create(restore_claim("100Mi")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["uid"], UID);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 403);
    assert_eq!(body["response"]["status"]["reason"], "Forbidden");
    assert_eq!(
        body["response"]["status"]["message"],
        "[restore-size] this claim requests 100Mi but snapshot \"snap-1\" needs at least 10Gi (its restoreSize); request at least 10Gi"
    );
}

#[tokio::test]
async fn a_restore_names_the_restore_when_facts_are_unavailable() {
    let (_, body) = post(
        app(Err("connection refused".into()), Policy::default()),
        &create(restore_claim("10Gi")),
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("pvc-clone-guard could not check this restore: ")),
        "{body}"
    );
}

#[tokio::test]
async fn a_snapshot_of_another_api_group_is_refused_without_a_lookup() {
    // As the provisioner refuses it for good ("the PVC source does not belong to the right
    // APIGroup"); the facts are never asked.
    let object = claim(
        "restore",
        Some(json!({"apiGroup": "example.com", "kind": "VolumeSnapshot", "name": "snap"})),
        "1Gi",
    );
    let (_, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(object),
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(
        body["response"]["status"]["message"],
        "[source-api-group] spec.dataSource names kind VolumeSnapshot with apiGroup \"example.com\", but VolumeSnapshots belong to snapshot.storage.k8s.io; set apiGroup: snapshot.storage.k8s.io to restore VolumeSnapshot \"snap\""
    );
}

#[tokio::test]
async fn a_statefulset_with_bad_clone_templates_is_refused_naming_each_template() {
    let mut block = claim_template("index", Some(claim_source("data")), "10Gi");
    block["spec"]["volumeMode"] = json!("Block");
    let templates = json!([
        claim_template("logs", None, "1Gi"),
        claim_template("data", Some(claim_source("data")), "1Gi"),
        block,
    ]);
    let (status, body) = post(default_app(), &create(statefulset(templates))).await;
    assert_eq!(status, StatusCode::OK);
    let response = &body["response"];
    assert_eq!(response["uid"], UID);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert_eq!(
        response["status"]["message"],
        "volumeClaimTemplates[1] \"data\": [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi\n\
         volumeClaimTemplates[2] \"index\": [volume-mode] source claim \"data\" is Filesystem but this claim asks for Block; set spec.volumeMode: Filesystem"
    );
}

#[tokio::test]
async fn a_statefulset_whose_templates_clone_validly_is_allowed() {
    // Every replica's claim clones the same source: valid.
    let templates = json!([claim_template("data", Some(claim_source("data")), "10Gi")]);
    let (status, body) = post(default_app(), &create(statefulset(templates))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"].get("warnings").is_none(), "{body}");
}

#[tokio::test]
async fn a_statefulset_template_warning_names_the_template() {
    let mut policy = Policy::default();
    policy.set_action(RuleId::Size, Action::Warn);
    let templates = json!([claim_template("data", Some(claim_source("data")), "1Gi")]);
    let (_, body) = post(
        app(Ok(good_facts()), policy),
        &create(statefulset(templates)),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["warnings"],
        json!([
            "volumeClaimTemplates[0] \"data\": [size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
        ])
    );
}

#[tokio::test]
async fn statefulsets_without_data_sources_and_unchanged_updates_are_allowed_without_facts() {
    let plain = statefulset(json!([claim_template("data", None, "1Gi")]));
    let (status, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(plain),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    // A scale of a StatefulSet whose (once valid) source is gone: its claims exist already.
    let cloning = statefulset(json!([claim_template(
        "data",
        Some(claim_source("gone")),
        "1Gi"
    )]));
    let mut scaled = cloning.clone();
    scaled["spec"]["replicas"] = json!(5);
    let (status, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &review("UPDATE", scaled, cloning, false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"].get("warnings").is_none(), "{body}");
}

#[tokio::test]
async fn a_statefulset_is_admitted_with_a_warning_when_facts_are_unavailable_even_failing_closed() {
    let templates = json!([claim_template("data", Some(claim_source("data")), "10Gi")]);
    let (_, body) = post(
        app(Err("connection refused".into()), Policy::default()),
        &create(statefulset(templates)),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(
        body["response"]["warnings"],
        json!([
            "pvc-clone-guard could not check this clone template volumeClaimTemplates[0] \"data\" \
             (reading persistentvolumeclaims from the API server failed: connection refused); admitted unchecked"
        ])
    );
}

#[tokio::test]
async fn warnings_admit_the_claim_with_warning_lines() {
    let mut facts = good_facts();
    facts.pods = pvc_clone_guard::rules::PodsFact::Known(vec!["web-0".into()]);
    let (_, body) = post(
        app(Ok(facts), Policy::default()),
        &create(claim("clone", Some(claim_source("data")), "10Gi")),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["warnings"],
        json!([
            "[source-in-use] source claim \"data\" is mounted by pod \"web-0\"; the clone is only crash-consistent"
        ])
    );
}

#[tokio::test]
async fn a_dry_run_gets_the_same_verdict() {
    let object = claim("clone", Some(claim_source("data")), "1Gi");
    let (_, real) = post(default_app(), &create(object.clone())).await;
    let (_, dry) = post(default_app(), &review("CREATE", object, Value::Null, true)).await;
    assert_eq!(real["response"]["allowed"], false);
    assert_eq!(real, dry);
}

#[tokio::test]
async fn update_delete_and_connect_are_allowed_at_once() {
    let bad = claim("clone", Some(claim_source("data")), "1Gi");
    for (operation, object, old) in [
        ("UPDATE", bad.clone(), bad.clone()),
        ("DELETE", Value::Null, bad.clone()),
        ("CONNECT", Value::Null, Value::Null),
    ] {
        let (status, body) = post(
            app(Err("must not be asked".into()), Policy::default()),
            &review(operation, object, old, false),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{operation}");
        assert_eq!(body["response"]["allowed"], true, "{operation}: {body}");
        assert_eq!(body["response"]["uid"], UID);
    }
}

#[tokio::test]
async fn other_kinds_are_allowed_even_with_odd_shapes() {
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "dev"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}],
                 "resources": {"requests": {"cpu": "1"}}, "volumeMode": 42, "dataSource": "x"}
    });
    let (status, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(pod),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true);
    // A spec, a metadata and a data source that are strings, not objects.
    let odd = json!({"kind": "Widget", "apiVersion": "example.com/v1", "metadata": "m", "spec": "just a string"});
    let (status, body) = post(
        app(Err("must not be asked".into()), Policy::default()),
        &create(odd),
    )
    .await;
    assert_eq!(
        (status, &body["response"]["allowed"]),
        (StatusCode::OK, &json!(true))
    );
    let mut claim_with_string_source = claim("clone", None, "1Gi");
    claim_with_string_source["spec"]["dataSource"] = json!("data");
    let (status, body) = post(default_app(), &create(claim_with_string_source)).await;
    assert_eq!(
        (status, &body["response"]["allowed"]),
        (StatusCode::OK, &json!(true))
    );
}

#[tokio::test]
async fn fail_closed_names_the_cause_and_fail_open_warns() {
    let object = claim("clone", Some(claim_source("data")), "10Gi");
    let (_, closed) = post(
        app(Err("connection refused".into()), Policy::default()),
        &create(object.clone()),
    )
    .await;
    assert_eq!(closed["response"]["allowed"], false);
    assert_eq!(
        closed["response"]["status"]["message"],
        "pvc-clone-guard could not check this clone: reading persistentvolumeclaims from the API server failed: connection refused; \
         the webhook fails closed, so retry in a moment or ask an administrator to check pvc-clone-guard"
    );
    let mut policy = Policy::default();
    policy.failure_mode = FailureMode::FailOpen;
    let (_, open) = post(
        app(Err("connection refused".into()), policy),
        &create(object),
    )
    .await;
    assert_eq!(open["response"]["allowed"], true);
    assert_eq!(
        open["response"]["warnings"],
        json!([
            "pvc-clone-guard could not check this clone (reading persistentvolumeclaims from the API server failed: connection refused); admitted unchecked"
        ])
    );
}

#[tokio::test]
async fn a_plain_claim_is_allowed_even_when_facts_are_unavailable() {
    let (_, body) = post(
        app(Err("connection refused".into()), Policy::default()),
        &create(claim("plain", None, "1Gi")),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
}

#[tokio::test]
async fn a_rule_set_to_warn_admits_with_a_warning() {
    let mut policy = Policy::default();
    policy.set_action(RuleId::Size, Action::Warn);
    let (_, body) = post(
        app(Ok(good_facts()), policy),
        &create(claim("clone", Some(claim_source("data")), "1Gi")),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["warnings"],
        json!([
            "[size] this claim requests 1Gi but source claim \"data\" requests 10Gi; request at least 10Gi"
        ])
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_plain_explanation() {
    let cases: [(&[u8], &str); 6] = [
        (b"{not json", "the body is not a valid AdmissionReview: key must be a string at line 1 column 2\n"),
        (b"", "the body is not a valid AdmissionReview: EOF while parsing a value at line 1 column 0\n"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported: send admission.k8s.io/v1 (set admissionReviewVersions: [v1])\n",
        ),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#, "kind \"Pod\" is not AdmissionReview\n"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "the AdmissionReview has no request\n"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"group":"","version":"v1","kind":"PersistentVolumeClaim"}}}"#,
            "the body is not a valid AdmissionReview: missing field `uid` at line 1 column 138\n",
        ),
    ];
    for (body, expected) in cases {
        let (status, text) = post_raw(default_app(), "application/json", body.to_vec()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(String::from_utf8_lossy(&text), expected);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let (status, _) = post_raw(
        default_app(),
        "application/json",
        vec![b' '; MAX_REVIEW_BYTES + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_large_review_under_the_limit_is_answered() {
    let mut object = claim("big", None, "1Gi");
    object["metadata"]["annotations"]["padding"] = json!("x".repeat(3 * 1024 * 1024));
    let (status, body) = post(default_app(), &create(object)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true);
}

#[tokio::test]
async fn a_wrong_content_type_gets_415() {
    let body = serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json");
    for content_type in ["text/plain", "application/yaml", ""] {
        let (status, text) = post_raw(default_app(), content_type, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&text),
            "send the AdmissionReview as Content-Type: application/json\n"
        );
    }
    let (status, _) = post_raw(default_app(), "application/json; charset=utf-8", body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn only_post_validate_is_served() {
    let response = default_app()
        .oneshot(
            Request::get("/validate")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = default_app()
        .oneshot(
            Request::post("/other")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_endpoints_report_liveness_readiness_and_metrics() {
    let webhook = webhook(Ok(good_facts()), Policy::default());
    let admin = webhook.admin_router();
    let reviews = webhook.service();
    post(
        reviews.clone(),
        &create(claim("clone", Some(claim_source("data")), "1Gi")),
    )
    .await;
    post(reviews.clone(), &create(claim("plain", None, "1Gi"))).await;
    post_raw(reviews, "application/json", b"nope".to_vec()).await;

    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            let response = admin
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get("/livez").await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(get("/readyz").await, (StatusCode::OK, "ok\n".into()));
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "pvc_clone_guard_reviews_total{operation=\"CREATE\",verdict=\"denied\"} 1",
        "pvc_clone_guard_reviews_total{operation=\"CREATE\",verdict=\"skipped\"} 1",
        "pvc_clone_guard_violations_total{rule=\"size\",action=\"deny\"} 1",
        "pvc_clone_guard_malformed_reviews_total 1",
        "pvc_clone_guard_review_duration_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    webhook.health().begin_shutdown();
    assert_eq!(
        get("/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );
}

/// Every judged review leaves its verdict, the rule ids and (for a lookup failure) the cause
/// in the audit log; the API server prefixes each key with the webhook's name.
#[tokio::test]
async fn judged_reviews_carry_audit_annotations_and_skipped_ones_none() {
    let clone = || create(claim("clone", Some(claim_source("data")), "10Gi"));
    let annotations = |body: &Value| body["response"]["auditAnnotations"].clone();

    let (_, allowed) = post(default_app(), &clone()).await;
    assert_eq!(annotations(&allowed), json!({"verdict": "allowed"}));

    let mut in_use = good_facts();
    in_use.pods = pvc_clone_guard::rules::PodsFact::Known(vec!["web-0".into()]);
    let (_, warned) = post(app(Ok(in_use.clone()), Policy::default()), &clone()).await;
    assert_eq!(
        annotations(&warned),
        json!({"verdict": "warned", "warned-rules": "source-in-use"})
    );

    let mut bad = claim("clone", Some(claim_source("data")), "1000Mi");
    bad["spec"]["volumeMode"] = json!("Block");
    let (_, denied) = post(app(Ok(in_use), Policy::default()), &create(bad)).await;
    assert_eq!(
        annotations(&denied),
        json!({"verdict": "denied", "denied-rules": "volume-mode,size", "warned-rules": "source-in-use"})
    );

    let (_, closed) = post(
        app(Err("connection refused".into()), Policy::default()),
        &clone(),
    )
    .await;
    assert_eq!(
        annotations(&closed),
        json!({
            "verdict": "failed-closed",
            "cause": "reading persistentvolumeclaims from the API server failed: connection refused"
        })
    );
    let mut policy = Policy::default();
    policy.failure_mode = FailureMode::FailOpen;
    let (_, open) = post(app(Err("connection refused".into()), policy), &clone()).await;
    assert_eq!(
        annotations(&open),
        json!({
            "verdict": "failed-open",
            "cause": "reading persistentvolumeclaims from the API server failed: connection refused"
        })
    );

    // Not judged: no annotation at all (the key is omitted from the response).
    let (_, plain) = post(default_app(), &create(claim("plain", None, "1Gi"))).await;
    assert!(
        plain["response"].get("auditAnnotations").is_none(),
        "{plain}"
    );
}

/// The service production serves hands `POST /validate` to the router's own handler: the
/// two answer every request alike (reviews allowed and denied, bodies refused, other
/// methods and paths).
#[tokio::test]
async fn the_served_service_answers_as_the_router_does() {
    let webhook = webhook(Ok(good_facts()), Policy::default());
    let review = |object| serde_json::to_vec(&create(object)).expect("json");
    let requests: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "POST",
            "/validate",
            "application/json",
            review(claim("plain", None, "1Gi")),
        ),
        (
            "POST",
            "/validate",
            "application/json",
            review(claim("clone", Some(claim_source("data")), "1Gi")),
        ),
        (
            "POST",
            "/validate",
            "application/json",
            review(claim("small", Some(claim_source("data")), "1Mi")),
        ),
        ("POST", "/validate", "application/json", b"nope".to_vec()),
        (
            "POST",
            "/validate",
            "text/plain",
            review(claim("plain", None, "1Gi")),
        ),
        (
            "POST",
            "/validate?timeout=5s",
            "application/json",
            review(claim("q", None, "1Gi")),
        ),
        ("GET", "/validate", "application/json", Vec::new()),
        ("PUT", "/validate", "application/json", Vec::new()),
        ("POST", "/validate/", "application/json", Vec::new()),
        ("POST", "/other", "application/json", Vec::new()),
    ];
    for (method, path, content_type, body) in requests {
        let request = || {
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.clone()))
                .expect("request")
        };
        let json = |(status, headers, body): (StatusCode, header::HeaderMap, Bytes)| {
            // As JSON where it is (the audit annotations are a map: their order varies).
            let body = serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (status, headers, body)
        };
        let (service, router) = (webhook.service(), webhook.router());
        let served = answer(service.oneshot(request()).await.expect("infallible")).await;
        let routed = answer(router.oneshot(request()).await.expect("infallible")).await;
        assert_eq!(
            json(served),
            json(routed),
            "{method} {path} ({content_type})"
        );
    }
}
