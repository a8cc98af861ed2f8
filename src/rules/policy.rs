//! The policy: what each rule does when it is violated, and the options around the rules.
//! `config` reads it from YAML; the rules and the fact gathering read it.

use std::time::Duration;

use serde::Deserialize;

use super::RuleId;

/// What a violated rule does to the review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the claim.
    Deny,
    /// Admit the claim with an admission warning.
    Warn,
    /// Do not evaluate the rule.
    Off,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Off => "off",
        }
    }
}

/// How a data source in another namespace (`dataSourceRef.namespace`) is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossNamespace {
    /// Refused by `same-namespace`; nothing of the other namespace is read.
    #[default]
    Deny,
    /// Allowed when a ReferenceGrant in the source's namespace allows it.
    ReferenceGrant,
    /// Allowed without a check (the provisioner checks); the same as `same-namespace: off`.
    Allow,
}

/// What a clone review answers when the API server cannot be asked in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Refuse the clone, naming the cause.
    FailClosed,
    /// Admit the clone with a warning naming the cause.
    FailOpen,
}

/// Everything the rules and the fact gathering are told by the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    actions: [Action; RuleId::ALL.len()],
    /// CSI drivers known to support CLONE_VOLUME; empty turns `clone-capable-driver` off.
    pub clone_capable_drivers: Vec<String>,
    pub failure_mode: FailureMode,
    pub cross_namespace: CrossNamespace,
    /// Deadline for gathering facts from the API server; shorter than the webhook's
    /// `timeoutSeconds` so that the configured failure mode, not the API server's, applies.
    pub lookup_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            actions: RuleId::ALL.map(RuleId::default_action),
            clone_capable_drivers: Vec::new(),
            failure_mode: FailureMode::FailClosed,
            cross_namespace: CrossNamespace::Deny,
            lookup_timeout: Duration::from_secs(3),
        }
    }
}

impl Policy {
    /// The action of a rule, taking into account that `clone-capable-driver` has nothing
    /// to check until a list of drivers is configured.
    pub fn action(&self, rule: RuleId) -> Action {
        if rule == RuleId::CloneCapableDriver && self.clone_capable_drivers.is_empty() {
            return Action::Off;
        }
        self.actions[rule as usize]
    }

    pub fn set_action(&mut self, rule: RuleId, action: Action) {
        self.actions[rule as usize] = action;
    }
}
