//! Placement warnings and the pods fact: every branch, with the exact text.

use super::*;

const ZONE: &str = "topology.kubernetes.io/zone";

/// A topology term of one key.
fn zone(values: &[&str]) -> TopologyTerm {
    term(ZONE, values)
}

fn term(key: &str, values: &[&str]) -> TopologyTerm {
    TopologyTerm::from([(
        key.to_owned(),
        values.iter().map(|v| (*v).to_owned()).collect(),
    )])
}

pub(super) fn parameters(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// StorageClass `name` of the source's driver, with these topologies and parameters.
pub(super) fn class_with(
    name: &str,
    allowed_topologies: Vec<TopologyTerm>,
    pairs: &[(&str, &str)],
) -> ClassFact {
    ClassFact::Found(FoundClass {
        name: name.into(),
        provisioner: DRIVER.into(),
        is_default: false,
        allowed_topologies,
        parameters: parameters(pairs),
    })
}

/// The source volume in these terms, the clone's class allowing those.
fn placed(s: &mut Setup, volume: Vec<TopologyTerm>, class: Vec<TopologyTerm>) {
    s.volume().node_affinity = volume.into();
    s.facts().class = class_with("gp3", class, &[]);
}

/// The source volume of class `source_class` (of these parameters), the clone's class `gp3`
/// of `type: gp3`.
fn classes(s: &mut Setup, source_class: Option<&str>, source: Option<&[(&str, &str)]>) {
    s.volume().storage_class = source_class.map(Into::into);
    s.facts().source_class_parameters = source.map(parameters);
    s.facts().class = class_with("gp3", vec![], &[("type", "gp3")]);
}

#[test]
fn placement_cases() {
    run(Setup::a_clone, &[
        case("topology warns when no class term can hold the source volume", |s| {
            placed(s, vec![zone(&["us-east-1a"])], vec![zone(&["us-west-2a", "us-west-2b"])]);
        }).warns(&["[topology] StorageClass \"gp3\" allows topology.kubernetes.io/zone in [us-west-2a, us-west-2b] but source volume \"pv-1\" is in [us-east-1a]; most drivers clone only in the source's zone"]),
        case("topology: one of several class terms holds it", |s| {
            placed(s, vec![zone(&["us-east-1a"])], vec![zone(&["us-west-2a"]), zone(&["us-east-1a"])]);
        }),
        case("topology: one of several volume terms fits", |s| {
            placed(s, vec![zone(&["us-east-1a"]), zone(&["us-west-2a"])], vec![zone(&["us-west-2a"])]);
        }),
        case("topology: keys constrained by only one side do not conflict", |s| {
            placed(s, vec![zone(&["b"])], vec![term("topology.ebs.csi.aws.com/zone", &["a"])]);
        }),
        case("topology: no allowedTopologies, anywhere", |s| placed(s, vec![zone(&["us-east-1a"])], vec![])),
        case("topology: no nodeAffinity on the PV, nothing to compare", |s| placed(s, vec![], vec![zone(&["us-west-2a"])])),
        case("class-parameters names the keys that differ", |s| {
            s.volume().storage_class = Some("gp3-encrypted".into());
            s.facts().source_class_parameters = Some(parameters(&[
                ("type", "gp3"),
                ("encrypted", "true"),
                ("csi.storage.k8s.io/fstype", "ext4"),
            ]));
            s.facts().class = class_with("gp3", vec![], &[("type", "gp3"), ("csi.storage.k8s.io/fstype", "xfs")]);
        }).warns(&["[class-parameters] StorageClass \"gp3\" and the source's class \"gp3-encrypted\" differ in parameters csi.storage.k8s.io/fstype, encrypted; the clone may not mount"]),
        case("class-parameters: the same class", |s| classes(s, Some("gp3"), Some(&[("type", "io2")]))),
        case("class-parameters: another class with equal parameters", |s| classes(s, Some("gp3-copy"), Some(&[("type", "gp3")]))),
        case("class-parameters: the source's class is unknown (deleted)", |s| classes(s, Some("gp3-copy"), None)),
        case("class-parameters: the PV names no class", |s| classes(s, None, Some(&[("type", "io2")]))),
        case("source-in-use says when pods could not be read", |s| {
            s.facts().pods = PodsFact::Unknown("pods is forbidden".into());
        }).warns(&["[source-in-use] source claim \"data\" could not be checked for pods that mount it (pods is forbidden); if one does, the clone is only crash-consistent"]),
        case("access-modes warns about a mode the source does not have", |s| modes(s, &["ReadWriteMany"], "ReadWriteOnce"))
            .warns(&["[access-modes] this claim asks for ReadWriteMany but source claim \"data\" is ReadWriteOnce; block drivers refuse that"]),
        case("access-modes names each new mode and every mode of the source", |s| {
            modes(s, &["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"], "ReadWriteOnce,ReadOnlyMany");
        }).warns(&["[access-modes] this claim asks for ReadWriteMany but source claim \"data\" is ReadWriteOnce, ReadOnlyMany; block drivers refuse that"]),
        case("access-modes: a subset of the source's modes", |s| modes(s, &["ReadOnlyMany"], "ReadWriteOnce,ReadOnlyMany")),
        case("access-modes: ReadWriteOncePod from ReadWriteOnce is the same single writer", |s| modes(s, &["ReadWriteOncePod"], "ReadWriteOnce")),
        case("access-modes: ReadWriteOnce from ReadWriteOncePod", |s| modes(s, &["ReadWriteOnce"], "ReadWriteOncePod")),
        case("access-modes: a source without modes, nothing to compare", |s| {
            modes(s, &["ReadWriteMany"], "");
            s.source().access_modes = None;
        }),
        case("source-node warns about a volume pinned to one node", |s| {
            s.volume().node_affinity = vec![term(HOSTNAME, &["node-1"])].into();
        }).warns(&["[source-node] source volume \"pv-1\" is on node \"node-1\" only; node-local drivers clone only there (the clone's pods too)"]),
        case("source-node: every term pinning the same node is one node", |s| {
            let mut with_zone = term(HOSTNAME, &["node-1"]);
            with_zone.insert(ZONE.into(), vec!["a".into()]);
            s.volume().node_affinity = vec![with_zone, term(HOSTNAME, &["node-1"])].into();
        }).warns(&["[source-node] source volume \"pv-1\" is on node \"node-1\" only; node-local drivers clone only there (the clone's pods too)"]),
        case("source-node: two nodes", |s| s.volume().node_affinity = vec![term(HOSTNAME, &["node-1", "node-2"])].into()),
        case("source-node: two terms of two nodes", |s| {
            s.volume().node_affinity = vec![term(HOSTNAME, &["node-1"]), term(HOSTNAME, &["node-2"])].into();
        }),
        case("source-node: a term without the hostname can be anywhere in it", |s| {
            s.volume().node_affinity = vec![term(HOSTNAME, &["node-1"]), zone(&["a"])].into();
        }),
        case("source-node: a zone is not a node", |s| s.volume().node_affinity = vec![zone(&["a"])].into()),
    ]);
}

const HOSTNAME: &str = "kubernetes.io/hostname";

/// The clone asks for `asked`; the source has `source` (joined by `,`).
fn modes(s: &mut Setup, asked: &[&str], source: &str) {
    s.request.spec.access_modes = asked.iter().map(|m| (*m).to_owned()).collect();
    s.source().access_modes = Some(source.into());
}
