//! Cross-namespace sources (crossNamespace: deny | reference-grant | allow) and the
//! ReferenceGrant matcher.

use super::snapshot::{restore_facts, restore_request};
use super::*;
use crate::rules::CrossNamespace;

fn cross(mut r: DataSourceRequest) -> DataSourceRequest {
    r.source.field = "dataSourceRef";
    r.source.namespace = Some("prod".into());
    r
}

fn policy(mode: CrossNamespace) -> Policy {
    let mut policy = Policy::default();
    policy.cross_namespace = mode;
    policy
}

/// Facts of the source in "prod".
fn prod_facts() -> Facts {
    let mut f = facts();
    volume(&mut f)
        .claim_ref
        .as_mut()
        .expect("claimRef")
        .namespace = Some("prod".into());
    f
}

fn grant(name: &str, from_namespace: &str, to: GrantTo) -> ReferenceGrantInfo {
    ReferenceGrantInfo {
        name: name.into(),
        from: vec![GrantFrom {
            group: String::new(),
            kind: "PersistentVolumeClaim".into(),
            namespace: from_namespace.into(),
        }],
        to: vec![to],
    }
}

fn to(group: &str, kind: &str, name: Option<&str>) -> GrantTo {
    GrantTo {
        group: group.into(),
        kind: kind.into(),
        name: name.map(Into::into),
    }
}

#[test]
fn deny_refuses_and_reads_nothing_of_the_other_namespace() {
    let r = cross(request());
    let p = policy(CrossNamespace::Deny);
    assert!(!r.needs_facts(&p));
    assert!(!r.needs_grant(&p));
    let restore = cross(restore_request());
    assert_eq!(
        decide(&restore, None, &p).denial_message(),
        "[same-namespace] dataSourceRef names VolumeSnapshot \"snap-1\" in namespace \"prod\", but this claim is in namespace \"dev\"; a restore must be created in its source's namespace: create this claim in namespace \"prod\""
    );
}

#[test]
fn allow_is_same_namespace_off() {
    let r = cross(request());
    let p = policy(CrossNamespace::Allow);
    assert_eq!(r.source_namespace(&p), Some("prod"));
    assert!(!r.needs_grant(&p));
    assert_eq!(judge_with(&r, &prod_facts(), &p), (vec![], vec![]));
}

#[test]
fn reference_grant_without_a_grant_names_the_grant_that_would_allow_it() {
    let p = policy(CrossNamespace::ReferenceGrant);
    let r = cross(request());
    assert!(r.needs_facts(&p) && r.needs_grant(&p));
    assert_eq!(r.source_namespace(&p), Some("prod"));
    // Without a grant the gatherer reads nothing else: the other rules must not pile on.
    let f = Facts {
        grant: GrantFact::NotFound,
        ..Facts::default()
    };
    assert_eq!(
        judge_with(&r, &f, &p).0,
        [
            "[same-namespace] dataSourceRef names PersistentVolumeClaim \"data\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use PersistentVolumeClaim \"data\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"\", kind: PersistentVolumeClaim, name: data}"
        ]
    );
    assert_eq!(
        judge_with(&cross(restore_request()), &f, &p).0,
        [
            "[same-namespace] dataSourceRef names VolumeSnapshot \"snap-1\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use VolumeSnapshot \"snap-1\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"snapshot.storage.k8s.io\", kind: VolumeSnapshot, name: snap-1}"
        ]
    );
}

#[test]
fn reference_grant_with_a_grant_applies_every_other_rule_in_the_source_namespace() {
    let p = policy(CrossNamespace::ReferenceGrant);
    let r = cross(request());
    let mut f = prod_facts();
    f.grant = GrantFact::Allowed {
        grant: "clones-from-dev".into(),
    };
    assert_eq!(judge_with(&r, &f, &p), (vec![], vec![]));
    f.source = None;
    assert_eq!(
        judge_with(&r, &f, &p).0,
        [
            "[source-exists] source claim \"data\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSourceRef.name"
        ]
    );
    let mut restore = restore_facts();
    restore.grant = f.grant.clone();
    restore.snapshot = SnapshotFact::Missing;
    assert_eq!(
        judge_with(&cross(restore_request()), &restore, &p).0,
        [
            "[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSourceRef.name"
        ]
    );
}

#[test]
fn reference_grant_mode_does_not_ask_for_a_grant_in_the_claims_own_namespace() {
    let p = policy(CrossNamespace::ReferenceGrant);
    let mut r = request();
    r.source.namespace = Some("dev".into());
    assert!(!r.needs_grant(&p));
    assert_eq!(judge_with(&r, &facts(), &p), (vec![], vec![]));
}

#[test]
fn the_grant_matcher_follows_the_provisioner() {
    let r = cross(request());
    let claim = |name| to("", "PersistentVolumeClaim", name);
    let allowed = |name: &str| GrantFact::Allowed { grant: name.into() };
    // A name that is absent, empty or the source's.
    for name in [None, Some(""), Some("data")] {
        assert_eq!(
            match_grant(&[grant("g", "dev", claim(name))], &r),
            allowed("g")
        );
    }
    let refused = [
        grant("other-name", "dev", claim(Some("other"))),
        grant("other-namespace", "test", claim(None)),
        grant("other-kind", "dev", to("", "Secret", None)),
        grant(
            "other-group",
            "dev",
            to("example.com", "PersistentVolumeClaim", None),
        ),
        grant(
            "snapshot",
            "dev",
            to(SNAPSHOT_GROUP, "VolumeSnapshot", None),
        ),
        ReferenceGrantInfo {
            name: "from-a-pod".into(),
            from: vec![GrantFrom {
                group: String::new(),
                kind: "Pod".into(),
                namespace: "dev".into(),
            }],
            to: vec![claim(None)],
        },
        ReferenceGrantInfo {
            name: "from-another-group".into(),
            from: vec![GrantFrom {
                group: "example.com".into(),
                kind: "PersistentVolumeClaim".into(),
                namespace: "dev".into(),
            }],
            to: vec![claim(None)],
        },
    ];
    assert_eq!(match_grant(&refused, &r), GrantFact::NotFound);
    assert_eq!(match_grant(&[], &r), GrantFact::NotFound);
    // A snapshot needs a `to` of its own group and kind.
    let restore = cross(restore_request());
    assert_eq!(match_grant(&refused, &restore), allowed("snapshot"));
    assert_eq!(
        match_grant(
            &[grant(
                "g",
                "dev",
                to(SNAPSHOT_GROUP, "VolumeSnapshot", Some("snap-2"))
            )],
            &restore
        ),
        GrantFact::NotFound
    );
    // Several: the first by name.
    let both = [
        grant("b", "dev", claim(None)),
        grant("a", "dev", claim(Some("data"))),
    ];
    assert_eq!(match_grant(&both, &r), allowed("a"));
}
