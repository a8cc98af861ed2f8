//! Placement warnings for clones: what the provisioner does not check, but makes a clone
//! provision in the wrong place or fail to mount.

use std::collections::BTreeSet;

use super::{FoundClass, Input, TopologyTerm};

/// A class term can hold a volume of a PV term when, for every key both constrain, their
/// values overlap.
fn can_hold(class_term: &TopologyTerm, volume_term: &TopologyTerm) -> bool {
    class_term.iter().all(|(key, allowed)| {
        volume_term
            .get(key)
            .is_none_or(|values| values.iter().any(|v| allowed.contains(v)))
    })
}

/// The first key a class term and a volume term both constrain without overlap.
fn conflict<'a>(
    class_term: &'a TopologyTerm,
    volume_term: &'a TopologyTerm,
) -> Option<(&'a str, &'a [String], &'a [String])> {
    class_term.iter().find_map(|(key, allowed)| {
        let values = volume_term.get(key)?;
        (!values.iter().any(|v| allowed.contains(v))).then_some((
            key.as_str(),
            allowed.as_slice(),
            values.as_slice(),
        ))
    })
}

pub(super) fn topology(input: &Input) -> Option<String> {
    let FoundClass {
        name,
        allowed_topologies,
        ..
    } = input.class()?;
    let volume = input.volume()?;
    if allowed_topologies.is_empty() || volume.node_affinity.is_empty() {
        return None;
    }
    let fits = allowed_topologies
        .iter()
        .any(|class_term| volume.node_affinity.iter().any(|v| can_hold(class_term, v)));
    if fits {
        return None;
    }
    let (key, allowed, values) = allowed_topologies.iter().find_map(|class_term| {
        volume
            .node_affinity
            .iter()
            .find_map(|volume_term| conflict(class_term, volume_term))
    })?;
    Some(format!(
        "StorageClass {name:?} allows {key} in [{allowed}] but source volume {volume:?} is in [{values}]; \
         most drivers clone only in the source's zone",
        allowed = allowed.join(", "),
        values = values.join(", "),
        volume = volume.name,
    ))
}

pub(super) fn class_parameters(input: &Input) -> Option<String> {
    let FoundClass {
        name, parameters, ..
    } = input.class()?;
    let source_class = input
        .volume()?
        .storage_class
        .as_deref()
        .filter(|c| !c.is_empty())?;
    if source_class == name {
        return None;
    }
    let source_parameters = input.facts?.source_class_parameters.as_ref()?;
    let differing: Vec<&str> = parameters
        .keys()
        .chain(source_parameters.keys())
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| parameters.get(*key) != source_parameters.get(*key))
        .collect();
    (!differing.is_empty()).then(|| {
        format!(
            "StorageClass {name:?} and the source's class {source_class:?} differ in parameters {keys}; \
             the clone may not mount",
            keys = differing.join(", "),
        )
    })
}

/// The node label a node-local volume is pinned by.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// ReadWriteOncePod narrows ReadWriteOnce to one pod: the same single-node writer for a
/// driver, so neither is new to a source that has the other.
fn same_mode(asked: &str, source: &str) -> bool {
    let single_writer = |mode: &str| matches!(mode, "ReadWriteOnce" | "ReadWriteOncePod");
    asked == source || (single_writer(asked) && single_writer(source))
}

pub(super) fn access_modes(input: &Input) -> Option<String> {
    let source_modes = input
        .source()?
        .access_modes
        .as_deref()
        .filter(|m| !m.is_empty())?;
    let new: Vec<&str> = input
        .request
        .spec
        .access_modes
        .iter()
        .map(String::as_str)
        .filter(|asked| {
            !source_modes
                .split(',')
                .any(|source| same_mode(asked, source))
        })
        .collect();
    (!new.is_empty()).then(|| {
        format!(
            "this claim asks for {asked} but source claim {name:?} is {source}; block drivers refuse that",
            asked = new.join(", "),
            name = input.source_name(),
            source = source_modes.replace(',', ", "),
        )
    })
}

pub(super) fn source_node(input: &Input) -> Option<String> {
    let volume = input.volume()?;
    // Every term must pin the hostname, and all of them to the same one node.
    let mut nodes = BTreeSet::new();
    for term in volume.node_affinity.iter() {
        nodes.extend(term.get(HOSTNAME_LABEL)?.iter().map(String::as_str));
    }
    let mut nodes = nodes.into_iter();
    let (Some(node), None) = (nodes.next(), nodes.next()) else {
        return None;
    };
    Some(format!(
        "source volume {name:?} is on node {node:?} only; node-local drivers clone only there (the clone's pods too)",
        name = volume.name,
    ))
}
