//! The shipped definitions parse, validate and behave as their README describes.

use tollgate_workflows::{
    BUNDLED, CredentialVersion, Duration, Operation, Recipient, RequestFacts, Risk, Step, WorkflowDefinition,
    WorkflowKind, parse_definition,
};

fn bundled(file: &str) -> WorkflowDefinition {
    let (_, text) = BUNDLED.iter().find(|(name, _)| *name == file).expect("bundled file");
    parse_definition(file, text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_bundled_definition_parses_and_matches_its_file_name() {
    assert_eq!(BUNDLED.len(), 4);
    for (file, text) in BUNDLED {
        let def = parse_definition(file, text).unwrap_or_else(|e| panic!("{e}"));
        let kind = file.trim_end_matches(".yaml");
        assert_eq!(def.kind.as_str(), kind);
        assert_eq!(def.key, format!("standard-{kind}"));
        // standard-rotate 2 added the grace period; the others are still at 1.
        assert_eq!(def.version, if kind == "rotate" { 2 } else { 1 });
        assert!(!def.description.is_empty());
        assert_eq!(def.applies_to.integrations, ["*"]);
    }
}

#[test]
fn bundled_definitions_round_trip_through_json() {
    // The engine stores the definition a run pinned; JSON keeps the single-key step maps.
    for (file, _) in BUNDLED {
        let def = bundled(file);
        let json = serde_json::to_value(&def).expect("serialize");
        assert!(json["steps"][0].is_object() && json["steps"][0].as_object().is_some_and(|m| m.len() == 1));
        let back: WorkflowDefinition = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, def);
    }
}

fn facts<'a>(environment: &'a str, scope_risks: &'a [Risk]) -> RequestFacts<'a> {
    RequestFacts { environment, scope_risks }
}

/// Types of the steps that run for a request with these facts, as `type` or `type:operation`.
fn admitted(def: &WorkflowDefinition, facts: &RequestFacts<'_>) -> Vec<String> {
    def.steps
        .iter()
        .filter(|s| s.guard().admits(facts))
        .map(|s| match s {
            Step::Action(a) => format!("action:{}", a.operation),
            other => other.type_name().to_owned(),
        })
        .collect()
}

#[test]
fn standard_grant_scales_approval_with_risk_and_always_revokes() {
    let def = bundled("grant.yaml");
    assert_eq!(def.kind, WorkflowKind::Grant);
    assert_eq!(def.parameters.default_duration, Some(Duration::from_secs(3600)));
    assert_eq!(def.parameters.max_duration, Some(Duration::from_secs(8 * 3600)));
    assert!(def.parameters.require_justification);

    let tail = ["action:grant", "notify", "wait", "action:revoke", "notify"];
    let with = |approvals: &[&str]| approvals.iter().chain(&tail).map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // Only low-risk scopes: no human in the loop.
    assert_eq!(admitted(&def, &facts("production", &[Risk::Low, Risk::Low])), with(&[]));
    // Anything else: owner or security.
    assert_eq!(admitted(&def, &facts("production", &[Risk::Low, Risk::Medium])), with(&["approval"]));
    assert_eq!(admitted(&def, &facts("staging", &[Risk::High])), with(&["approval"]));
    // High risk in production: and two people from security.
    assert_eq!(admitted(&def, &facts("production", &[Risk::Low, Risk::High])), with(&["approval", "approval"]));

    let Step::Approval(first) = &def.steps[0] else { panic!("approval first") };
    assert!(first.approvers.owner && first.approvers.groups == ["security"]);
    assert_eq!(
        (first.quorum, first.timeout, first.reminder),
        (1, Duration::from_secs(86_400), Some(Duration::from_secs(4 * 3600)))
    );
    let Step::Approval(second) = &def.steps[1] else { panic!("second approval") };
    assert!(!second.approvers.owner && second.approvers.groups == ["security"] && second.quorum == 2);

    let Step::Action(grant) = &def.steps[2] else { panic!("grant action") };
    assert_eq!((grant.operation, grant.retry.max_attempts), (Operation::Grant, 5));
    assert_eq!((grant.retry.backoff.as_secs(), grant.retry.max_backoff.as_secs()), (1, 300));
    let Step::Notify(granted) = &def.steps[3] else { panic!("notify") };
    assert!(granted.to == [Recipient::Requester] && granted.message.contains("until {expires_at}"));
    let Step::Action(revoke) = &def.steps[5] else { panic!("revoke action") };
    assert_eq!((revoke.operation, revoke.retry.max_attempts), (Operation::Revoke, 10));
    let Step::Notify(revoked) = &def.steps[6] else { panic!("notify") };
    assert_eq!(revoked.to, [Recipient::Requester, Recipient::Owner]);
}

#[test]
fn renew_rotate_and_revoke_have_the_documented_steps() {
    let everything = facts("production", &[Risk::High]);
    assert_eq!(admitted(&bundled("renew.yaml"), &everything), ["approval", "action:renew", "notify"]);
    assert_eq!(
        admitted(&bundled("rotate.yaml"), &everything),
        ["approval", "action:rotate", "action:verify", "notify", "wait", "action:revoke", "action:verify", "notify"]
    );
    // The grace period: the old version is revoked an hour after the new one was verified, and
    // checked dead; the rotation keeps it valid until then.
    let rotate = bundled("rotate.yaml");
    let Step::Wait(grace) = &rotate.steps[4] else { panic!("grace period") };
    assert_eq!(grace.duration.map(|d| d.as_secs()), Some(3600));
    for (i, op) in [(5, Operation::Revoke), (6, Operation::Verify)] {
        let Step::Action(a) = &rotate.steps[i] else { panic!("action") };
        assert_eq!((a.operation, a.version), (op, CredentialVersion::Previous));
    }
    assert_eq!(admitted(&bundled("revoke.yaml"), &everything), ["action:revoke", "notify"]);

    let Step::Approval(renew) = &bundled("renew.yaml").steps[0] else { panic!() };
    assert!(renew.approvers.owner && renew.approvers.groups.is_empty());
    let Step::Approval(rotate) = &bundled("rotate.yaml").steps[0] else { panic!() };
    assert!(rotate.approvers.owner && rotate.approvers.groups == ["security"]);
    let revoke = bundled("revoke.yaml");
    let Step::Notify(notify) = &revoke.steps[1] else { panic!() };
    assert_eq!(notify.to, [Recipient::Requester, Recipient::Owner]);
    assert!(!revoke.parameters.require_justification);
}
