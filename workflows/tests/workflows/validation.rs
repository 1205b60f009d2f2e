//! One test per workflow rule: each is rejected with the field path, and the key's position.

use crate::{GRANT, accept, grant_with, reject, reject_at};

fn with_kind(kind: &str, steps: &str) -> String {
    // A renew workflow must bound the extension it grants.
    let parameters = if kind == "renew" { "parameters: {max_duration: 8h}\n" } else { "" };
    format!("key: t\nversion: 1\nkind: {kind}\n{parameters}steps:\n{steps}")
}

#[test]
fn the_minimal_templates_are_valid() {
    accept(&grant_with(""));
    accept(&with_kind("revoke", "  - action: {operation: revoke}\n"));
}

#[test]
fn key_must_be_a_short_lowercase_identifier() {
    for key in ["Standard", "-grant", "grant/1", "\"\"", "a b", &"a".repeat(65)] {
        let text = grant_with("").replace("key: t", &format!("key: {key}"));
        let e = reject_at(&text, "key", "invalid key");
        assert_eq!((e.line, e.column), (Some(1), Some(1)));
    }
    accept(&grant_with("").replace("key: t", &format!("key: {}", "a".repeat(64))));
    accept(&grant_with("").replace("key: t", "key: 0.team_grant-2"));
}

#[test]
fn version_zero_is_rejected() {
    let e = reject_at(&grant_with("").replace("version: 1", "version: 0"), "version", "at least 1");
    assert_eq!(e.line, Some(2));
}

#[test]
fn a_workflow_needs_steps() {
    let e = reject_at(&with_kind("revoke", "  []\n"), "steps", "at least one step");
    assert_eq!(e.line, Some(4));
}

#[test]
fn step_ids_are_identifiers_and_unique() {
    let e = reject_at(
        &grant_with("  - wait: {id: pause, duration: 1m}\n  - wait: {id: pause, duration: 2m}\n"),
        "steps[1].wait.id",
        "duplicate step id \"pause\": steps[0] already uses it",
    );
    assert_eq!((e.line, e.column), (Some(8), Some(12)));
    reject_at(&grant_with("  - wait: {id: Pause, duration: 1m}\n"), "steps[0].wait.id", "invalid step id");
    accept(&grant_with("  - wait: {id: pause, duration: 1m}\n  - wait: {id: pause-2, duration: 2m}\n"));
}

#[test]
fn grant_without_max_duration_is_a_grant_without_expiry() {
    let text = grant_with("").replace("parameters:\n  max_duration: 8h\n", "");
    let e = reject_at(&text, "parameters.max_duration", "grant without expiry");
    assert!(e.message.contains("standing access"), "{e}");
    // No `parameters` at all: the error falls back to the document's start.
    assert_eq!((e.line, e.column), (Some(1), Some(1)));

    let text = grant_with("").replace("  max_duration: 8h\n", "  default_duration: 1h\n");
    let e = reject_at(&text, "parameters.max_duration", "grant without expiry");
    assert_eq!((e.line, e.column), (Some(4), Some(1)), "points at `parameters`");
}

#[test]
fn renew_without_max_duration_is_rejected() {
    let steps = "  - approval: {approvers: {owner: true}, timeout: 1h}\n  - action: {operation: renew}\n";
    let bare = format!("key: t\nversion: 1\nkind: renew\nsteps:\n{steps}");
    let e = reject_at(&bare, "parameters.max_duration", "a renew workflow must set parameters.max_duration");
    assert!(e.message.contains("366 days"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(1)), "no `parameters`: the document's start");

    // A default alone is no bound.
    let text = bare.replace("steps:", "parameters:\n  default_duration: 1h\nsteps:");
    let e = reject_at(&text, "parameters.max_duration", "renew");
    assert_eq!((e.line, e.column), (Some(4), Some(1)), "points at `parameters`");

    accept(&bare.replace("steps:", "parameters:\n  max_duration: 2h\nsteps:"));
    // A lifetime across renewals (issue 8, item 7): at least max_duration, at most 366 days.
    accept(&bare.replace("steps:", "parameters:\n  max_duration: 2h\n  max_lifetime: 2h\nsteps:"));
    for (lifetime, says) in [("1h", "shorter than max_duration 2h"), ("367d", "longer than the limit of 366 days")] {
        let text =
            bare.replace("steps:", &format!("parameters:\n  max_duration: 2h\n  max_lifetime: {lifetime}\nsteps:"));
        reject_at(&text, "parameters.max_lifetime", says);
    }
    let grant = grant_with("").replace("  max_duration: 8h\n", "  max_duration: 8h\n  max_lifetime: 9h\n");
    reject_at(&grant, "parameters.max_lifetime", "set it in renew workflows");
    accept(&bare.replace("steps:", "parameters: {max_duration: 366d}\nsteps:"));
    // The request-time panic of issue 18: an extension of 300,000 years.
    reject_at(
        &bare.replace("steps:", "parameters: {max_duration: 300000years}\nsteps:"),
        "parameters.max_duration",
        "longer than the limit of 366 days",
    );
    // Rotate and revoke workflows take no duration, so they need no bound.
    accept(&with_kind("rotate", "  - action: {operation: rotate}\n"));
    accept(&with_kind("revoke", "  - action: {operation: revoke}\n"));
}

