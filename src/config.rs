//! The configuration file (`--config`): YAML turned into a [`Policy`] (what each rule does
//! when it is violated, and the options around the rules). Every field is optional.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use crate::rules::{Action, CrossNamespace, FailureMode, Policy, RuleId};

impl FromStr for RuleId {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RuleId::from_name(text).ok_or_else(|| ConfigError::UnknownRule(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown rule {0:?} (known rules: {known})", known = RuleId::known())]
    UnknownRule(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("lookupTimeout must be between 100ms and 25s, not {0:?}")]
    LookupTimeout(Duration),
}

/// The YAML document, as written by the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    rules: std::collections::BTreeMap<String, Action>,
    #[serde(default)]
    clone_capable_drivers: Vec<String>,
    failure_mode: Option<FailureMode>,
    cross_namespace: Option<CrossNamespace>,
    #[serde(default, with = "humantime_serde")]
    lookup_timeout: Option<Duration>,
}

impl Policy {
    pub fn from_yaml(text: &str, path: &str) -> Result<Policy, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?
        };
        let mut policy = Policy::default();
        for (name, action) in file.rules {
            policy.set_action(name.parse()?, action);
        }
        policy.clone_capable_drivers = file.clone_capable_drivers;
        if let Some(mode) = file.failure_mode {
            policy.failure_mode = mode;
        }
        if let Some(mode) = file.cross_namespace {
            policy.cross_namespace = mode;
        }
        if let Some(timeout) = file.lookup_timeout {
            if !(Duration::from_millis(100)..=Duration::from_secs(25)).contains(&timeout) {
                return Err(ConfigError::LookupTimeout(timeout));
            }
            policy.lookup_timeout = timeout;
        }
        Ok(policy)
    }

    pub fn from_file(path: &Path) -> Result<Policy, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Policy::from_yaml(&text, &display)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip() {
        for rule in RuleId::ALL {
            assert_eq!(rule.as_str().parse::<RuleId>().ok(), Some(rule));
        }
    }

    #[test]
    fn a_full_file_sets_every_option() {
        let policy = Policy::from_yaml(
            "rules:\n  size-capacity: deny\n  source-in-use: off\n  same-driver: warn\n\
             cloneCapableDrivers: [ebs.csi.aws.com]\nfailureMode: fail-open\nlookupTimeout: 1500ms\n\
             crossNamespace: reference-grant\n",
            "test.yaml",
        )
        .expect("valid config");
        assert_eq!(policy.action(RuleId::SizeCapacity), Action::Deny);
        assert_eq!(policy.action(RuleId::SourceInUse), Action::Off);
        assert_eq!(policy.action(RuleId::SameDriver), Action::Warn);
        assert_eq!(policy.action(RuleId::CloneCapableDriver), Action::Deny);
        assert_eq!(policy.clone_capable_drivers, ["ebs.csi.aws.com"]);
        assert_eq!(policy.failure_mode, FailureMode::FailOpen);
        assert_eq!(policy.lookup_timeout, Duration::from_millis(1500));
        assert_eq!(policy.cross_namespace, CrossNamespace::ReferenceGrant);
    }

    #[test]
    fn cross_namespace_modes_parse() {
        for (text, mode) in [
            ("deny", CrossNamespace::Deny),
            ("reference-grant", CrossNamespace::ReferenceGrant),
            ("allow", CrossNamespace::Allow),
        ] {
            let policy = Policy::from_yaml(&format!("crossNamespace: {text}\n"), "c.yaml");
            assert_eq!(policy.ok().map(|p| p.cross_namespace), Some(mode));
        }
        let err = Policy::from_yaml("crossNamespace: grant\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown variant `grant`"), "{err}");
    }

    #[test]
    fn an_empty_file_is_the_default_policy() {
        assert_eq!(Policy::from_yaml("", "x").ok(), Some(Policy::default()));
        assert_eq!(Policy::from_yaml("{}", "x").ok(), Some(Policy::default()));
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        let err = |yaml: &str| Policy::from_yaml(yaml, "c.yaml").unwrap_err().to_string();
        assert!(
            err("rules:\n  sizes: deny\n")
                .starts_with("unknown rule \"sizes\" (known rules: same-namespace,")
        );
        assert!(err("rules:\n  size: block\n").starts_with(
            "c.yaml is not a valid configuration: rules.size: unknown variant `block`"
        ));
        assert!(err("failurePolicy: fail-open\n").contains("unknown field `failurePolicy`"));
        assert_eq!(
            err("lookupTimeout: 1m\n"),
            "lookupTimeout must be between 100ms and 25s, not 60s"
        );
    }
}
