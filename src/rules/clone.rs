//! The rules of a clone: the source claim, its volume, the class of the clone.

use super::{
    ClassFact, CrossNamespaceMode, FoundClass, GrantFact, Input, NO_PROVISIONER, PodsFact,
};
use crate::quantity::{self, Quantity};

pub(super) fn same_namespace(input: &Input) -> Option<String> {
    let request = input.request;
    let other = request.other_namespace()?;
    let source = &request.source;
    let (field, name, own) = (source.field, &source.name, &request.namespace);
    match request.cross_namespace_mode(input.policy) {
        CrossNamespaceMode::Open => None,
        CrossNamespaceMode::Grant => match input.facts.map(|f| &f.grant) {
            Some(GrantFact::Allowed { .. }) => None,
            _ => Some(format!(
                "{field} names {kind} {name:?} in namespace {other:?}, but no ReferenceGrant in namespace {other:?} \
                 allows PersistentVolumeClaims in namespace {own:?} to use {kind} {name:?}; create one: \
                 ReferenceGrant in {other:?} with from {{group: \"\", kind: PersistentVolumeClaim, namespace: {own}}} \
                 and to {{group: {group:?}, kind: {kind}, name: {name}}}",
                kind = request.source_kind(),
                group = request.source_group(),
            )),
        },
        CrossNamespaceMode::Closed => Some(format!(
            "{field} names {noun} {name:?} in namespace {other:?}, but this claim is in namespace {own:?}; \
             a {what} must be created in its source's namespace: create this claim in namespace {other:?}",
            noun = request.source_noun(),
            what = request.noun(),
        )),
    }
}

pub(super) fn source_exists(input: &Input) -> Option<String> {
    let facts = input.facts?;
    let namespace = input.request.source_namespace(input.policy)?;
    facts.source.is_none().then(|| {
        format!(
            "source claim {name:?} does not exist in namespace {namespace:?}; \
             create it first, or fix spec.{field}.name",
            name = input.source_name(),
            field = input.request.source.field,
        )
    })
}

pub(super) fn source_bound(input: &Input) -> Option<String> {
    let source = input.source()?;
    let state = match source.phase.as_deref() {
        Some("Bound") => return None,
        Some(phase) if !phase.is_empty() => format!("is {phase}"),
        _ => "has no phase".to_owned(),
    };
    Some(format!(
        "source claim {name:?} {state}, not Bound; wait until it is Bound, then create the clone",
        name = input.source_name(),
    ))
}

pub(super) fn source_deleting(input: &Input) -> Option<String> {
    let since = input.source()?.deletion_timestamp.as_deref()?;
    Some(format!(
        "source claim {name:?} is being deleted (since {since}); clone a claim that is not being deleted",
        name = input.source_name(),
    ))
}

