//! Placement warnings for clones: what the provisioner does not check, but makes a clone
//! provision in the wrong place or fail to mount.

use std::collections::BTreeSet;

use super::{ClassFact, Input, TopologyTerm};

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
    let ClassFact::Found {
        name,
        allowed_topologies,
        ..
    } = &input.facts?.class
    else {
        return None;
    };
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
    let facts = input.facts?;
    let ClassFact::Found {
        name, parameters, ..
    } = &facts.class
    else {
        return None;
    };
    let source_class = input
        .volume()?
        .storage_class
        .as_deref()
        .filter(|c| !c.is_empty())?;
    if source_class == name {
        return None;
    }
    let source_parameters = facts.source_class_parameters.as_ref()?;
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
