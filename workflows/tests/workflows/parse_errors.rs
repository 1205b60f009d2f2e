//! Shape and syntax errors: every one names a line and column, and a field path when it has one.

use std::time::{Duration, Instant};

use tollgate_workflows::parse::MAX_DEFINITION_BYTES;

use crate::{accept, grant_with, reject, reject_at};

/// Generous enough for a loaded CI machine, far below the seconds-to-minutes the bombs cost
/// without the guards.
const QUICK: Duration = Duration::from_secs(5);

fn reject_quickly(text: &str) -> tollgate_workflows::DefinitionError {
    let started = Instant::now();
    let e = reject(text);
    assert!(started.elapsed() < QUICK, "took {:?}: {e}", started.elapsed());
    e
}

#[test]
fn syntax_error_reports_line_and_column() {
    let e = reject("key: k\nversion: 1\n  kind: grant\nsteps: []\n");
    assert_eq!((e.line, e.column), (Some(3), Some(7)), "{e}");
    assert_eq!(e.path, "");
    assert_eq!(e.to_string(), "test.yaml:3:7: mapping values are not allowed in this context");

    let e = reject("key: [k\nversion: 1\n");
    assert_eq!(e.line, Some(2), "{e}");

    let e = reject("key: k\nsteps:\n  - wait:\n\t  duration: 1h\n");
    assert_eq!((e.line, e.column), (Some(4), Some(4)), "{e}");
    assert!(e.message.contains("tab"), "{e}");
}

#[test]
fn unknown_key_error_names_line_column_and_path() {
    let text = "\
key: k
version: 1
kind: revoke
steps:
  - action:
      operation: revoke
  - notify:
      to: [owner]
      message: hi
  - approval:
      approvers: {owner: true}
      timeout: 1h
      bogus: 3
";
    let e = reject_at(text, "steps[2].approval.bogus", "unknown field `bogus`");
    assert_eq!((e.line, e.column), (Some(13), Some(7)));
    assert!(e.message.contains("expected one of `id`, `when`"), "{e}");
    assert!(e.to_string().starts_with("test.yaml:13:7: steps[2].approval.bogus: unknown field `bogus`"), "{e}");

    let e = reject_at("key: k\nvresion: 1\n", "vresion", "unknown field `vresion`");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
}

#[test]
fn unknown_step_type_lists_the_step_types() {
    let e = reject_at(
        &grant_with("  - approve:\n      timeout: 1h\n"),
        "steps[0].approve",
        "unknown variant `approve`, expected one of `approval`, `action`, `wait`, `notify`",
    );
    assert_eq!((e.line, e.column), (Some(7), Some(5)));
}

#[test]
fn wrong_type_error_names_line_column_and_path() {
    let e = reject_at("key: k\nversion: one\n", "version", "invalid type: string \"one\", expected u32");
    assert_eq!((e.line, e.column), (Some(2), Some(10)));
    assert_eq!(e.to_string(), "test.yaml:2:10: version: invalid type: string \"one\", expected u32");

    let e = reject_at("key: k\nversion: 1\nkind: revoke\nsteps: abc\n", "steps", "expected a sequence");
    assert_eq!((e.line, e.column), (Some(4), Some(8)));

    let text = grant_with("  - approval:\n      approvers: {owner: true}\n      quorum: two\n      timeout: 1h\n");
    let e = reject_at(&text, "steps[0].approval.quorum", "expected u32");
    assert_eq!((e.line, e.column), (Some(9), Some(15)));

    let text = grant_with("  - notify:\n      to: [everyone]\n      message: hi\n");
    let e = reject_at(&text, "steps[0].notify.to[0]", "unknown variant `everyone`");
    assert_eq!((e.line, e.column), (Some(8), Some(12)));

    reject_at("key: k\nversion: 1\nkind: grunt\n", "kind", "unknown variant `grunt`");
    reject_at("- a\n- b\n", "", "expected struct WorkflowDefinition");
}

#[test]
fn missing_field_points_at_the_mapping_that_lacks_it() {
    let e = reject_at(
        &grant_with("  - approval:\n      approvers: {owner: true}\n"),
        "steps[0].approval",
        "missing field `timeout`",
    );
    assert_eq!((e.line, e.column), (Some(8), Some(7)));
    reject_at("version: 1\n", "", "missing field `key`");
}

#[test]
fn zero_negative_and_unitless_durations_are_rejected_with_position() {
    for (duration, fragment) in [
        ("0s", "must be greater than zero"),
        ("0m", "must be greater than zero"),
        ("\"-5m\"", "invalid duration \"-5m\""),
        ("-5m", "invalid duration \"-5m\""),
        ("5", "duration 5 has no unit"),
        ("-5", "duration -5 has no unit"),
        ("5x", "unknown time unit"),
        ("soon", "invalid duration"),
    ] {
        let text = grant_with(&format!("  - wait:\n      duration: {duration}\n"));
        let e = reject_at(&text, "steps[0].wait.duration", fragment);
        assert_eq!((e.line, e.column), (Some(8), Some(17)), "{duration}: {e}");
    }
    let e = reject_at(
        "key: k\nversion: 1\nkind: grant\nparameters:\n  max_duration: 0h\n",
        "parameters.max_duration",
        "greater than zero",
    );
    assert_eq!((e.line, e.column), (Some(5), Some(17)));
}