#[test]
fn every_duration_in_a_definition_is_capped_at_366_days() {
    let retry = |policy: &str| grant_with(&format!("  - action: {{operation: verify, retry: {policy}}}\n"));
    let approval =
        |timeout: &str| grant_with(&format!("  - approval: {{approvers: {{owner: true}}, timeout: {timeout}}}\n"));
    // `reminder` and `escalation.after` are shorter than `timeout`, so its bound is theirs too.
    let cases = [
        (grant_with("").replace("max_duration: 8h", "max_duration: 367d"), "parameters.max_duration"),
        (
            grant_with("").replace("  max_duration: 8h\n", "  default_duration: 367d\n  max_duration: 400d\n"),
            "parameters.default_duration",
        ),
        (approval("367d"), "steps[0].approval.timeout"),
        (retry("{backoff: 367d, max_backoff: 400d}"), "steps[0].action.retry.backoff"),
        (retry("{max_backoff: 367d}"), "steps[0].action.retry.max_backoff"),
        (grant_with("  - wait: {duration: 367d}\n"), "steps[0].wait.duration"),
        (grant_with("  - wait: {duration: 300000years}\n"), "steps[0].wait.duration"),
    ];
    for (text, path) in &cases {
        reject_at(text, path, "longer than the limit of 366 days");
    }
    accept(&approval("366d"));
    accept(&retry("{backoff: 366d, max_backoff: 366d}"));
    accept(&grant_with("  - wait: {duration: 366d}\n"));
}

