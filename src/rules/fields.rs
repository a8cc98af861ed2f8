//! Fields of a clone or restore that the provisioner refuses with a data source:
//! `spec.selector`, and a `spec.volumeAttributesClassName` it cannot use.

use super::{AttributesClassFact, FoundClass, Input};

/// "clone claim "data"" or "restore VolumeSnapshot "snap-1"": what the fixed claim does.
fn what_it_does(input: &Input) -> String {
    let request = input.request;
    format!(
        "{} {} {:?}",
        request.noun(),
        request.source_noun(),
        request.source.name
    )
}

pub(super) fn selector(input: &Input) -> Option<String> {
    input.request.spec.selector.as_ref()?;
    Some(format!(
        "this claim has spec.selector, and the CSI provisioner refuses a dynamically provisioned claim with a selector; \
         remove spec.selector to {}",
        what_it_does(input),
    ))
}

pub(super) fn volume_attributes_class(input: &Input) -> Option<String> {
    let name = input
        .request
        .spec
        .volume_attributes_class_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let facts = input.facts?;
    match &facts.attributes_class {
        AttributesClassFact::NotChecked => None,
        AttributesClassFact::Missing => Some(format!(
            "VolumeAttributesClass {name:?} does not exist, and the provisioner would retry for ever while holding the source; \
             create it, or fix spec.volumeAttributesClassName"
        )),
        AttributesClassFact::Found { driver } => {
            let FoundClass {
                name: class,
                provisioner,
                ..
            } = input.class()?;
            (driver != provisioner).then(|| {
                format!(
                    "VolumeAttributesClass {name:?} is for CSI driver {driver} but StorageClass {class:?} is provisioned by \
                     {provisioner}; set spec.volumeAttributesClassName to a class of driver {provisioner}"
                )
            })
        }
    }
}
