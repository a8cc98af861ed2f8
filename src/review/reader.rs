//! The review as the API server sends it, read by hand in one pass (issue 12).
//!
//! serde_json, through the visitors of `review.rs`, spent about 1.2 µs more on a claim's
//! review than on skipping the same body whole: every key of the request, the object's
//! metadata and spec and the checked group/version/kinds is parsed into a string,
//! UTF-8-checked on its own and matched through serde's field visitors (BENCHMARKS.md). This
//! reader checks the body's UTF-8 once, compares keys as they lie in the body, and skips
//! what it does not read with the same SWAR scan serde_json uses.
//!
//! It is a fast path, not a second parser to trust. It answers only for a body in the
//! usual shape and returns `None` for anything else, after which [`super::parse`] reads the
//! body with serde, which decides and words every error:
//! - an escaped key or kept string, a field of a type other than the one expected (or null
//!   where serde reads null as absent), a duplicate field;
//! - a non-null `oldObject`, a StatefulSet's `volumeClaimTemplates`;
//! - nesting deeper than [`MAX_DEPTH`], invalid UTF-8 anywhere, and any syntax error.
//!
//! For every body it accepts, its result is the one serde gives: `reader/tests.rs` holds it
//! to that on the benchmark's bodies, on usual variations of them, on bodies it must leave
//! to serde, and on mutated and edited ones (proptest). Nothing here panics or allocates
//! beyond the strings kept.

use kube::core::admission::Operation;

use super::{
    ADMISSION_API_VERSION, ClaimSpec, ReviewKind, ReviewRequest, ReviewedClaim, ReviewedMeta,
    TypedReference, WireStr,
};