#[test]
fn grant_must_wait_for_expiry_then_revoke() {
    let head = GRANT.split("{steps}").next().unwrap_or_default();
    let cases = [
        "  - action: {operation: grant}\n",
        "  - action: {operation: grant}\n  - wait: {until: expiry}\n",
        "  - action: {operation: grant}\n  - action: {operation: revoke}\n  - wait: {until: expiry}\n",
        "  - wait: {duration: 1h}\n  - action: {operation: grant}\n  - wait: {duration: 8h}\n  - action: {operation: revoke}\n",
        // A guard could skip the revocation and leave access standing.
        "  - action: {operation: grant}\n  - wait: {until: expiry}\n  - action: {operation: revoke, unless: {environments: [dev]}}\n",
        "  - action: {operation: grant}\n  - wait: {until: expiry, when: {environments: [prod]}}\n  - action: {operation: revoke}\n",
        // Waiting for an expiry that does not exist yet.
        "  - wait: {until: expiry}\n  - action: {operation: revoke}\n  - action: {operation: grant}\n",
    ];
    for steps in cases {
        let e = reject_at(&format!("{head}{steps}"), "steps", "grant without expiry");
        assert!(e.message.contains("operation: revoke"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
    }
    // Guarded extras are fine as long as the unconditional pair is there.
    accept(
        &grant_with("").replace(
            "  - wait:\n",
            "  - notify: {to: [owner], message: hi, when: {environments: [prod]}}\n  - wait:\n",
        ),
    );
}

/// Issue 8, item 4: "access first, review later" validated, and a deny, timeout or cancel of the
/// review ended the run with the grant active past its expiry forever. Any step that can end a
/// run is refused between the grant and its revocation; `notify` and `wait` cannot.
#[test]
fn nothing_that_can_end_the_run_comes_between_the_grant_and_its_revocation() {
    let review = "  - approval: {approvers: {owner: true}, timeout: 1h}\n";
    let verify = "  - action: {operation: verify}\n";
    let guarded = "  - action: {operation: verify, when: {environments: [prod]}}\n";
    let before_wait = |step: &str| grant_with("").replace("  - wait:\n", &format!("{step}  - wait:\n"));
    let before_revoke = |step: &str| {
        grant_with("")
            .replace("  - action:\n      operation: revoke\n", &format!("{step}  - action:\n      operation: revoke\n"))
    };
    for (text, path, says) in [
        (before_wait(review), "steps[1].approval", "a deny, a timeout or a cancel"),
        (before_wait(verify), "steps[1].action", "a failure here"),
        (before_wait(guarded), "steps[1].action", "a failure here"),
        (before_revoke(review), "steps[2].approval", "access first, review later is not supported"),
    ] {
        let e = reject_at(&text, path, says);
        assert!(e.message.contains("only `notify` and `wait` steps"), "{e}");
    }
    accept(&before_wait("  - wait: {duration: 1h}\n"));
    accept(&before_revoke("  - notify: {to: [owner], message: expiring}\n"));
    // Before the grant, approvals and actions are what a workflow is for.
    accept(&grant_with(&format!("{review}{verify}")));
}

#[test]
fn each_kind_needs_its_own_operation() {
    for kind in ["renew", "rotate", "revoke"] {
        let e = reject_at(
            &with_kind(kind, "  - action: {operation: verify}\n"),
            "steps",
            &format!("a {kind} workflow needs an `action` step with `operation: {kind}`"),
        );
        assert_eq!(e.line, Some(if kind == "renew" { 5 } else { 4 }));
        accept(&with_kind(kind, &format!("  - action: {{operation: {kind}}}\n")));
    }
    let text = grant_with("").replace("      operation: grant\n", "      operation: verify\n");
    reject_at(&text, "steps", "a grant workflow needs an `action` step with `operation: grant`");
}

#[test]
fn only_grant_workflows_may_grant() {
    let text = with_kind("revoke", "  - action: {operation: revoke}\n  - action: {operation: grant}\n");
    let e = reject_at(&text, "steps[1].action.operation", "only allowed in grant workflows");
    assert_eq!((e.line, e.column), (Some(6), Some(14)));
}

#[test]
fn default_duration_may_not_exceed_max_duration() {
    let text = grant_with("").replace("  max_duration: 8h\n", "  default_duration: 9h\n  max_duration: 8h\n");
    let e = reject_at(&text, "parameters.default_duration", "default_duration 9h is longer than max_duration 8h");
    assert_eq!((e.line, e.column), (Some(5), Some(3)));
}

#[test]
fn durations_are_capped_at_366_days() {
    let text = grant_with("").replace("max_duration: 8h", "max_duration: 400d");
    reject_at(&text, "parameters.max_duration", "366 days");
    reject_at(&grant_with("  - wait: {duration: 2years}\n"), "steps[0].wait.duration", "366 days");
    accept(&grant_with("").replace("max_duration: 8h", "max_duration: 366d"));
}

fn approval(body: &str) -> String {
    grant_with(&format!("  - approval:\n{body}"))
}

#[test]
fn approval_without_approvers_is_rejected() {
    for approvers in ["{}", "{groups: [], users: [], owner: false}"] {
        let e = reject_at(
            &approval(&format!("      approvers: {approvers}\n      timeout: 1h\n")),
            "steps[0].approval.approvers",
            "approval without approvers",
        );
        assert_eq!((e.line, e.column), (Some(8), Some(7)));
    }
}

#[test]
fn quorums_must_be_reachable() {
    let base = "      approvers: {groups: [security]}\n      timeout: 1h\n";
    reject_at(&approval(&format!("{base}      quorum: 0\n")), "steps[0].approval.quorum", "at least 1");
    reject_at(&approval(&format!("{base}      deny_quorum: 0\n")), "steps[0].approval.deny_quorum", "at least 1");
    accept(&approval(&format!("{base}      quorum: 5\n")));

    let users = "      approvers: {users: [ann, bob, bob]}\n      timeout: 1h\n";
    let e =
        reject_at(&approval(&format!("{users}      quorum: 3\n")), "steps[0].approval.quorum", "only 2 distinct users");
    assert_eq!(e.line, Some(10));
    reject_at(
        &approval(&format!("{users}      deny_quorum: 3\n")),
        "steps[0].approval.deny_quorum",
        "only 2 distinct users",
    );
    accept(&approval(&format!("{users}      quorum: 2\n      deny_quorum: 2\n")));
    // With a group or the owner besides the users, the number of approvers is unknown.
    accept(&approval("      approvers: {users: [ann], owner: true}\n      timeout: 1h\n      quorum: 2\n"));
}

#[test]
fn reminder_must_be_shorter_than_timeout() {
    let base = "      approvers: {owner: true}\n      timeout: 4h\n";
    for reminder in ["4h", "5h"] {
        let e = reject_at(
            &approval(&format!("{base}      reminder: {reminder}\n")),
            "steps[0].approval.reminder",
            "not shorter than timeout 4h",
        );
        assert_eq!(e.line, Some(10));
    }
    accept(&approval(&format!("{base}      reminder: 3h 59m\n")));
}

#[test]
fn retry_policy_is_bounded() {
    let action =
        |retry: &str| with_kind("revoke", &format!("  - action:\n      operation: revoke\n      retry: {retry}\n"));
    for attempts in [0, 101] {
        let e = reject_at(
            &action(&format!("{{max_attempts: {attempts}}}")),
            "steps[0].action.retry.max_attempts",
            "between 1 and 100",
        );
        assert_eq!((e.line, e.column), (Some(7), Some(15)));
    }
    accept(&action("{max_attempts: 1}"));
    accept(&action("{max_attempts: 100}"));
    reject_at(
        &action("{backoff: 10m, max_backoff: 5m}"),
        "steps[0].action.retry.backoff",
        "backoff 10m is longer than max_backoff 5m",
    );
    // The default max_backoff is 5m.
    reject_at(&action("{backoff: 6m}"), "steps[0].action.retry.backoff", "longer than max_backoff");
}

#[test]
fn wait_takes_exactly_one_of_duration_and_until() {
    let e = reject_at(&grant_with("  - wait: {id: w}\n"), "steps[0].wait", "needs `duration` or `until`");
    assert_eq!((e.line, e.column), (Some(7), Some(5)));
    reject_at(&grant_with("  - wait: {duration: 1h, until: expiry}\n"), "steps[0].wait", "not both");
}

#[test]
fn until_expiry_is_only_for_grants() {
    let text = with_kind("revoke", "  - wait: {until: expiry}\n  - action: {operation: revoke}\n");
    let e = reject_at(&text, "steps[0].wait.until", "only allowed in grant workflows");
    assert_eq!((e.line, e.column), (Some(5), Some(12)));
}

#[test]
fn notify_needs_recipients_and_a_sensible_message() {
    let notify =
        |to: &str, message: &str| grant_with(&format!("  - notify:\n      to: {to}\n      message: {message}\n"));
    let e = reject_at(&notify("[]", "hi"), "steps[0].notify.to", "notify without recipients");
    assert_eq!((e.line, e.column), (Some(8), Some(7)));
    reject_at(&notify("[owner]", "\"\""), "steps[0].notify.message", "empty");
    reject_at(&notify("[owner]", "\"   \""), "steps[0].notify.message", "empty");
    let long = "é".repeat(2001);
    reject_at(&notify("[owner]", &long), "steps[0].notify.message", "2001 characters long");
    accept(&notify("[owner]", &"é".repeat(2000)));
    let e =
        reject_at(&notify("[owner]", "\"until {expiry}\""), "steps[0].notify.message", "unknown placeholder {expiry}");
    assert!(e.message.contains("{expires_at}"), "{e}");
    accept(&notify(
        "[requester, approvers, owner]",
        "\"{requester} {integration} {scopes} {expires_at} {request} {}\"",
    ));
}

#[test]
fn conditions_must_not_be_empty() {
    for guard in ["when", "unless"] {
        let e = reject_at(
            &grant_with(&format!("  - wait: {{duration: 1m, {guard}: {{}}}}\n")),
            &format!("steps[0].wait.{guard}"),
            &format!("empty `{guard}` condition"),
        );
        assert_eq!(e.line, Some(7));
    }
    accept(&grant_with("  - wait: {duration: 1m, when: {any_scope_risk: [high]}}\n"));
}

#[test]
fn the_first_problem_in_document_order_is_reported() {
    let text = grant_with("  - wait: {}\n  - notify: {to: [], message: hi}\n").replace("version: 1", "version: 0");
    let e = reject(&text);
    assert_eq!((e.path.as_str(), e.line), ("version", Some(2)), "{e}");
}

#[test]
fn approval_routes_name_known_channels_and_slack_channel_ids() {
    let base = "      approvers: {owner: true}\n      timeout: 1h\n";
    accept(&approval(&format!("{base}      channels: [slack, email]\n      slack_channel: C0123ABCD\n")));
    reject_at(
        &approval(&format!("{base}      channels: [slack, teams]\n")),
        "steps[0].approval.channels[1]",
        "unknown channel \"teams\"",
    );
    reject_at(
        &approval(&format!("{base}      slack_channel: \"#approvals\"\n")),
        "steps[0].approval.slack_channel",
        "channel id",
    );
}

#[test]
fn notify_events_are_known_ones() {
    let notify = |event: &str| {
        grant_with(&format!("  - notify:\n      to: [requester]\n      message: hi\n      event: {event}\n"))
    };
    accept(&notify("granted"));
    accept(&notify("revoked"));
    reject_at(&notify("approved"), "steps[0].notify.event", "unknown event \"approved\"");
}

#[test]
fn an_escalation_names_approvers_and_comes_before_the_timeout() {
    let base = "      approvers: {owner: true}\n      timeout: 1h\n";
    accept(&approval(&format!("{base}      escalation: {{after: 30m, to: {{groups: [security]}}}}\n")));
    reject_at(
        &approval(&format!("{base}      escalation: {{after: 30m, to: {{}}}}\n")),
        "steps[0].approval.escalation.to",
        "escalation without approvers",
    );
    reject_at(
        &approval(&format!("{base}      escalation: {{after: 1h, to: {{users: [ann]}}}}\n")),
        "steps[0].approval.escalation.after",
        "not shorter than timeout",
    );
}

#[test]
fn break_glass_names_its_users_and_a_review_that_revokes_when_late() {
    let block = |requesters: &str, on_timeout: &str| {
        format!(
            "{}break_glass:\n  requesters: {requesters}\n  review:\n    approvers: {{groups: [security]}}\n    timeout: 4h\n{on_timeout}",
            grant_with("")
        )
    };
    let def = accept(&block("{users: [alice]}", ""));
    let b = def.break_glass.expect("break_glass");
    assert_eq!((b.requesters.users.as_slice(), b.review.quorum), (["alice".to_owned()].as_slice(), 1));
    reject_at(&block("{}", ""), "break_glass.requesters", "never open to everyone");
    reject_at(&block("{users: [alice]}", "    on_timeout: approve\n"), "break_glass.review.on_timeout", "revokes");
    let renew = format!(
        "{}break_glass:\n  requesters: {{users: [alice]}}\n  review:\n    approvers: {{owner: true}}\n    timeout: 1h\n",
        with_kind("renew", "  - action: {operation: renew}\n")
    );
    reject_at(&renew, "break_glass", "only grant workflows");
    let text = block("{users: [alice]}", "").replace("approvers: {groups: [security]}", "approvers: {}");
    reject_at(&text, "break_glass.review.approvers", "approval without approvers");
}

#[test]
fn only_a_rotation_has_a_previous_version_to_revoke_or_verify() {
    let rotate = "  - action: {operation: rotate}\n";
    let previous = |op: &str| format!("  - action: {{operation: {op}, version: previous}}\n");
    accept(&with_kind(
        "rotate",
        &format!("{rotate}  - wait: {{duration: 1h}}\n{}{}", previous("revoke"), previous("verify")),
    ));

    let e = reject_at(
        &with_kind("rotate", &format!("{rotate}{}", previous("rotate"))),
        "steps[1].action.version",
        "applies to `revoke` and `verify`",
    );
    assert_eq!(e.line, Some(6));
    reject_at(
        &with_kind("rotate", &format!("{}{rotate}", previous("revoke"))),
        "steps[0].action.version",
        "must come after the `rotate` action",
    );
    reject_at(&with_kind("revoke", &previous("revoke")), "steps[0].action.version", "only rotate workflows");
    reject_at(
        &with_kind(
            "rotate",
            &format!("{rotate}  - action: {{operation: revoke, version: previous, when: {{environments: [prod]}}}}\n"),
        ),
        "steps[1].action",
        "may not have `when` or `unless`",
    );
    let e = reject(&with_kind("rotate", &format!("{rotate}  - action: {{operation: revoke, version: older}}\n")));
    assert!(e.to_string().contains("unknown variant `older`"), "{e}");
}
