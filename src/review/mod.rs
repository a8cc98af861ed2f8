//! AdmissionReview in, AdmissionResponse out: parse the review, decide whether the rules
//! apply, gather facts, run the rules, and build the response with the request's uid.
//!
//! Two kinds are judged: a claim, and a StatefulSet, whose `volumeClaimTemplates` are the
//! claims it will create (see [`statefulset`]). Both arrive on the same path; `triage`
//! tells them apart by `request.kind`.
//!
//! kube's `AdmissionReview<T>` flattens its type fields, which makes serde buffer the
//! whole body (managedFields included) before parsing it. The envelope here is a plain
//! struct around a slim [`ReviewRequest`] (see there why not kube's `AdmissionRequest`),
//! whose object is a [`ReviewedClaim`], which keeps only what the rules read and skips
//! everything else without building it. serde reads every body.

mod envelope;
mod judge;
mod statefulset;
mod triage;

pub use envelope::{
    ADMISSION_API_VERSION, ReviewError, ReviewKind, ReviewRequest, ReviewedClaim, parse, to_body,
};
pub use judge::{Outcome, OutcomeKind, ParsedReview, Reviewer, operation_label};
pub use statefulset::TemplateRequest;
pub use triage::{SkipReason, Triage, triage};