/// Deeper nesting is left to serde (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// The review in `body`, if it is in the usual shape; `None` means "let serde decide".
pub(super) fn read(body: &[u8]) -> Option<ReviewRequest> {
    // Checked once for the whole body, so that no string needs a check of its own: every
    // string serde would check is valid, and slices between ASCII quotes are too.
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = Reader { text, at: 0 };
    let request = reader.review()?;
    reader.skip_whitespace();
    (reader.at == body.len()).then_some(request)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

/// Records a field's value; a second one (serde: "duplicate field") is `None`.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.skip_whitespace();
        let rest = self.bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// An object: `field` is called with each key (`None` for a key with an escape, which
    /// only serde can compare), positioned at the value, which it must read or skip.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, Option<&'a str>) -> Option<()>,
    ) -> Option<()> {
        self.items(depth, b'{', b'}', |reader| {
            let (key, escaped) = reader.string()?;
            reader.expect(b':')?;
            field(reader, (!escaped).then_some(key))
        })
    }

    /// The items of an object or an array, from `open` to `close`, each read by `item`.
    fn items(
        &mut self,
        depth: usize,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object, or null (`None`); anything else is left to serde.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.peek()? {
            b'n' => self.literal("null").map(|()| None),
            b'{' => read(self).map(Some),
            _ => None,
        }
    }

    /// A string's content between the quotes, and whether it holds an escape; checked as
    /// serde_json checks a string it skips (no control character, escapes well formed).
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += special_byte(self.bytes().get(self.at..)?)?;
            match self.bytes()[self.at] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return None, // a control character
            }
        }
        let content = self.text.get(start..self.at)?;
        self.at += 1;
        Some((content, escaped))
    }

    /// Past one escape sequence, from its backslash.
    fn escape(&mut self) -> Option<()> {
        match self.bytes().get(self.at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
            b'u' => {
                let hex = self.bytes().get(self.at + 2..self.at + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                self.at += 6;
            }
            _ => return None,
        }
        Some(())
    }

    /// A string without escapes (the values kept are names, which have none).
    fn plain(&mut self) -> Option<&'a str> {
        match self.string()? {
            (text, false) => Some(text),
            (_, true) => None,
        }
    }

    fn owned(&mut self) -> Option<String> {
        self.plain().map(str::to_owned)
    }

    /// A string, or null (`None`): an `Option<String>`, and what `lenient_string` reads
    /// (which would also read other types as absent: those are left to serde).
    fn optional(&mut self) -> Option<Option<String>> {
        match self.peek()? {
            b'n' => self.literal("null").map(|()| None),
            _ => self.owned().map(Some),
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| true),
            b'f' => self.literal("false").map(|()| false),
            _ => None,
        }
    }

    /// Past any JSON value, checked as serde_json checks a value it ignores.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth, |reader, _| reader.skip(depth + 1)),
            b'[' => self.items(depth, b'[', b']', |reader| reader.skip(depth + 1)),
            b'"' => self.string().map(drop),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, JSON's number.
    fn number(&mut self) -> Option<()> {
        if self.bytes().get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes().get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.bytes().get(self.at) == Some(&b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes().get(self.at) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    // ---- The review's own shape: the mirror of the serde types in review.rs ----------

    /// `Envelope`.
    fn review(&mut self) -> Option<ReviewRequest> {
        let (mut api_version, mut kind, mut request) = (None, None, None);
        self.object(0, |reader, key| match key? {
            "apiVersion" => set(&mut api_version, reader.plain()?),
            "kind" => set(&mut kind, reader.plain()?),
            "request" => set(&mut request, reader.request()?),
            _ => reader.skip(1),
        })?;
        (api_version? == ADMISSION_API_VERSION && kind? == "AdmissionReview").then_some(())?;
        request
    }

    /// `WireRequest`, at depth 1.
    fn request(&mut self) -> Option<ReviewRequest> {
        const DEPTH: usize = 1;
        let mut uid = None;
        let mut kind = None;
        let mut resource = None;
        let mut sub_resource = None;
        let mut request_kind = None;
        let mut request_resource = None;
        let mut request_sub_resource = None;
        let mut name = None;
        let mut namespace = None;
        let mut operation = None;
        let mut user_info = None;
        let mut object = None;
        let mut old_object = None;
        let mut dry_run = None;
        let mut options = None;
        self.object(DEPTH, |reader, key| match key? {
            "uid" => set(&mut uid, reader.owned()?),
            "kind" => {
                let [group, version, kind_name] =
                    reader.strings(DEPTH + 1, ["group", "version", "kind"])?;
                version?;
                let value = ReviewKind {
                    group: group?.to_owned(),
                    _version: WireStr,
                    kind: kind_name?.to_owned(),
                };
                set(&mut kind, value)
            }
            "resource" => set(&mut resource, reader.group_version(DEPTH + 1, "resource")?),
            "subResource" => set(&mut sub_resource, reader.optional()?),
            "requestKind" => {
                let checked = reader.nullable(|r| r.group_version(DEPTH + 1, "kind"))?;
                set(&mut request_kind, checked)
            }
            "requestResource" => {
                let checked = reader.nullable(|r| r.group_version(DEPTH + 1, "resource"))?;
                set(&mut request_resource, checked)
            }
            "requestSubResource" => set(&mut request_sub_resource, reader.optional()?),
            "name" => set(&mut name, reader.owned()?),
            "namespace" => set(&mut namespace, reader.optional()?),
            "operation" => set(&mut operation, operation_named(reader.plain()?)?),
            "userInfo" => {
                // An object, as k8s-openapi's `UserInfo`, skipped. serde parses its keys
                // (an escaped one, e.g. a lone surrogate, can fail): those are left to it.
                reader.object(DEPTH + 1, |reader, key| {
                    key?;
                    reader.skip(DEPTH + 2)
                })?;
                set(&mut user_info, ())
            }
            "object" => {
                let claim = reader.nullable(|r| r.claim(DEPTH + 1))?;
                set(&mut object, claim.map(Box::new))
            }
            // Read for a StatefulSet UPDATE only: a non-null one is left to serde.
            "oldObject" => set(&mut old_object, reader.literal("null")?),
            "dryRun" => set(&mut dry_run, reader.boolean()?),
            "options" => set(&mut options, reader.skip(DEPTH + 1)?),
            _ => reader.skip(DEPTH + 1),
        })?;
        // Required by kube's `AdmissionRequest`, as by `WireRequest`.
        resource?;
        user_info?;
        Some(ReviewRequest {
            uid: uid?,
            kind: kind?,
            sub_resource: sub_resource.flatten(),
            name: name.unwrap_or_default(),
            namespace: namespace.flatten(),
            operation: operation?,
            object: object.flatten(),
            old_object: None,
            dry_run: dry_run.unwrap_or(false),
        })
    }

    /// An object whose fields `names` are each read by `read` (every one optional); other
    /// fields are skipped.
    fn fields<T, const N: usize>(
        &mut self,
        depth: usize,
        names: [&str; N],
        read: impl Fn(&mut Self) -> Option<T>,
    ) -> Option<[Option<T>; N]> {
        let mut values = [(); N].map(|()| None);
        self.object(depth, |reader, key| {
            let key = key?;
            match names.iter().position(|name| *name == key) {
                Some(index) => set(&mut values[index], read(reader)?),
                None => reader.skip(depth + 1),
            }
        })?;
        Some(values)
    }

    /// An object whose fields `names` are strings, kept unescaped.
    fn strings<const N: usize>(
        &mut self,
        depth: usize,
        names: [&str; N],
    ) -> Option<[Option<&'a str>; N]> {
        self.fields(depth, names, Self::plain)
    }

    /// An object whose fields `names` are each a string or null (what `lenient_string` reads
    /// as a string or as absent).
    fn optional_strings<const N: usize>(
        &mut self,
        depth: usize,
        names: [&str; N],
    ) -> Option<[Option<String>; N]> {
        self.fields(depth, names, Self::optional)
            .map(|values| values.map(Option::flatten))
    }

    /// A `GroupVersionKind` or `GroupVersionResource` (`last` is "kind" or "resource"):
    /// checked, not kept.
    fn group_version(&mut self, depth: usize, last: &str) -> Option<()> {
        let [group, version, last] = self.strings(depth, ["group", "version", last])?;
        group.and(version).and(last).map(drop)
    }

    /// `ReviewedClaim`: its metadata and spec (null reads as absent).
    fn claim(&mut self, depth: usize) -> Option<ReviewedClaim> {
        let (mut metadata, mut spec) = (None, None);
        self.object(depth, |reader, key| match key? {
            "metadata" => set(&mut metadata, reader.nullable(|r| r.meta(depth + 1))?),
            "spec" => set(&mut spec, reader.nullable(|r| r.claim_spec(depth + 1))?),
            _ => reader.skip(depth + 1),
        })?;
        Some(ReviewedClaim {
            metadata: metadata.flatten().unwrap_or_default(),
            spec: spec.flatten().unwrap_or_default(),
            templates: Vec::new(),
        })
    }

    /// `ReviewedMeta`.
    fn meta(&mut self, depth: usize) -> Option<ReviewedMeta> {
        let [name, generate_name, namespace] =
            self.optional_strings(depth, ["name", "generateName", "namespace"])?;
        Some(ReviewedMeta {
            name,
            generate_name,
            namespace,
        })
    }

    /// `ObjectSpec` of a claim: templates are a StatefulSet's, left to serde.
    fn claim_spec(&mut self, depth: usize) -> Option<ClaimSpec> {
        let mut data_source = None;
        let mut data_source_ref = None;
        let mut volume_mode = None;
        let mut storage_class_name = None;
        let mut resources = None;
        self.object(depth, |reader, key| match key? {
            "dataSource" => {
                let reference = reader.nullable(|r| r.reference(depth + 1))?;
                set(&mut data_source, reference)
            }
            "dataSourceRef" => {
                let reference = reader.nullable(|r| r.reference(depth + 1))?;
                set(&mut data_source_ref, reference)
            }
            "volumeMode" => set(&mut volume_mode, reader.optional()?),
            "storageClassName" => set(&mut storage_class_name, reader.optional()?),
            "resources" => {
                let storage = reader.nullable(|r| r.requested_storage(depth + 1))?;
                set(&mut resources, storage.flatten())
            }
            "volumeClaimTemplates" => None,
            _ => reader.skip(depth + 1),
        })?;
        Some(ClaimSpec {
            data_source: data_source.flatten(),
            data_source_ref: data_source_ref.flatten(),
            volume_mode: volume_mode.flatten(),
            storage_class_name: storage_class_name.flatten(),
            requested_storage: resources.flatten(),
        })
    }

    /// `resources.requests.storage`.
    fn requested_storage(&mut self, depth: usize) -> Option<Option<String>> {
        let mut requests = None;
        self.object(depth, |reader, key| match key? {
            "requests" => {
                let storage = reader.nullable(|r| r.optional_strings(depth + 1, ["storage"]))?;
                set(&mut requests, storage.and_then(|[storage]| storage))
            }
            _ => reader.skip(depth + 1),
        })?;
        Some(requests.flatten())
    }

    /// `TypedReference`.
    fn reference(&mut self, depth: usize) -> Option<TypedReference> {
        let [api_group, kind, name, namespace] =
            self.optional_strings(depth, ["apiGroup", "kind", "name", "namespace"])?;
        Some(TypedReference {
            api_group,
            kind,
            name,
            namespace,
        })
    }
}

fn operation_named(name: &str) -> Option<Operation> {
    Some(match name {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        "CONNECT" => Operation::Connect,
        _ => return None,
    })
}

/// The index of the first quote, backslash or control character in `bytes`, eight bytes at a
/// time (the same scan serde_json makes of a string).
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(eight) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(eight);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set here if the byte is zero (or below 0x20, for `word`);
        // exact for the first such byte, which is the one wanted.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .map(|index| at + index)
}

#[cfg(test)]
mod tests;
