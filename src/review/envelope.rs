//! The envelope: an AdmissionReview body in, the request it carries out (parsed by serde,
//! reading only what triage, the rules and the log line need); an AdmissionResponse with
//! the request's uid echoed back, serialized as the AdmissionReview the API server expects.

use std::fmt;

use kube::core::DynamicObject;
use kube::core::TypeMeta;
use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::statefulset::{self, ClaimTemplate};
use crate::lenient::{d_any, lenient_list, lenient_string};
use crate::rules::ClaimSpec;

pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const PVC_KIND: &str = "PersistentVolumeClaim";

/// Why a body is not a review we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not a valid AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "apiVersion {0:?} is not supported: send admission.k8s.io/v1 (set admissionReviewVersions: [v1])"
    )]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// The object under review, reduced to what the rules read: a claim's spec, or a
/// StatefulSet's claim templates (the name stays: a StatefulSet is reviewed for the claims
/// it stands for).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewedClaim {
    pub(super) metadata: ReviewedMeta,
    pub(super) spec: ClaimSpec,
    /// A StatefulSet's `spec.volumeClaimTemplates`; empty for a claim.
    pub(super) templates: Vec<ClaimTemplate>,
}

/// The object's metadata that the review reads (the name, for the log line; the namespace,
/// when the request has none). k8s-openapi's `ObjectMeta` would be ~20 times the size,
/// moved with the review from the parser to the judge.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReviewedMeta {
    #[serde(default, deserialize_with = "lenient_string")]
    pub(super) name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(super) generate_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(super) namespace: Option<String>,
}

/// The review as sent by the API server, without `#[serde(flatten)]`, read in one pass: its
/// objects `O` are read as they come (see [`AnySpec`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<O> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<WireRequest<O>>,
}

/// The request of a review, reduced to what triage, the log line and the response read.
///
/// STYLE.md asks for kube's `AdmissionRequest` here. Input departs from it for speed: that
/// type builds four `GroupVersionKind`/`GroupVersionResource`s (12 owned strings), the
/// whole `userInfo` (a map of lists) and `options` as a `serde_json::Value` on every review,
/// none of which the webhook reads: about a third of the CPU of parsing a plain review
/// (BENCHMARKS.md). The fields mirror kube's, with the same names, types, defaults and
/// declaration order, so that a review that kube's type refuses is refused here with the
/// same message (a missing `uid`, `resource`, `operation` or `userInfo`, a `kind` that is
/// not a group/version/kind, an unknown operation); the fields not read are checked for
/// their shape and skipped without being built. Responses stay on kube's
/// `AdmissionResponse` (see [`Reviewer::judge`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRequest {
    pub uid: String,
    /// `request.kind`: the group and kind of the object (the version is not read).
    pub kind: ReviewKind,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    /// Boxed, as is the old object: the request is moved from the parser to the judge and
    /// the log line, and ~360 bytes each would be copied with it every time.
    pub object: Option<Box<ReviewedClaim>>,
    /// Read for a StatefulSet UPDATE only (are its templates unchanged?).
    pub old_object: Option<Box<ReviewedClaim>>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReviewKind {
    pub group: String,
    #[serde(rename = "version")]
    _version: WireStr,
    pub kind: String,
}

