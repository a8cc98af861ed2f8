//! The judge: triage, facts and rules for a parsed review, then the outcome: the response,
//! the metrics, the audit annotations and the review's log line.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use kube::core::admission::{AdmissionResponse, Operation};

use super::envelope::{ReviewError, ReviewRequest, allowed_response, deny, parse};
use super::triage::{SkipReason, Triage, triage};
use crate::facts::{FactSource, Freshness, LookupError};
use crate::metrics::Metrics;
use crate::rules::{self, DataSourceRequest, FailureMode, Policy, Verdict};

/// The verdict of one review, for the response, the log line and the metrics.
#[derive(Debug)]
pub struct Outcome {
    pub response: AdmissionResponse,
    pub kind: OutcomeKind,
    pub verdict: Option<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    Skipped(SkipReason),
    Allowed,
    Warned,
    Denied,
    /// The facts could not be gathered; the failure mode decided.
    LookupFailed {
        allowed: bool,
        cause: String,
    },
}

impl OutcomeKind {
    /// The `verdict` label of the review counter.
    pub fn label(&self) -> &'static str {
        match self {
            OutcomeKind::Skipped(_) => "skipped",
            OutcomeKind::Allowed => "allowed",
            OutcomeKind::Warned => "warned",
            OutcomeKind::Denied => "denied",
            OutcomeKind::LookupFailed { allowed: true, .. } => "failed-open",
            OutcomeKind::LookupFailed { allowed: false, .. } => "failed-closed",
        }
    }
}

/// A review that parsed, waiting to be judged.
pub struct ParsedReview {
    request: ReviewRequest,
    started: Instant,
}

/// Judges reviews: the one place where parsing, facts and rules meet.
pub struct Reviewer<F> {
    policy: Policy,
    facts: F,
    metrics: Metrics,
}

impl<F: FactSource> Reviewer<F> {
    pub fn new(policy: Policy, facts: F, metrics: Metrics) -> Self {
        Reviewer {
            policy,
            facts,
            metrics,
        }
    }

