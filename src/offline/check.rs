//! `check -f PATH|-`: the webhook's verdict on every claim and StatefulSet template with a
//! data source in a set of manifests, before they reach a cluster (a CI job, a GitOps pull
//! request).
//!
//! One line per refusal and per warning, naming the file and line, the object and the
//! webhook's `[rule]` message; `-o json` gives the same as one JSON document for CI
//! annotations. Exit 0: nothing refused (warnings allowed); 1: something refused; 2: it
//! could not check (unreadable input, no cluster, a lookup that failed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::manifests::{self, Document};
use super::{create_review, judged_claims};
use crate::config::Policy;
use crate::review::OutcomeKind;
use crate::rules::{DataSourceRequest, Finding, RuleId, SNAPSHOT_GROUP, SourceKind};

/// What `check` was asked.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub files: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub state: Vec<PathBuf>,
    pub json: bool,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    pub file: String,
    pub line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The StatefulSet template the line is about (`volumeClaimTemplates[0] "data"`).
    pub template: Option<String>,
    /// `error` (a refusal, or a claim that could not be checked) or `warning`.
    pub severity: &'static str,
    /// The rule's id; `None` when the claim could not be checked.
    pub rule: Option<&'static str>,
    pub message: String,
}

impl Line {
    fn text(&self) -> String {
        let mut text = format!(
            "{}:{}: {}/{}: ",
            self.file, self.line, self.namespace, self.name
        );
        if self.severity == "warning" {
            text.push_str("warning: ");
        }
        if let Some(template) = &self.template {
            text.push_str(&format!("{template}: "));
        }
        match self.rule {
            Some(rule) => text.push_str(&format!("[{rule}] {}", self.message)),
            None => text.push_str(&format!("could not check: {}", self.message)),
        }
        text
    }
}

/// The whole report, as `-o json` prints it.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Claims and StatefulSet templates with a data source that were judged.
    pub checked: usize,
    pub refused: usize,
    pub warned: usize,
    pub unchecked: usize,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        if self.unchecked > 0 {
            2
        } else if self.refused > 0 {
            1
        } else {
            0
        }
    }
}

/// Runs `check`; prints the report and returns its exit code.
pub fn run(options: CheckOptions) -> ExitCode {
    let fail = |message: String| {
        eprintln!("pvc-clone-guard check: {message}");
        ExitCode::from(2)
    };
    let input = match manifests::read_paths(&options.files) {
        Ok(input) => input,
        Err(error) => return fail(error.to_string()),
    };
    for file in &input.skipped {
        eprintln!("pvc-clone-guard check: skipped {file} (not .yaml, .yml or .json)");
    }
    let (policy, runtime) = match super::policy_and_runtime(options.config.as_deref()) {
        Ok(started) => started,
        Err(message) => return fail(message),
    };
    let report = match runtime.block_on(check(&input.documents, policy, &options.state)) {
        Ok(report) => report,
        Err(message) => return fail(message),
    };
    let mut out = std::io::stdout().lock();
    let written = if options.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        report
            .lines
            .iter()
            .try_for_each(|line| writeln!(out, "{}", line.text()))
    };
    if let Err(error) = written {
        return fail(format!("cannot write the report: {error}"));
    }
    eprintln!(
        "pvc-clone-guard check: {} claim(s) with a data source in {} object(s): {} refused, {} with warnings, {} could not be checked",
        report.checked,
        input.documents.len(),
        report.refused,
        report.warned,
        report.unchecked
    );
    ExitCode::from(report.exit_code())
}

/// Judges `documents`; `Err` when facts were needed and there is no cluster to read.
pub async fn check(
    documents: &[Document],
    policy: Policy,
    state: &[PathBuf],
) -> Result<Report, String> {
    // Only a claim with a data source needs facts: manifests without one are checked
    // without a cluster.
    let provisional: Vec<_> = documents
        .iter()
        .map(|document| create_review(&document.object, document.namespace().unwrap_or("default")))
        .collect();
    let needs_facts = provisional
        .iter()
        .flatten()
        .any(|request| !judged_claims(request).is_empty());
    let mut report = Report::default();
    if !needs_facts {
        return Ok(report);
    }
    let client = super::client(state).await?;
    let default_namespace = client.default_namespace().to_owned();
    let reviewer = super::reviewer(policy, client);
    let defined = Defined::new(documents, &default_namespace);
    for document in documents {
        let namespace = document.namespace().unwrap_or(&default_namespace);
        let Some(request) = create_review(&document.object, namespace) else {
            continue;
        };
        let claims = judged_claims(&request);
        if claims.is_empty() {
            continue;
        }
        report.checked += claims.len();
        let outcome = reviewer.judge(&request).await;
        let line = |template: Option<String>,
                    severity: &'static str,
                    rule: Option<&'static str>,
                    message: String| Line {
            file: document.file.clone(),
            line: document.line,
            kind: document.kind().to_owned(),
            namespace: namespace.to_owned(),
            name: document.name().to_owned(),
            template,
            severity,
            rule,
            message,
        };
        if let OutcomeKind::LookupFailed { cause, .. } = &outcome.kind {
            report.unchecked += claims.len();
            report.lines.push(line(None, "error", None, cause.clone()));
            continue;
        }
        let Some(verdict) = outcome.verdict else {
            continue;
        };
        let about = |finding: &Finding| {
            claims
                .iter()
                .find(|(label, _)| *label == finding.subject)
                .map(|(_, claim)| claim)
        };
        let refused_claims: std::collections::BTreeSet<_> =
            verdict.denials.iter().map(|f| f.subject.clone()).collect();
        let warned_claims: std::collections::BTreeSet<_> =
            verdict.warnings.iter().map(|f| f.subject.clone()).collect();
        report.refused += refused_claims.len();
        report.warned += warned_claims.len();
        for (findings, severity) in [(&verdict.denials, "error"), (&verdict.warnings, "warning")] {
            for finding in findings {
                let message = about(finding)
                    .and_then(|claim| defined.instead_of_missing(finding.rule, claim))
                    .unwrap_or_else(|| finding.message.clone());
                report.lines.push(line(
                    finding.subject.clone(),
                    severity,
                    Some(finding.rule.as_str()),
                    message,
                ));
            }
        }
    }
    Ok(report)
}