/// kube's `AdmissionRequest` field by field; `WireStr`, `WireGroupVersionKind`,
/// `WireGroupVersionResource` and `WireObject` check a field's shape without building it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // the fields only checked are never read
struct WireRequest<O> {
    uid: String,
    kind: ReviewKind,
    resource: WireGroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<WireGroupVersionKind>,
    #[serde(default)]
    request_resource: Option<WireGroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<WireStr>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: WireObject,
    object: Option<O>,
    old_object: Option<O>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    options: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct WireGroupVersionKind {
    group: WireStr,
    version: WireStr,
    kind: WireStr,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct WireGroupVersionResource {
    group: WireStr,
    version: WireStr,
    resource: WireStr,
}

/// A JSON string, checked (UTF-8 included) and not kept.
pub(super) type WireStr = Checked<false>;

/// A JSON object (as k8s-openapi's `UserInfo` requires), skipped without being built.
type WireObject = Checked<true>;

/// A JSON value of the required type (an object if `OBJECT`, else a string), checked and
/// not kept: what kube's types require of a field the webhook does not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Checked<const OBJECT: bool>;

impl<'de, const OBJECT: bool> Deserialize<'de> for Checked<OBJECT> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckedVisitor<const OBJECT: bool>;
        impl<'de, const OBJECT: bool> Visitor<'de> for CheckedVisitor<OBJECT> {
            type Value = Checked<OBJECT>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(if OBJECT { "UserInfo" } else { "a string" })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Checked)
            }
        }
        if OBJECT {
            deserializer.deserialize_map(CheckedVisitor)
        } else {
            deserializer.deserialize_str(CheckedVisitor)
        }
    }
}

/// Parses a review body; every failure is a [`ReviewError`], never a panic.
pub fn parse(body: &[u8]) -> Result<ReviewRequest, ReviewError> {
    // UTF-8 checked once for the whole body (one fast scan), not string by string as
    // `from_slice` does; a body that is not UTF-8 is read as before, for the same error.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let envelope: Envelope<Object<AnySpec>> = match parsed {
        Ok(envelope) => envelope,
        // A request of another version may well not parse; saying which version is wanted
        // helps more than naming the first field that did not fit.
        Err(error) => return Err(header_error(body).unwrap_or(ReviewError::Json(error))),
    };
    check_header(&envelope.api_version, &envelope.kind)?;
    let wire = envelope.request.ok_or(ReviewError::NoRequest)?;
    let is_statefulset = statefulset::is_statefulset_kind(&wire.kind);
    let reviewed = |object: Object<AnySpec>| {
        let Object { metadata, spec } = object;
        Box::new(if is_statefulset {
            ReviewedClaim {
                metadata,
                spec: ClaimSpec::default(),
                templates: spec.templates,
            }
        } else {
            ReviewedClaim {
                metadata,
                spec: spec.claim,
                templates: Vec::new(),
            }
        })
    };
    Ok(ReviewRequest {
        uid: wire.uid,
        kind: wire.kind,
        sub_resource: wire.sub_resource,
        name: wire.name,
        namespace: wire.namespace,
        operation: wire.operation,
        object: wire.object.map(reviewed),
        // The old object is kept for a StatefulSet UPDATE only (are its templates unchanged?).
        old_object: wire.old_object.filter(|_| is_statefulset).map(reviewed),
        dry_run: wire.dry_run,
    })
}

fn check_header(api_version: &str, kind: &str) -> Result<(), ReviewError> {
    if api_version != ADMISSION_API_VERSION {
        return Err(ReviewError::Version(api_version.to_owned()));
    }
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_owned()));
    }
    Ok(())
}

/// The header's error, if the body is JSON with a wrong apiVersion or kind.
fn header_error(body: &[u8]) -> Option<ReviewError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Header {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    let header: Header = serde_json::from_slice(body).ok()?;
    check_header(&header.api_version, &header.kind).err()
}

/// The response to a review, allowed until the rules say otherwise, with the request's uid
/// echoed. kube's `AdmissionResponse` is `#[non_exhaustive]` and made from an
/// `AdmissionRequest`, which the slim [`ReviewRequest`] is not: it is made from kube's own
/// constructor once, set to what `AdmissionResponse::from(&request)` gives for a v1 review
/// (allowed, default status), and cloned with the uid of each review.
pub(super) fn allowed_response(uid: &str) -> AdmissionResponse {
    static TEMPLATE: std::sync::LazyLock<AdmissionResponse> = std::sync::LazyLock::new(|| {
        let mut response = AdmissionResponse::invalid("");
        response.types = TypeMeta {
            api_version: ADMISSION_API_VERSION.to_owned(),
            kind: "AdmissionReview".to_owned(),
        };
        response.allowed = true;
        response.result = Default::default();
        response
    });
    let mut response = TEMPLATE.clone();
    uid.clone_into(&mut response.uid);
    response
}