    pub fn facts(&self) -> &F {
        &self.facts
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers one review body. `Err` means the body could not be parsed (HTTP 400).
    pub async fn review(&self, body: &[u8]) -> Result<AdmissionResponse, ReviewError> {
        let parsed = self.parse(body)?;
        Ok(self.answer(parsed).await)
    }

    /// The first half of [`Reviewer::review`]: the body is no longer needed afterwards, so
    /// the server can free it (and let another body in) before the facts are gathered.
    pub fn parse(&self, body: &[u8]) -> Result<ParsedReview, ReviewError> {
        let started = Instant::now();
        match parse(body) {
            Ok(request) => Ok(ParsedReview { request, started }),
            Err(error) => {
                self.metrics.record_malformed();
                tracing::warn!(%error, "refused a review that does not parse");
                Err(error)
            }
        }
    }

    /// The second half of [`Reviewer::review`]: judge, record, respond.
    pub async fn answer(&self, parsed: ParsedReview) -> AdmissionResponse {
        let outcome = self.judge(&parsed.request).await;
        self.record(&parsed.request, &outcome, parsed.started.elapsed());
        outcome.response
    }

    /// Decides a parsed review.
    pub async fn judge(&self, request: &ReviewRequest) -> Outcome {
        // The response is made where it is needed, not before the lookups: the future of
        // a review would otherwise carry it (448 bytes) across them.
        let response = || allowed_response(&request.uid);
        // Each claim judged, with the template it comes from (a StatefulSet). A claim is
        // one, and is not put in a list of its own.
        let (claim, templates) = match triage(request) {
            Triage::Skip(reason) => {
                return Outcome {
                    response: response(),
                    kind: OutcomeKind::Skipped(reason),
                    verdict: None,
                };
            }
            Triage::Judge(judged) => (Some((None, judged)), Vec::new()),
            Triage::JudgeTemplates(templates) => (None, templates),
        };
        let claims = claim.into_iter().chain(
            templates
                .into_iter()
                .map(|template| (Some(template.label), template.request)),
        );
        // One deadline for the whole lookup, confirmation and every template included:
        // shorter than the webhook's timeoutSeconds, so the failure mode, not the API
        // server, decides.
        let deadline = tokio::time::Instant::now() + self.policy.lookup_timeout;
        let mut verdict = Verdict::default();
        for (template, judged) in claims {
            let what = judged.noun();
            let found = match self.verdict_for(&judged, deadline).await {
                Ok(found) => found,
                Err(error) => {
                    return match template {
                        None => {
                            self.lookup_failed(response(), what, self.policy.failure_mode, &error)
                        }
                        // Every claim the StatefulSet creates is judged by the claim
                        // webhook with the configured failure mode: refusing the
                        // StatefulSet over a lookup would block it without keeping any
                        // bad clone out.
                        Some(template) => self.lookup_failed(
                            response(),
                            &format!("{what} template {template}"),
                            FailureMode::FailOpen,
                            &error,
                        ),
                    };
                }
            };
            match template {
                None => verdict = found,
                Some(template) => verdict.append(found, &template),
            }
        }
        let mut response = response();
        if !verdict.warnings.is_empty() {
            response.warnings = Some(verdict.warning_lines());
        }
        let kind = if !verdict.allowed() {
            response = deny(response, verdict.denial_message());
            OutcomeKind::Denied
        } else if verdict.warnings.is_empty() {
            OutcomeKind::Allowed
        } else {
            OutcomeKind::Warned
        };
        response.audit_annotations = audit_annotations(&kind, Some(&verdict));
        Outcome {
            response,
            kind,
            verdict: Some(verdict),
        }
    }

    /// The rules' verdict on one claim; a denial read from the caches is confirmed live.
    async fn verdict_for(
        &self,
        judged: &DataSourceRequest,
        deadline: tokio::time::Instant,
    ) -> Result<Verdict, LookupError> {
        if !judged.needs_facts(&self.policy) {
            return Ok(rules::decide(judged, None, &self.policy));
        }
        // The cached facts go out of scope before the confirmation's await, so the future
        // does not hold them and the live ones at once.
        let verdict = {
            let facts = self.gather(judged, Freshness::Cached, deadline).await?;
            rules::decide(judged, Some(&facts), &self.policy)
        };
        if verdict.allowed() {
            return Ok(verdict);
        }
        // A denial is never based on a cache alone: the facts are read again from the API
        // server, and the rules decide on those.
        let live = self.gather(judged, Freshness::Live, deadline).await?;
        let confirmed = rules::decide(judged, Some(&live), &self.policy);
        self.metrics.record_confirmation(if confirmed.allowed() {
            "overturned"
        } else {
            "confirmed"
        });
        Ok(confirmed)
    }

    /// Gathers facts before `deadline`; `Err` is the cause for the failure mode.
    async fn gather(
        &self,
        request: &DataSourceRequest,
        freshness: Freshness,
        deadline: tokio::time::Instant,
    ) -> Result<rules::Facts, LookupError> {
        if freshness == Freshness::Cached
            && let Some(facts) = self.facts.cached(request, &self.policy)
        {
            return Ok(facts);
        }
        // Boxed: a lookup that goes to the API server is a large future (kube's requests),
        // which would otherwise make every review's future that large, plain ones included,
        // and be copied with it (hyper moves each request's future into place).
        let mut gathering = Box::pin(self.facts.gather(request, &self.policy, freshness));
        // Facts read from the caches are there at the first poll: no timer is set for them
        // (setting and clearing one was ~2 % of a cached clone review's CPU).
        if let Some(facts) = futures::FutureExt::now_or_never(gathering.as_mut()) {
            return facts;
        }
        tokio::time::timeout_at(deadline, gathering)
            .await
            .unwrap_or(Err(LookupError::Timeout(self.policy.lookup_timeout)))
    }

    fn lookup_failed(
        &self,
        response: AdmissionResponse,
        what: &str,
        failure_mode: FailureMode,
        error: &LookupError,
    ) -> Outcome {
        self.metrics.record_lookup_error(error.resource());
        let cause = error.to_string();
        let (response, allowed) = match failure_mode {
            FailureMode::FailClosed => (
                deny(
                    response,
                    format!(
                        "pvc-clone-guard could not check this {what}: {cause}; \
                         the webhook fails closed, so retry in a moment or ask an administrator to check pvc-clone-guard"
                    ),
                ),
                false,
            ),
            FailureMode::FailOpen => {
                let mut response = response;
                response.warnings = Some(vec![format!(
                    "pvc-clone-guard could not check this {what} ({cause}); admitted unchecked"
                )]);
                (response, true)
            }
        };
        let kind = OutcomeKind::LookupFailed { allowed, cause };
        let mut response = response;
        response.audit_annotations = audit_annotations(&kind, None);
        Outcome {
            response,
            kind,
            verdict: None,
        }
    }

    fn record(&self, request: &ReviewRequest, outcome: &Outcome, elapsed: Duration) {
        let operation = operation_label(&request.operation);
        self.metrics
            .record_review(operation, outcome.kind.label(), elapsed);
        let rules: Vec<&str> = outcome
            .verdict
            .iter()
            .flat_map(|v| v.denials.iter().chain(&v.warnings))
            .map(|f| f.rule.as_str())
            .collect();
        if let Some(verdict) = &outcome.verdict {
            for finding in &verdict.denials {
                self.metrics.record_violation(finding.rule.as_str(), "deny");
            }
            for finding in &verdict.warnings {
                self.metrics.record_violation(finding.rule.as_str(), "warn");
            }
        }
        let name = request
            .object
            .as_ref()
            .and_then(|o| {
                o.metadata
                    .name
                    .as_deref()
                    .or(o.metadata.generate_name.as_deref())
            })
            .unwrap_or(request.name.as_str());
        let skipped = match &outcome.kind {
            OutcomeKind::Skipped(reason) => reason.as_str(),
            _ => "",
        };
        let cause = match &outcome.kind {
            OutcomeKind::LookupFailed { cause, .. } => cause.as_str(),
            _ => "",
        };
        tracing::info!(
            uid = request.uid.as_str(),
            operation,
            kind = request.kind.kind.as_str(),
            namespace = request.namespace.as_deref().unwrap_or(""),
            name,
            dry_run = request.dry_run,
            verdict = outcome.kind.label(),
            skipped,
            rules = %Joined(&rules),
            cause,
            elapsed_us = elapsed.as_micros() as u64,
            "review"
        );
    }
}

/// What a judged review leaves in the API server's audit log (skipped reviews leave
/// nothing). Keys are plain names: the API server prefixes each with the webhook's name,
/// e.g. `validate.pvc-clone-guard.io/verdict`. Rule lists are present only when non-empty,
/// so an audit query can test for a key's presence.
fn audit_annotations(kind: &OutcomeKind, verdict: Option<&Verdict>) -> HashMap<String, String> {
    let mut annotations = HashMap::from([("verdict".to_owned(), kind.label().to_owned())]);
    if let Some(verdict) = verdict {
        let rule_ids = |findings: &[rules::Finding]| {
            findings
                .iter()
                .map(|f| f.rule.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if !verdict.denials.is_empty() {
            annotations.insert("denied-rules".to_owned(), rule_ids(&verdict.denials));
        }
        if !verdict.warnings.is_empty() {
            annotations.insert("warned-rules".to_owned(), rule_ids(&verdict.warnings));
        }
    }
    if let OutcomeKind::LookupFailed { cause, .. } = kind {
        annotations.insert("cause".to_owned(), cause.clone());
    }
    annotations
}

pub fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

struct Joined<'a>(&'a [&'a str]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, item) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}