pub(super) fn source_volume(input: &Input) -> Option<String> {
    let source = input.source()?;
    let name = input.source_name();
    let Some(volume_name) = source.volume_name.as_deref().filter(|v| !v.is_empty()) else {
        // A claim that is not Bound has no volume yet: `source-bound` already says so.
        return (source.phase.as_deref() == Some("Bound")).then(|| {
            format!(
                "source claim {name:?} is Bound but names no PersistentVolume (spec.volumeName is empty); \
                 repair or recreate the source claim"
            )
        });
    };
    let Some(volume) = input.volume() else {
        return Some(format!(
            "PersistentVolume {volume_name:?} of source claim {name:?} does not exist; \
             restore the volume or clone another claim"
        ));
    };
    let namespace = input.request.source_namespace(input.policy)?;
    // Formatted only for a message: this rule runs on every clone review.
    let expected = || format!("{namespace}/{name}");
    let Some(claim_ref) = volume.claim_ref.as_ref() else {
        return Some(format!(
            "PersistentVolume {volume_name:?} has no claimRef, so it does not belong to source claim {expected:?}; \
             repair the volume's binding or clone another claim",
            expected = expected(),
        ));
    };
    let (ref_namespace, ref_name) = (
        claim_ref.namespace.as_deref().unwrap_or(""),
        claim_ref.name.as_deref().unwrap_or(""),
    );
    if ref_namespace != namespace || ref_name != name {
        return Some(format!(
            "PersistentVolume {volume_name:?} is bound to claim {bound_to:?}, not to source claim {expected:?}; \
             repair the volume's binding or clone another claim",
            bound_to = format!("{ref_namespace}/{ref_name}"),
            expected = expected(),
        ));
    }
    // The provisioner requires the claimRef's uid to be the source's: a claimRef without a
    // uid does not point back (it is a reservation, not a binding).
    let uid = source.uid.as_deref().unwrap_or("none");
    match claim_ref.uid.as_deref().filter(|u| !u.is_empty()) {
        None => {
            return Some(format!(
                "PersistentVolume {volume_name:?} has a claimRef to {expected:?} without a uid, so it is not bound back \
                 to source claim {expected:?} (uid {uid}); repair the volume's binding or clone another claim",
                expected = expected(),
            ));
        }
        Some(ref_uid) if Some(ref_uid) != source.uid.as_deref() => {
            return Some(format!(
                "PersistentVolume {volume_name:?} belongs to an earlier claim {expected:?} (uid {ref_uid}), \
                 not to the current one (uid {uid}); repair the volume's binding or clone another claim",
                expected = expected(),
            ));
        }
        Some(_) => {}
    }
    let phase = volume.phase.as_deref().unwrap_or("");
    (phase != "Bound").then(|| {
        let state = if phase.is_empty() {
            "without a phase"
        } else {
            phase
        };
        format!(
            "PersistentVolume {volume_name:?} of source claim {name:?} is {state}, not Bound; \
             repair the volume or clone another claim"
        )
    })
}

pub(super) fn source_class(input: &Input) -> Option<String> {
    let source = input.source()?;
    source.storage_class.is_none().then(|| {
        format!(
            "source claim {name:?} has no storageClassName, and the CSI provisioner refuses to clone such a claim; \
             clone a claim that has a StorageClass",
            name = input.source_name(),
        )
    })
}

pub(super) fn csi_source(input: &Input) -> Option<String> {
    let volume = input.volume()?;
    if volume.csi_driver.is_some() {
        return None;
    }
    let uses = match &*volume.plugin {
        "" => String::new(),
        plugin => format!(" (it uses {plugin})"),
    };
    Some(format!(
        "source volume {name:?} is not a CSI volume{uses}, and only CSI volumes can be cloned; \
         copy the data into a claim of a CSI StorageClass instead",
        name = volume.name,
    ))
}

pub(super) fn dynamic_provisioning(input: &Input) -> Option<String> {
    input.source_exists()?;
    let what = input.request.noun();
    let problem = match &input.facts?.class {
        ClassFact::Found(class) if class.provisioner != NO_PROVISIONER => return None,
        ClassFact::Found(FoundClass { name, .. }) => format!(
            "StorageClass {name:?} has provisioner {NO_PROVISIONER}, which cannot provision a {what}"
        ),
        ClassFact::Missing(name) => format!("StorageClass {name:?} does not exist"),
        ClassFact::NoDefault => {
            "this claim names no StorageClass and the cluster has no default StorageClass"
                .to_owned()
        }
        ClassFact::Disabled => {
            format!(
                "storageClassName is \"\", which turns off dynamic provisioning, and a {what} must be provisioned"
            )
        }
    };
    Some(format!("{problem}; {hint}", hint = input.class_hint()))
}

pub(super) fn same_driver(input: &Input) -> Option<String> {
    input.source()?;
    let FoundClass {
        name,
        provisioner,
        is_default,
        ..
    } = input.class()?;
    let driver = input.source_driver()?;
    if provisioner == driver || provisioner == NO_PROVISIONER {
        return None;
    }
    let which = if *is_default {
        "the default StorageClass"
    } else {
        "StorageClass"
    };
    Some(format!(
        "{which} {name:?} is provisioned by {provisioner} but source volume {volume:?} belongs to CSI driver {driver}; \
         {hint}",
        volume = input.volume().map(|v| &*v.name).unwrap_or_default(),
        hint = input.class_hint(),
    ))
}