/// Refuses with 403 Forbidden, as SPEC §4 asks.
pub(super) fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    response
}

/// Serializes a response as the AdmissionReview the API server expects.
pub fn to_body(mut response: AdmissionResponse) -> Vec<u8> {
    thread_local! {
        /// Where answers are written, kept from review to review (shrunk past 64 KiB).
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // What `into_review` makes, with the response's type fields moved, not cloned.
    let review = AdmissionReview::<DynamicObject> {
        types: std::mem::take(&mut response.types),
        request: None,
        response: Some(response),
    };
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        // Serializing plain strings, maps and numbers cannot fail; fall back to a valid
        // (if uid-less) refusal rather than panicking should it ever do so.
        let body = match serde_json::to_writer(&mut *buffer, &review) {
            // One allocation of the exact size: hyper sends it without another (a `Vec`
            // with room to spare costs `Bytes` a second allocation).
            Ok(()) => buffer.to_vec(),
            Err(_) => br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false}}"#
                .to_vec(),
        };
        if buffer.capacity() > 64 * 1024 {
            buffer.shrink_to(64 * 1024);
        }
        body
    })
}

// ---- Tolerant deserialization of the reviewed object -------------------------------------
//
// The webhook is registered for claims, but anything may be posted to it. A field of an
// unexpected type is treated as absent instead of failing the whole review, so that a
// non-claim object is allowed (SPEC §2) rather than refused as malformed.

/// A claim or a StatefulSet: its metadata and its spec `S`.
#[derive(Default)]
struct Object<S> {
    metadata: ReviewedMeta,
    spec: S,
}

impl<'de, S: Deserialize<'de> + Default> Deserialize<'de> for Object<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(bound = "S: Deserialize<'de> + Default")]
        struct Wire<S> {
            #[serde(default, deserialize_with = "d_any")]
            metadata: ReviewedMeta,
            #[serde(default, deserialize_with = "d_any")]
            spec: S,
        }
        let Wire { metadata, spec } = d_any(deserializer)?;
        Ok(Object { metadata, spec })
    }
}

/// The spec of the object under review, read in the same pass as the rest of the review:
/// as a claim's spec, and for a StatefulSet's `volumeClaimTemplates`. The request's kind
/// decides which of the two is kept, and it may come after the object (the API server sends
/// it before, but nothing requires it), so both are read: the keys of the two kinds' specs
/// that are read barely overlap (`selector`), and whatever neither reads (a StatefulSet's
/// pod template, managedFields) is skipped without being built.
///
/// Hand-written (a map adapter over serde's derive of [`ClaimSpec`], not a second list of
/// the claim's fields) because the envelope used to keep the object as a borrowed
/// `RawValue` and read it again once the kind was known: the 3 KB object was scanned twice,
/// ~31k of the 80k instructions of a plain review's parse (BENCHMARKS.md, "Issue 18").
#[derive(Default)]
struct AnySpec {
    claim: ClaimSpec,
    /// `spec.volumeClaimTemplates`: a list of templates; any other value is no templates,
    /// and an entry that is not an object is a template without a data source.
    templates: Vec<ClaimTemplate>,
}

const TEMPLATES_KEY: &str = "volumeClaimTemplates";

