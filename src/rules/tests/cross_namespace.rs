//! Cross-namespace sources (crossNamespace: deny | reference-grant | allow) and the
//! ReferenceGrant matcher.

use super::*;
use crate::rules::CrossNamespace;

/// The clone's source in `prod`, under `mode`, with the facts of that source.
fn cross(s: &mut Setup, mode: CrossNamespace) {
    s.cross();
    s.policy.cross_namespace = mode;
    if s.facts.as_ref().is_some_and(|f| f.volume.is_some()) {
        s.claim_ref().namespace = Some("prod".into());
    }
}

/// [`cross`] in `reference-grant` mode, and no grant found: nothing else is read.
fn no_grant(s: &mut Setup) {
    cross(s, CrossNamespace::ReferenceGrant);
    s.facts = Some(Facts {
        grant: GrantFact::NotFound,
        ..Facts::default()
    });
}

/// [`cross`] in `reference-grant` mode, with `grant` found.
fn granted(s: &mut Setup, grant: GrantFact) {
    cross(s, CrossNamespace::ReferenceGrant);
    s.facts().grant = grant;
}

fn allowed_by_grant() -> GrantFact {
    GrantFact::Allowed {
        grant: "clones-from-dev".into(),
    }
}

#[test]
fn cross_namespace_cases() {
    run(Setup::a_clone, &[
        case("allow is same-namespace off", |s| cross(s, CrossNamespace::Allow)),
        // Without a grant the gatherer reads nothing else: the other rules must not pile on.
        case("reference-grant without a grant names the grant that would allow it", no_grant)
            .denies(&["[same-namespace] dataSourceRef names PersistentVolumeClaim \"data\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use PersistentVolumeClaim \"data\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"\", kind: PersistentVolumeClaim, name: data}"]),
        case("reference-grant with a grant applies every other rule in the source's namespace", |s| {
            granted(s, allowed_by_grant());
        }),
        case("reference-grant with a grant: a missing source", |s| {
            granted(s, allowed_by_grant());
            s.facts().source = None;
        }).denies(&["[source-exists] source claim \"data\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSourceRef.name"]),
        case("reference-grant does not ask for a grant in the claim's own namespace", |s| {
            s.policy.cross_namespace = CrossNamespace::ReferenceGrant;
            s.request.source.namespace = Some("dev".into());
        }),
    ]);
    run(Setup::a_restore, &[
        case("deny refuses a restore and reads nothing of the other namespace", |s| {
            cross(s, CrossNamespace::Deny);
            s.facts = None;
        }).denies(&["[same-namespace] dataSourceRef names VolumeSnapshot \"snap-1\" in namespace \"prod\", but this claim is in namespace \"dev\"; a restore must be created in its source's namespace: create this claim in namespace \"prod\""]),
        case("reference-grant without a grant for a snapshot", no_grant)
            .denies(&["[same-namespace] dataSourceRef names VolumeSnapshot \"snap-1\" in namespace \"prod\", but no ReferenceGrant in namespace \"prod\" allows PersistentVolumeClaims in namespace \"dev\" to use VolumeSnapshot \"snap-1\"; create one: ReferenceGrant in \"prod\" with from {group: \"\", kind: PersistentVolumeClaim, namespace: dev} and to {group: \"snapshot.storage.k8s.io\", kind: VolumeSnapshot, name: snap-1}"]),
        case("reference-grant with a grant: a missing snapshot", |s| {
            granted(s, allowed_by_grant());
            s.facts().snapshot = SnapshotFact::Missing;
        }).denies(&["[snapshot-exists] VolumeSnapshot \"snap-1\" does not exist in namespace \"prod\"; create it first, or fix spec.dataSourceRef.name"]),
    ]);
}

#[test]
fn what_each_mode_reads_of_the_other_namespace() {
    let modes = [
        (CrossNamespace::Deny, false, false, None),
        (CrossNamespace::Allow, true, false, Some("prod")),
        (CrossNamespace::ReferenceGrant, true, true, Some("prod")),
    ];
    for (mode, needs_facts, needs_grant, namespace) in modes {
        let mut s = Setup::a_clone();
        cross(&mut s, mode);
        assert_eq!(s.request.needs_facts(&s.policy), needs_facts, "{mode:?}");
        assert_eq!(s.request.needs_grant(&s.policy), needs_grant, "{mode:?}");
        assert_eq!(s.request.source_namespace(&s.policy), namespace, "{mode:?}");
    }
    let mut own = Setup::a_clone();
    own.policy.cross_namespace = CrossNamespace::ReferenceGrant;
    own.request.source.namespace = Some("dev".into());
    assert!(!own.request.needs_grant(&own.policy));
}

/// A grant from claims in `from_namespace` to `to`.
fn grant(name: &str, from_namespace: &str, to: GrantTo) -> ReferenceGrantInfo {
    grant_from(name, from("", "PersistentVolumeClaim", from_namespace), to)
}

fn grant_from(name: &str, from: GrantFrom, to: GrantTo) -> ReferenceGrantInfo {
    ReferenceGrantInfo {
        name: name.into(),
        from: vec![from],
        to: vec![to],
    }
}

fn from(group: &str, kind: &str, namespace: &str) -> GrantFrom {
    GrantFrom {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.into(),
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
fn the_grant_matcher_follows_the_provisioner() {
    let mut s = Setup::a_clone();
    s.cross();
    let r = s.request;
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
        grant_from("from-a-pod", from("", "Pod", "dev"), claim(None)),
        grant_from(
            "from-another-group",
            from("example.com", "PersistentVolumeClaim", "dev"),
            claim(None),
        ),
    ];
    assert_eq!(match_grant(&refused, &r), GrantFact::NotFound);
    assert_eq!(match_grant(&[], &r), GrantFact::NotFound);
    // A snapshot needs a `to` of its own group and kind.
    let mut s = Setup::a_restore();
    s.cross();
    let restore = s.request;
    assert_eq!(match_grant(&refused, &restore), allowed("snapshot"));
    let other_snapshot = grant(
        "g",
        "dev",
        to(SNAPSHOT_GROUP, "VolumeSnapshot", Some("snap-2")),
    );
    assert_eq!(
        match_grant(&[other_snapshot], &restore),
        GrantFact::NotFound
    );
    // Several: the first by name.
    let both = [
        grant("b", "dev", claim(None)),
        grant("a", "dev", claim(Some("data"))),
    ];
    assert_eq!(match_grant(&both, &r), allowed("a"));
}
