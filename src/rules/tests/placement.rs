//! Placement warnings and the pods fact: every branch, with the exact text.

use super::*;

fn term(pairs: &[(&str, &[&str])]) -> TopologyTerm {
    pairs
        .iter()
        .map(|(key, values)| {
            (
                (*key).to_owned(),
                values.iter().map(|v| (*v).to_owned()).collect(),
            )
        })
        .collect()
}

const ZONE: &str = "topology.kubernetes.io/zone";

fn with_class(
    f: &mut Facts,
    name: &str,
    topologies: Vec<TopologyTerm>,
    parameters: &[(&str, &str)],
) {
    f.class = ClassFact::Found {
        name: name.into(),
        provisioner: DRIVER.into(),
        is_default: false,
        allowed_topologies: topologies,
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
}

#[test]
fn topology_warns_when_no_class_term_can_hold_the_source_volume() {
    let mut f = facts();
    volume(&mut f).node_affinity = vec![term(&[(ZONE, &["us-east-1a"])])].into();
    with_class(
        &mut f,
        "gp3",
        vec![term(&[(ZONE, &["us-west-2a", "us-west-2b"])])],
        &[],
    );
    assert_eq!(
        judge(&request(), &f),
        (
            vec![],
            vec![
                "[topology] StorageClass \"gp3\" allows topology.kubernetes.io/zone in [us-west-2a, us-west-2b] but source volume \"pv-1\" is in [us-east-1a]; most drivers clone only in the source's zone".to_owned()
            ]
        )
    );
}

#[test]
fn topology_is_quiet_when_some_term_overlaps_or_nothing_is_constrained() {
    let holds = [
        // One of several class terms holds it.
        (
            vec![
                term(&[(ZONE, &["us-west-2a"])]),
                term(&[(ZONE, &["us-east-1a"])]),
            ],
            vec![term(&[(ZONE, &["us-east-1a"])])],
        ),
        // One of several volume terms fits.
        (
            vec![term(&[(ZONE, &["us-west-2a"])])],
            vec![
                term(&[(ZONE, &["us-east-1a"])]),
                term(&[(ZONE, &["us-west-2a"])]),
            ],
        ),
        // Keys constrained by only one side do not conflict.
        (
            vec![term(&[("topology.ebs.csi.aws.com/zone", &["a"])])],
            vec![term(&[(ZONE, &["b"])])],
        ),
        // No allowedTopologies: anywhere.
        (vec![], vec![term(&[(ZONE, &["us-east-1a"])])]),
        // No nodeAffinity on the PV: nothing to compare.
        (vec![term(&[(ZONE, &["us-west-2a"])])], vec![]),
    ];
    for (topologies, affinity) in holds {
        let mut f = facts();
        volume(&mut f).node_affinity = affinity.clone().into();
        with_class(&mut f, "gp3", topologies.clone(), &[]);
        assert_eq!(
            judge(&request(), &f),
            (vec![], vec![]),
            "{topologies:?} {affinity:?}"
        );
    }
}

#[test]
fn class_parameters_names_the_keys_that_differ() {
    let mut f = facts();
    volume(&mut f).storage_class = Some("gp3-encrypted".into());
    f.source_class_parameters = Some(
        [
            ("type", "gp3"),
            ("encrypted", "true"),
            ("csi.storage.k8s.io/fstype", "ext4"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    );
    with_class(
        &mut f,
        "gp3",
        vec![],
        &[("type", "gp3"), ("csi.storage.k8s.io/fstype", "xfs")],
    );
    assert_eq!(
        judge(&request(), &f),
        (
            vec![],
            vec![
                "[class-parameters] StorageClass \"gp3\" and the source's class \"gp3-encrypted\" differ in parameters csi.storage.k8s.io/fstype, encrypted; the clone may not mount".to_owned()
            ]
        )
    );
}

#[test]
fn class_parameters_is_quiet_for_the_same_class_equal_parameters_or_an_unknown_class() {
    let params = [("type", "gp3")];
    let to_map = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // The same class.
    let mut f = facts();
    f.source_class_parameters = Some(to_map(&[("type", "io2")]));
    with_class(&mut f, "gp3", vec![], &params);
    assert_eq!(judge(&request(), &f), (vec![], vec![]));
    // Another class with equal parameters.
    volume(&mut f).storage_class = Some("gp3-copy".into());
    f.source_class_parameters = Some(to_map(&params));
    assert_eq!(judge(&request(), &f), (vec![], vec![]));
    // The source's class is unknown (deleted), or the PV names none.
    f.source_class_parameters = None;
    assert_eq!(judge(&request(), &f), (vec![], vec![]));
    volume(&mut f).storage_class = None;
    f.source_class_parameters = Some(to_map(&[("type", "io2")]));
    assert_eq!(judge(&request(), &f), (vec![], vec![]));
}

#[test]
fn source_in_use_says_when_pods_could_not_be_read() {
    let mut f = facts();
    f.pods = PodsFact::Unknown("pods is forbidden".into());
    assert_eq!(
        judge(&request(), &f),
        (
            vec![],
            vec![
                "[source-in-use] source claim \"data\" could not be checked for pods that mount it (pods is forbidden); if one does, the clone is only crash-consistent".to_owned()
            ]
        )
    );
}
