//! What the limit server reads of a review, `request.uid` (borrowed where it can be;
//! serde skips every other field without building it). Shared with `benches/review.rs`,
//! whose `baseline/uid-only` prices the same parse.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct UidOnly<'a> {
    #[serde(borrow)]
    pub request: UidRequest<'a>,
}

#[derive(Deserialize)]
pub struct UidRequest<'a> {
    #[serde(borrow)]
    pub uid: std::borrow::Cow<'a, str>,
}