#[test]
fn duplicate_key_points_at_the_repetition() {
    let e = reject_at("key: a\nversion: 1\nkey: b\n", "key", "duplicate key `key`");
    assert_eq!((e.line, e.column), (Some(3), Some(1)));

    let text = grant_with(
        "  - notify:\n      to: [owner]\n      message: hi\n      when: {environments: [a]}\n      when: {environments: [b]}\n",
    );
    let e = reject_at(&text, "steps[0].notify.when", "duplicate key `when`");
    assert_eq!((e.line, e.column), (Some(11), Some(7)));
}

#[test]
fn malformed_steps_get_a_hint() {
    reject_at(&grant_with("  - wait\n"), "steps[0]", "needs its settings");
    let text = grant_with("  - wait:\n      duration: 1h\n    notify:\n      to: [owner]\n      message: hi\n");
    let e = reject_at(&text, "steps[0]", "exactly one key");
    assert_eq!(e.line, Some(7));
}

#[test]
fn only_one_non_empty_document_is_accepted() {
    let e = reject("key: a\n---\nkey: b\n");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
    assert!(e.message.contains("single YAML document"), "{e}");

    let e = reject("# nothing here\n");
    assert_eq!(e.message, "the document is empty");
}

#[test]
fn oversized_definition_is_rejected_without_a_position() {
    let text = format!("key: k\ndescription: {}\n", "x".repeat(MAX_DEFINITION_BYTES));
    let e = reject(&text);
    assert_eq!((e.line, e.column, e.path.as_str()), (None, None, ""));
    assert!(e.message.contains("limit is 262144"), "{e}");
    assert_eq!(e.to_string(), format!("test.yaml: {}", e.message));
}

#[test]
fn billion_laughs_is_rejected_quickly() {
    let mut text =
        String::from("key: k\nversion: 1\nkind: revoke\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let p = i - 1;
        text.push_str(&format!("lol{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"));
    }
    text.push_str("steps: [*l9]\n");
    let e = reject_quickly(&text);
    assert!(e.message.contains("expands to more than"), "{e}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn alias_amplification_in_valid_positions_is_rejected_quickly() {
    // Every alias is a well-typed step: serde would build them all.
    let users = "u, ".repeat(5_000);
    let mut text = format!(
        "key: k\nversion: 1\nkind: revoke\nsteps:\n  - &big {{approval: {{approvers: {{users: [{users}]}}, timeout: 1h}}}}\n"
    );
    for _ in 0..1_000 {
        text.push_str("  - *big\n");
    }
    let e = reject_quickly(&text);
    assert!(e.message.contains("expands to more than"), "{e}");
}

#[test]
fn ten_thousand_deep_nesting_is_rejected_quickly() {
    let n = 10_000;
    let documents = [
        format!("key: k\ndescription: {}{}\n", "[".repeat(n), "]".repeat(n)),
        format!("key: k\ndescription: {}\n", "[".repeat(n)),
        format!("{}{}", "{a: ".repeat(n), "}".repeat(n)),
        format!("steps:\n{}x\n", "- ".repeat(n)),
        // The deepest block mapping that fits in 256 KiB: each level indents one more space.
        (0..700).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
    ];
    for text in &documents {
        let e = reject_quickly(text);
        assert!(e.message.contains("more than 64 levels deep"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
    // The largest flow nesting the size limit lets through, too.
    let max = MAX_DEFINITION_BYTES / 2 - 20;
    let e = reject_quickly(&format!("description: {}{}", "[".repeat(max), "]".repeat(max)));
    assert!(e.message.contains("levels deep"), "{e}");
}

#[test]
fn anchors_and_aliases_may_share_conditions_and_policies() {
    let text = grant_with(
        "  - approval:\n      when: &prod {environments: [production]}\n      approvers: {groups: [security]}\n      timeout: 1h\n  - notify:\n      when: *prod\n      to: [owner]\n      message: hi\n",
    );
    let def = accept(&text);
    assert_eq!(def.steps[0].guard().when, def.steps[1].guard().when);
}

#[test]
fn columns_count_characters_like_the_semantic_errors_do() {
    // A serde error after a multi-byte character on the same line…
    let e =
        reject_at(&grant_with("  - notify: {message: \"ééé\", to: 5}\n"), "steps[0].notify.to", "expected a sequence");
    assert_eq!(e.column, Some(34));
    // …and a semantic error located by walking the events agree on what a column is.
    let e = reject_at(
        &grant_with("  - notify: {message: \"ééé\", to: []}\n"),
        "steps[0].notify.to",
        "notify without recipients",
    );
    assert_eq!(e.column, Some(30));
}