pub(super) fn volume_mode(input: &Input) -> Option<String> {
    let source = input.source()?;
    let source_mode = input
        .volume()
        .and_then(|v| v.volume_mode.as_deref())
        .or(source.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let clone_mode = input
        .request
        .spec
        .volume_mode
        .as_deref()
        .unwrap_or("Filesystem");
    (source_mode != clone_mode).then(|| {
        format!(
            "source claim {name:?} is {source_mode} but this claim asks for {clone_mode}; \
             set spec.volumeMode: {source_mode}",
            name = input.source_name(),
        )
    })
}

/// A size as the provisioner compares it: `Quantity.Value()`, whole bytes rounded up.
fn bytes(text: &str) -> Result<i128, quantity::QuantityError> {
    quantity::parse(text).map(Quantity::whole_units)
}

/// The source's request in bytes; `Err` carries the message when it cannot be compared.
fn source_request<'a>(input: &Input<'a>) -> Option<Result<(i128, &'a str), String>> {
    let text = input.source()?.requested_storage.as_deref()?;
    Some(bytes(text).map(|b| (b, text)).map_err(|e| {
        format!(
            "source claim {:?} requests {text:?}, which is not a valid quantity ({e})",
            input.source_name()
        )
    }))
}

pub(super) fn size(input: &Input) -> Option<String> {
    let (source_size, source_text) = match source_request(input)? {
        Ok(parsed) => parsed,
        Err(message) => {
            return Some(format!(
                "{message}; the size of the clone cannot be checked"
            ));
        }
    };
    let name = input.source_name();
    let fix = format_args!("request at least {source_text}");
    let Some(text) = input.request.spec.requested_storage.as_deref() else {
        return Some(format!(
            "this claim requests no storage (spec.resources.requests.storage) but source claim {name:?} \
             requests {source_text}; {fix}"
        ));
    };
    match bytes(text) {
        Err(e) => Some(format!(
            "this claim requests {text:?}, which is not a valid quantity ({e}); {fix}"
        )),
        Ok(requested) if requested < source_size => Some(format!(
            "this claim requests {text} but source claim {name:?} requests {source_text}; {fix}"
        )),
        Ok(_) => None,
    }
}

pub(super) fn size_capacity(input: &Input) -> Option<String> {
    let (source_size, source_text) = source_request(input)?.ok()?;
    let capacity_text = input.source()?.capacity.as_deref()?;
    let capacity = bytes(capacity_text).ok()?;
    let requested = bytes(input.request.spec.requested_storage.as_deref()?).ok()?;
    (requested >= source_size && requested < capacity).then(|| {
        format!(
            "source claim {name:?} holds {capacity_text} (its request: {source_text}); \
             some drivers refuse a smaller clone: request {capacity_text}",
            name = input.source_name(),
        )
    })
}

pub(super) fn source_in_use(input: &Input) -> Option<String> {
    input.source()?;
    let name = input.source_name();
    let pods = match &input.facts?.pods {
        PodsFact::Known(pods) => pods,
        PodsFact::Unknown(cause) => {
            return Some(format!(
                "source claim {name:?} could not be checked for pods that mount it ({cause}); \
                 if one does, the clone is only crash-consistent"
            ));
        }
    };
    let first = pods.first()?;
    let more = match pods.len() {
        1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    Some(format!(
        "source claim {name:?} is mounted by pod {first:?}{more}; the clone is only crash-consistent"
    ))
}

pub(super) fn clone_capable_driver(input: &Input) -> Option<String> {
    input.source()?;
    let driver = input
        .source_driver()
        .or(input.class().map(|class| class.provisioner.as_str()))?;
    let allowed = &input.policy.clone_capable_drivers;
    (!allowed.iter().any(|d| d == driver)).then(|| {
        format!(
            "CSI driver {driver} is not in the configured list of clone-capable drivers ({list}); \
             clone a volume of one of those drivers, or ask an administrator to add {driver} to the list",
            list = allowed.join(", "),
        )
    })
}
