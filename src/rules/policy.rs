//! The policy: what each rule does when it is violated, and the options around the rules.
//! `config` reads it from YAML; the rules and the fact gathering read it.

use std::time::Duration;

use serde::Deserialize;

use super::{Fact, RULES, RuleId};

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
    /// The action of a rule: `off` while its switch in the table says it has nothing to
    /// check (e.g. `clone-capable-driver` until a list of drivers is configured).
    pub fn action(&self, rule: RuleId) -> Action {
        if !(rule.rule().switched_on)(self) {
            return Action::Off;
        }
        self.actions[rule as usize]
    }

    /// Whether a rule that reads `fact` is on: the gathering reads (and watches) a fact only
    /// then.
    pub fn reads(&self, fact: Fact) -> bool {
        RULES
            .iter()
            .any(|rule| rule.needs.contains(&fact) && self.action(rule.id) != Action::Off)
    }

    pub fn set_action(&mut self, rule: RuleId, action: Action) {
        self.actions[rule as usize] = action;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_specification() {
        let policy = Policy::default();
        for rule in RuleId::ALL {
            let expected = match rule {
                RuleId::CloneCapableDriver => Action::Off,
                _ => rule.rule().default,
            };
            assert_eq!(policy.action(rule), expected, "{rule}");
        }
        assert_eq!(policy.failure_mode, FailureMode::FailClosed);
        assert_eq!(policy.cross_namespace, CrossNamespace::Deny);
        assert_eq!(policy.lookup_timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_fact_is_read_while_a_rule_that_needs_it_is_on() {
        let mut policy = Policy::default();
        assert!(policy.reads(Fact::Pods) && policy.reads(Fact::Snapshot));
        policy.set_action(RuleId::SourceInUse, Action::Off);
        assert!(!policy.reads(Fact::Pods));
        for rule in RULES.iter().filter(|r| r.needs.contains(&Fact::Snapshot)) {
            policy.set_action(rule.id, Action::Off);
        }
        assert!(!policy.reads(Fact::Snapshot));
    }
}