/// The claims and VolumeSnapshots the manifests themselves define, by namespace and name,
/// with where: a clone of one of them is not told its source "does not exist", but that it
/// must exist (and be Bound, or ready) before the clone is created.
struct Defined {
    claims: BTreeMap<(String, String), String>,
    snapshots: BTreeMap<(String, String), String>,
}

impl Defined {
    fn new(documents: &[Document], default_namespace: &str) -> Self {
        let mut defined = Defined {
            claims: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        };
        for document in documents {
            let key = (
                document.namespace().unwrap_or(default_namespace).to_owned(),
                document.name().to_owned(),
            );
            let place = format!("{}:{}", document.file, document.line);
            match (document.group_version().0, document.kind()) {
                ("", "PersistentVolumeClaim") => {
                    defined.claims.entry(key).or_insert(place);
                }
                (SNAPSHOT_GROUP, "VolumeSnapshot") => {
                    defined.snapshots.entry(key).or_insert(place);
                }
                _ => {}
            }
        }
        defined
    }

    /// The message that replaces "does not exist" when the source is in the manifests.
    fn instead_of_missing(&self, rule: RuleId, claim: &DataSourceRequest) -> Option<String> {
        let namespace = claim
            .source
            .namespace
            .clone()
            .unwrap_or_else(|| claim.namespace.clone());
        let key = (namespace.clone(), claim.source.name.clone());
        let name = &claim.source.name;
        match (rule, claim.source.kind) {
            (RuleId::SourceExists, SourceKind::Claim) => self.claims.get(&key).map(|place| {
                format!(
                    "source claim {name:?} is defined in these manifests ({place}) but does not exist in namespace {namespace:?} yet; \
                     it must exist and be Bound before the clone is created: apply it first, wait until it is Bound, then apply the clone"
                )
            }),
            (RuleId::SnapshotExists, SourceKind::Snapshot) => {
                self.snapshots.get(&key).map(|place| {
                    format!(
                        "VolumeSnapshot {name:?} is defined in these manifests ({place}) but does not exist in namespace {namespace:?} yet; \
                         it must exist and be ready to use before the claim is created: apply it first, wait until it is readyToUse, then apply the claim"
                    )
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(severity: &'static str, template: Option<&str>, rule: Option<&'static str>) -> Line {
        Line {
            file: "apps/db.yaml".into(),
            line: 12,
            kind: "StatefulSet".into(),
            namespace: "prod".into(),
            name: "db".into(),
            template: template.map(Into::into),
            severity,
            rule,
            message: "the message".into(),
        }
    }

    #[test]
    fn a_line_names_the_file_the_object_and_the_rule_and_marks_warnings() {
        let cases = [
            (
                line("error", None, Some("size")),
                "apps/db.yaml:12: prod/db: [size] the message",
            ),
            (
                line("warning", None, Some("source-in-use")),
                "apps/db.yaml:12: prod/db: warning: [source-in-use] the message",
            ),
            (
                line(
                    "error",
                    Some("volumeClaimTemplates[0] \"data\""),
                    Some("same-driver"),
                ),
                "apps/db.yaml:12: prod/db: volumeClaimTemplates[0] \"data\": [same-driver] the message",
            ),
            (
                line(
                    "warning",
                    Some("volumeClaimTemplates[1] \"logs\""),
                    Some("topology"),
                ),
                "apps/db.yaml:12: prod/db: warning: volumeClaimTemplates[1] \"logs\": [topology] the message",
            ),
            (
                line("error", None, None),
                "apps/db.yaml:12: prod/db: could not check: the message",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(line.text(), expected);
        }
    }

    #[test]
    fn exit_codes_put_could_not_check_before_refused_before_clean() {
        let report = |refused, warned, unchecked| Report {
            lines: Vec::new(),
            checked: 3,
            refused,
            warned,
            unchecked,
        };
        assert_eq!(report(0, 0, 0).exit_code(), 0);
        assert_eq!(report(0, 2, 0).exit_code(), 0, "warnings alone pass");
        assert_eq!(report(1, 2, 0).exit_code(), 1);
        assert_eq!(report(1, 0, 1).exit_code(), 2);
    }
}