impl<'de> Deserialize<'de> for AnySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = AnySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnySpec, A::Error> {
                let mut templates = None;
                let claim = ClaimSpec::deserialize(de::value::MapAccessDeserializer::new(
                    TemplatesApart {
                        map,
                        templates: &mut templates,
                    },
                ))?;
                Ok(AnySpec {
                    claim,
                    templates: templates.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_map(SpecVisitor)
    }
}

/// A spec's entries with `volumeClaimTemplates` taken out (into `templates`), the others
/// handed on to the claim spec's deserializer.
struct TemplatesApart<'t, A> {
    map: A,
    templates: &'t mut Option<Vec<ClaimTemplate>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TemplatesApart<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            let key = match key {
                Key::Borrowed(key) => key,
                // A key with escapes: never one the claim spec reads.
                Key::Owned(key) if key == TEMPLATES_KEY => TEMPLATES_KEY,
                Key::Owned(key) => {
                    return seed
                        .deserialize(de::value::StringDeserializer::new(key))
                        .map(Some);
                }
            };
            if key != TEMPLATES_KEY {
                return seed
                    .deserialize(de::value::BorrowedStrDeserializer::new(key))
                    .map(Some);
            }
            if self.templates.is_some() {
                return Err(de::Error::duplicate_field(TEMPLATES_KEY));
            }
            let Templates(templates) = self.map.next_value()?;
            *self.templates = Some(templates);
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A map key, borrowed from the body unless it has escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct Templates(Vec<ClaimTemplate>);

impl<'de> Deserialize<'de> for Templates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        lenient_list(deserializer).map(Templates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A review whose object comes before its kind (the API server sends the kind first;
    /// nothing requires it), with `spec` as given.
    fn object_first(kind: &str, spec: &str) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{
              "uid":"u1","object":{{"metadata":{{"name":"x"}},"spec":{spec}}},
              "kind":{kind},"resource":{{"group":"","version":"v1","resource":"r"}},
              "operation":"CREATE","userInfo":{{}}}}}}"#
        )
        .into_bytes()
    }

    const CLAIM: &str = r#"{"group":"","version":"v1","kind":"PersistentVolumeClaim"}"#;
    const STATEFULSET: &str = r#"{"group":"apps","version":"v1","kind":"StatefulSet"}"#;

    #[test]
    fn the_object_is_read_for_its_kind_wherever_the_kind_comes() {
        let spec = r#"{"storageClassName":"gp3","selector":{"matchLabels":{"a":"b"}},
            "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"volumeMode":"Block"}}]}"#;
        let claim = parse(&object_first(CLAIM, spec)).expect("a claim parses");
        let claim = claim.object.expect("object");
        assert_eq!(claim.spec.storage_class.as_deref(), Some("gp3"));
        assert!(claim.spec.selector.is_some());
        assert!(claim.templates.is_empty(), "a claim has no templates");

        let set = parse(&object_first(STATEFULSET, spec)).expect("a StatefulSet parses");
        let set = set.object.expect("object");
        assert_eq!(
            set.spec,
            ClaimSpec::default(),
            "a StatefulSet has no claim spec"
        );
        assert_eq!(set.templates.len(), 1);
        assert_eq!(set.metadata.name.as_deref(), Some("x"));
    }

    #[test]
    fn spec_keys_with_escapes_read_as_written() {
        let spec = r#"{"storage\u0043lassName":"gp3","volumeClaim\u0054emplates":[{}]}"#;
        let claim = parse(&object_first(CLAIM, spec)).expect("parses");
        assert_eq!(
            claim.object.expect("object").spec.storage_class.as_deref(),
            Some("gp3")
        );
        let set = parse(&object_first(STATEFULSET, spec)).expect("parses");
        assert_eq!(set.object.expect("object").templates.len(), 1);
    }

    #[test]
    fn templates_given_twice_are_refused_as_serde_refuses_any_field_given_twice() {
        let spec = r#"{"volumeClaimTemplates":[],"volumeClaimTemplates":[]}"#;
        let error = parse(&object_first(STATEFULSET, spec)).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("duplicate field `volumeClaimTemplates`"),
            "{error}"
        );
    }
}
