//! The shipped `manifests/base/config.yaml` is the configuration reference: every key the
//! parser knows and every rule of the rule table, in table order, each at its default and
//! with a comment, and the file as a whole is the default policy.

use pvc_clone_guard::config::{Policy, RuleId};

const CONFIG: &str = include_str!("../manifests/base/config.yaml");

#[test]
fn the_shipped_configuration_is_the_default_policy() {
    assert_eq!(
        Policy::from_yaml(CONFIG, "manifests/base/config.yaml").map_err(|e| e.to_string()),
        Ok(Policy::default())
    );
}

/// The `name: action` entries of the `rules:` map, with whether each has a comment.
fn listed_rules() -> Vec<(String, bool)> {
    CONFIG
        .lines()
        .skip_while(|line| *line != "rules:")
        .skip(1)
        .take_while(|line| line.starts_with(' ') || line.is_empty())
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (entry, comment) = line.split_once('#').unwrap_or((line, ""));
            let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
            (entry, !comment.trim().is_empty())
        })
        .collect()
}

#[test]
fn every_rule_of_the_table_is_listed_in_order_at_its_default_with_a_comment() {
    let expected: Vec<String> = RuleId::ALL
        .iter()
        .map(|rule| format!("{}: {}", rule.as_str(), rule.default_action().as_str()))
        .collect();
    let listed = listed_rules();
    let entries: Vec<String> = listed.iter().map(|(entry, _)| entry.clone()).collect();
    assert_eq!(
        entries,
        expected,
        "manifests/base/config.yaml `rules:` must list the rule table in order, each at its \
         default, with a comment; expected:\n  {}",
        expected.join("\n  ")
    );
    for (entry, commented) in listed {
        assert!(commented, "{entry}: say in a comment what the rule refuses");
    }
}

#[test]
fn every_key_the_parser_knows_is_listed() {
    // The parser refuses unknown keys and names the ones it knows.
    let error = Policy::from_yaml("no-such-key: 1\n", "x.yaml")
        .expect_err("an unknown key is refused")
        .to_string();
    let known = error
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("the parser names its keys: {error}"))
        .1;
    let keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
    assert!(keys.len() >= 5, "{keys:?} from {error}");
    for key in keys {
        assert!(
            CONFIG
                .lines()
                .any(|line| line.starts_with(&format!("{key}:"))),
            "manifests/base/config.yaml must list key {key} at its default, with a comment"
        );
    }
}
