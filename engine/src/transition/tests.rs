//! Unit and property tests of the pure transitions: no database, no clock, no network.
#![expect(clippy::arithmetic_side_effects, reason = "tests step clocks and counters by small amounts")]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use tollgate_workflows::{Operation, WorkflowDefinition, WorkflowKind, parse_definition};

use super::{Cast, Command, Context, NewRequest, Outcome, TransitionError, apply, refusal_event, start};
use crate::connector::ConnectorConfig;
use crate::connector::manual::ManualSettings;
use crate::directory::{Directory, Group, Integration, Principal, PrincipalKind, ScopeDef};
use crate::effect::{Effect, OutboxPayload, TimerKind};
use crate::ids::{GrantId, IdSource, OutboxId, RunId};
use crate::run::{Decision, Grant, GrantStatus, RunState, RunStatus, StepState};

const WORKFLOW: &str = r"
key: test-grant
version: 3
kind: grant
parameters:
  default_duration: 1h
  max_duration: 8h
steps:
  - approval:
      approvers: { owner: true, groups: [security] }
      quorum: 2
      timeout: 1h
      reminder: 20m
  - action: { operation: grant }
  - wait: { until: expiry }
  - action: { operation: revoke }
  - notify: { to: [requester], message: 'revoked {integration}' }
";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).single().unwrap_or_default()
}

fn person(kind: PrincipalKind, owner: Option<&str>) -> Principal {
    Principal {
        id: String::new(),
        kind,
        name: String::new(),
        email: None,
        slack_user_id: None,
        roles: Vec::new(),
        owner: owner.map(str::to_owned),
        disabled: false,
        person: None,
    }
}

fn directory() -> Directory {
    let mut principals = BTreeMap::new();
    for id in ["alice", "bob", "carol", "dave", "erin"] {
        principals.insert(id.to_owned(), person(PrincipalKind::Person, None));
    }
    principals.insert("ci".to_owned(), person(PrincipalKind::Service, Some("carol")));
    let mut groups = BTreeMap::new();
    groups.insert(
        "security".to_owned(),
        Group { members: vec!["carol".to_owned(), "dave".to_owned(), "alice".to_owned()], description: String::new() },
    );
    let mut integrations = BTreeMap::new();
    integrations.insert(
        "crm".to_owned(),
        Integration {
            name: String::new(),
            app: "crm".to_owned(),
            environment: "production".to_owned(),
            owner: "bob".to_owned(),
            description: String::new(),
            scopes: vec![ScopeDef {
                name: "write".to_owned(),
                risk: tollgate_workflows::Risk::High,
                description: String::new(),
            }],
            connector: ConnectorConfig::Manual(ManualSettings {
                operator: "erin".to_owned(),
                instructions: None,
                remind_every: None,
            }),
        },
    );
    Directory::new(principals, groups, integrations).expect("valid directory")
}

struct Fixture {
    def: WorkflowDefinition,
    dir: Directory,
    ids: IdSource,
}

impl Fixture {
    fn new() -> Self {
        Self {
            def: parse_definition("test.yaml", WORKFLOW).expect("valid workflow"),
            dir: directory(),
            ids: IdSource::random(),
        }
    }

    fn ctx(&self, now: DateTime<Utc>) -> Context<'_> {
        Context {
            definition: &self.def,
            directory: &self.dir,
            integration: &self.dir.integrations["crm"],
            now,
            expiry_warning: Some(Duration::minutes(15)),
            ids: &self.ids,
        }
    }

    fn start(&self, requester: &str) -> RunState {
        let req = NewRequest {
            id: RunId::new(),
            requester: requester.to_owned(),
            kind: WorkflowKind::Grant,
            integration: "crm".to_owned(),
            scopes: vec!["write".to_owned()],
            duration: Some(tollgate_workflows::Duration::from_secs(7200)),
            justification: "incident 42".to_owned(),
            grant: None,
            channel: "api".to_owned(),
            break_glass: false,
        };
        let out = start(req, false, &self.ctx(t0())).expect("request accepted");
        fold(None, out)
    }
}

/// Applies an outcome to a state the way the store would.
fn fold(prev: Option<RunState>, out: Outcome) -> RunState {
    let mut votes = prev.map(|p| p.votes).unwrap_or_default();
    votes.extend(out.votes);
    let mut run = out.run;
    run.version += 1;
    RunState { run, votes, grant: out.grant }
}

fn decide(
    f: &Fixture,
    state: &RunState,
    who: &str,
    d: Decision,
    at: DateTime<Utc>,
) -> Result<RunState, TransitionError> {
    let cmd = Command::Decide(Cast::new(who, d, None, "api"));
    apply(state.clone(), cmd, &f.ctx(at)).map(|o| fold(Some(state.clone()), o.expect("not stale")))
}

fn pending_action(state: &RunState) -> Option<(OutboxId, Operation)> {
    match state.run.step {
        StepState::Action { outbox_id, operation, .. } => Some((outbox_id, operation)),
        _ => None,
    }
}

fn grant_calls(out: &Outcome) -> usize {
    out.effects
        .iter()
        .filter(|e| matches!(e, Effect::Enqueue(item) if matches!(&item.payload, OutboxPayload::Action { action } if action.operation == Operation::Grant)))
        .count()
}

#[test]
fn start_waits_for_approval_with_deadline_reminder_and_notification() {
    let f = Fixture::new();
    let req = NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind: WorkflowKind::Grant,
        integration: "crm".to_owned(),
        scopes: vec!["write".to_owned()],
        duration: None,
        justification: "x".to_owned(),
        grant: None,
        channel: "api".to_owned(),
        break_glass: false,
    };
    let out = start(req, false, &f.ctx(t0())).expect("accepted");
    assert_eq!(out.run.status, RunStatus::AwaitingApproval);
    assert_eq!(out.run.duration_secs, 3600, "default duration applies");
    assert_eq!(out.run.workflow_version, 3);
    let timers: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::ScheduleTimer { kind, due_at } => Some((*kind, *due_at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        timers,
        vec![
            (TimerKind::ApprovalDeadline, t0() + Duration::hours(1)),
            (TimerKind::Reminder, t0() + Duration::minutes(20))
        ]
    );
    let notified: Vec<String> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Enqueue(item) => match &item.payload {
                OutboxPayload::Notify { notification, .. } => {
                    Some(notification.recipients.iter().map(|r| r.principal.clone()).collect::<Vec<_>>())
                }
                OutboxPayload::Action { .. } => None,
            },
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(notified, ["bob", "carol", "dave"], "the requester (a security member) is not asked");
    let events: Vec<&str> = out.audit.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(events, ["request_created", "approval_requested"]);
}

#[test]
fn requests_are_validated_before_anything_happens() {
    let f = Fixture::new();
    let base = NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind: WorkflowKind::Grant,
        integration: "crm".to_owned(),
        scopes: vec!["write".to_owned()],
        duration: None,
        justification: "x".to_owned(),
        grant: None,
        channel: "api".to_owned(),
        break_glass: false,
    };
    let code = |r: NewRequest| start(r, false, &f.ctx(t0())).map(|_| ()).map_err(|e| e.code());
    assert_eq!(code(NewRequest { scopes: vec!["admin".to_owned()], ..base.clone() }), Err("invalid_scope"));
    assert_eq!(code(NewRequest { scopes: vec![], ..base.clone() }), Err("invalid_scope"));
    assert_eq!(
        code(NewRequest { duration: Some(tollgate_workflows::Duration::from_secs(9 * 3600)), ..base.clone() }),
        Err("duration_too_long")
    );
    assert_eq!(code(NewRequest { justification: "  ".to_owned(), ..base.clone() }), Err("justification_required"));
    assert_eq!(code(NewRequest { kind: WorkflowKind::Renew, ..base.clone() }), Err("invalid_grant"));
    assert_eq!(code(base), Ok(()));
}

#[test]
fn quorum_counts_distinct_eligible_people_and_excludes_the_requester() {
    let f = Fixture::new();
    let s = f.start("alice");
    assert_eq!(decide(&f, &s, "alice", Decision::Approve, t0()).unwrap_err(), TransitionError::SelfApproval);
    assert_eq!(decide(&f, &s, "erin", Decision::Approve, t0()).unwrap_err(), TransitionError::NotVisible);
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("owner approves");
    assert_eq!(s.run.status, RunStatus::AwaitingApproval, "quorum is 2");
    let again = Command::Decide(Cast::new("bob", Decision::Approve, None, "api"));
    assert!(matches!(apply(s.clone(), again, &f.ctx(t0())), Ok(None)), "a repeated decision records nothing");
    assert!(matches!(decide(&f, &s, "bob", Decision::Deny, t0()), Err(TransitionError::AlreadyVoted(_))));
    let cmd = Command::Decide(Cast::new("carol", Decision::Approve, None, "api"));
    let out = apply(s.clone(), cmd, &f.ctx(t0())).expect("ok").expect("not stale");
    assert_eq!(grant_calls(&out), 1);
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Provisioning);
    assert_eq!(s.grant.as_ref().map(|g| g.status), Some(GrantStatus::Provisioning));
    assert!(matches!(
        decide(&f, &s, "dave", Decision::Approve, t0()),
        Err(TransitionError::AlreadyDecided(RunStatus::Provisioning))
    ));
}

#[test]
fn a_service_cannot_be_approved_by_its_accountable_person() {
    let f = Fixture::new();
    let s = f.start("ci");
    assert_eq!(decide(&f, &s, "carol", Decision::Approve, t0()).unwrap_err(), TransitionError::SelfApproval);
    assert!(decide(&f, &s, "dave", Decision::Approve, t0()).is_ok());
}

#[test]
fn a_deny_ends_the_run_and_later_decisions_say_why() {
    let f = Fixture::new();
    let s = f.start("alice");
    let s = decide(&f, &s, "bob", Decision::Deny, t0()).expect("deny");
    assert_eq!(s.run.status, RunStatus::Denied);
    assert_eq!(decide(&f, &s, "carol", Decision::Approve, t0()).unwrap_err().code(), "already_decided");
}

#[test]
fn the_deadline_expires_the_request_and_decisions_after_it_are_refused() {
    let f = Fixture::new();
    let s = f.start("alice");
    let late = t0() + Duration::hours(1);
    assert_eq!(decide(&f, &s, "bob", Decision::Approve, late).unwrap_err(), TransitionError::Expired);
    let fired = Command::TimerFired { kind: TimerKind::ApprovalDeadline, step_index: 0 };
    let out = apply(s.clone(), fired, &f.ctx(late)).expect("ok").expect("not stale");
    assert_eq!(grant_calls(&out), 0);
    assert!(out.effects.contains(&Effect::ClearTimers));
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Expired);
    assert_eq!(decide(&f, &s, "bob", Decision::Approve, late).unwrap_err().code(), "expired");
    let stale = Command::TimerFired { kind: TimerKind::Reminder, step_index: 0 };
    assert!(apply(s, stale, &f.ctx(late)).expect("ok").is_none(), "timers of a finished run are stale");
}

#[test]
fn cancel_is_for_the_requester_or_an_admin_while_pending() {
    let f = Fixture::new();
    let s = f.start("alice");
    let cancel =
        |who: &str, admin: bool| Command::Cancel { actor: who.to_owned(), is_admin: admin, channel: "api".to_owned() };
    assert_eq!(apply(s.clone(), cancel("bob", false), &f.ctx(t0())).unwrap_err(), TransitionError::NotAllowed);
    let s2 = fold(Some(s.clone()), apply(s.clone(), cancel("erin", true), &f.ctx(t0())).expect("ok").expect("x"));
    assert_eq!(s2.run.status, RunStatus::Cancelled);
    let s = fold(Some(s.clone()), apply(s, cancel("alice", false), &f.ctx(t0())).expect("ok").expect("x"));
    assert_eq!(s.run.status, RunStatus::Cancelled);
    assert_eq!(decide(&f, &s, "bob", Decision::Approve, t0()).unwrap_err().code(), "cancelled");
}

#[test]
fn full_lifecycle_grants_waits_for_expiry_and_revokes_once() {
    let f = Fixture::new();
    let s = f.start("alice");
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("1");
    let s = decide(&f, &s, "dave", Decision::Approve, t0()).expect("2");
    let (outbox, op) = pending_action(&s).expect("grant pending");
    assert_eq!(op, Operation::Grant);
    let granted_at = t0() + Duration::seconds(1);
    let ok = |id| Command::ActionSucceeded {
        outbox_id: id,
        reference: Some("ext-1".to_owned()),
        at: None,
        actor: "system".to_owned(),
        channel: "engine".to_owned(),
    };
    let out = apply(s.clone(), ok(outbox), &f.ctx(granted_at)).expect("ok").expect("x");
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Active);
    let grant = s.grant.clone().expect("grant");
    assert_eq!(grant.status, GrantStatus::Active);
    assert_eq!(grant.expires_at, Some(granted_at + Duration::hours(2)));
    assert_eq!(s.run.step, StepState::Wait { until: granted_at + Duration::hours(2), expiry: true });
    // A duplicate result (the dispatcher retried after a crash) is stale, not a second grant.
    assert!(apply(s.clone(), ok(outbox), &f.ctx(granted_at)).expect("ok").is_none());
    let expiry = granted_at + Duration::hours(2);
    let out = apply(s.clone(), Command::TimerFired { kind: TimerKind::Wait, step_index: 2 }, &f.ctx(expiry))
        .expect("ok")
        .expect("x");
    assert!(out.audit.iter().any(|e| e.event_type == "access_expired"));
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Revoking);
    let (revoke, op) = pending_action(&s).expect("revoke pending");
    assert_eq!(op, Operation::Revoke);
    let out = apply(s.clone(), ok(revoke), &f.ctx(expiry)).expect("ok").expect("x");
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Completed);
    assert_eq!(s.grant.map(|g| g.status), Some(GrantStatus::Revoked));
}

#[test]
fn a_revocation_that_keeps_failing_is_never_shown_as_revoked() {
    let f = Fixture::new();
    let s = f.start("alice");
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("1");
    let s = decide(&f, &s, "dave", Decision::Approve, t0()).expect("2");
    let (outbox, _) = pending_action(&s).expect("grant");
    let ok = |id| Command::ActionSucceeded {
        outbox_id: id,
        reference: None,
        at: None,
        actor: "system".to_owned(),
        channel: "engine".to_owned(),
    };
    let s = fold(Some(s.clone()), apply(s, ok(outbox), &f.ctx(t0())).expect("ok").expect("x"));
    let s = fold(
        Some(s.clone()),
        apply(s, Command::RevokeNow { actor: "alice".to_owned(), channel: "api".to_owned() }, &f.ctx(t0()))
            .expect("ok")
            .expect("x"),
    );
    let (revoke, _) = pending_action(&s).expect("revoke");
    let failed = Command::ActionFailed {
        outbox_id: revoke,
        error: "503".to_owned(),
        actor: "system".to_owned(),
        channel: "engine".to_owned(),
    };
    let out = apply(s.clone(), failed, &f.ctx(t0())).expect("ok").expect("x");
    assert!(out.audit.iter().any(|e| e.event_type == "revoke_failed"));
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Failed);
    assert_eq!(s.grant.as_ref().map(|g| g.status), Some(GrantStatus::RevokeFailed));
    assert_eq!(pending_action(&s).map(|p| p.0), Some(revoke), "the revoke step stays pending");
    // The background retry finally succeeds.
    let s = fold(Some(s.clone()), apply(s, ok(revoke), &f.ctx(t0())).expect("ok").expect("x"));
    assert_eq!(s.grant.map(|g| g.status), Some(GrantStatus::Revoked));
    assert_eq!(s.run.status, RunStatus::Completed);
}

#[derive(Debug, Clone)]
enum Op {
    Decide(usize, bool),
    Cancel(usize),
    Deadline,
    Reminder,
    ActionOk,
    ActionFailed,
    Expire,
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, any::<bool>()).prop_map(|(w, a)| Op::Decide(w, a)),
        1 => (0..6usize).prop_map(Op::Cancel),
        1 => Just(Op::Deadline),
        1 => Just(Op::Reminder),
        2 => Just(Op::ActionOk),
        1 => Just(Op::ActionFailed),
        1 => Just(Op::Expire),
        1 => (0..7200i64).prop_map(Op::Advance),
    ]
}

const WHO: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "ci"];

proptest! {
    /// Whatever happens, in whatever order: no grant call before two distinct eligible people
    /// other than the requester approved; at most one grant call per run; a final run refuses
    /// every decision; the audit log records every change.
    #[test]
    fn approval_invariants_hold_for_any_command_sequence(ops in proptest::collection::vec(op(), 1..40)) {
        let f = Fixture::new();
        let mut s = f.start("alice");
        let mut now = t0();
        let mut grants = 0;
        let mut approvers: Vec<&str> = Vec::new();
        for o in ops {
            let cmd = match o {
                Op::Decide(w, approve) => Command::Decide(Cast::new(WHO[w], if approve { Decision::Approve } else { Decision::Deny }, None, "api")),
                Op::Cancel(w) => Command::Cancel { actor: WHO[w].to_owned(), is_admin: false, channel: "api".to_owned() },
                Op::Deadline => Command::TimerFired { kind: TimerKind::ApprovalDeadline, step_index: s.run.step_index },
                Op::Reminder => Command::TimerFired { kind: TimerKind::Reminder, step_index: s.run.step_index },
                Op::Expire => Command::TimerFired { kind: TimerKind::Wait, step_index: s.run.step_index },
                Op::ActionOk | Op::ActionFailed => match pending_action(&s) {
                    Some((id, _)) if matches!(o, Op::ActionOk) => Command::ActionSucceeded { outbox_id: id, reference: None, at: None, actor: "system".to_owned(), channel: "engine".to_owned() },
                    Some((id, _)) => Command::ActionFailed { outbox_id: id, error: "x".to_owned(), actor: "system".to_owned(), channel: "engine".to_owned() },
                    None => continue,
                },
                Op::Advance(secs) => {
                    now += Duration::seconds(secs);
                    continue;
                }
            };
            let was_final = s.run.status.is_final();
            let is_decision = matches!(cmd, Command::Decide(_));
            let actor = match &cmd { Command::Decide(Cast { actor, decision: Decision::Approve, .. }) => Some(actor.clone()), _ => None };
            match apply(s.clone(), cmd, &f.ctx(now)) {
                Ok(Some(out)) => {
                    prop_assert!(!(was_final && is_decision), "a final run accepted a decision");
                    prop_assert!(!out.audit.is_empty(), "a change without an audit record");
                    if let Some(a) = actor {
                        prop_assert!(a != "alice", "self-approval accepted");
                        prop_assert!(["bob", "carol", "dave"].contains(&a.as_str()), "ineligible approver {a}");
                        prop_assert!(!approvers.contains(&a.as_str()), "double vote by {a}");
                        approvers.push(WHO.iter().find(|w| **w == a).copied().unwrap_or("?"));
                    }
                    let calls = grant_calls(&out);
                    if calls > 0 {
                        prop_assert!(approvers.len() >= 2, "grant before quorum: {approvers:?}");
                    }
                    grants += calls;
                    s = fold(Some(s), out);
                }
                Ok(None) => {}
                Err(_) => {}
            }
            prop_assert!(grants <= 1, "more than one grant call");
        }
    }
}

#[test]
fn holders_are_warned_before_their_access_expires() {
    let f = Fixture::new();
    let s = f.start("alice");
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("1");
    let s = decide(&f, &s, "dave", Decision::Approve, t0()).expect("2");
    let (outbox, _) = pending_action(&s).expect("grant");
    let ok = Command::ActionSucceeded {
        outbox_id: outbox,
        reference: None,
        at: None,
        actor: "system".to_owned(),
        channel: "engine".to_owned(),
    };
    let out = apply(s.clone(), ok, &f.ctx(t0())).expect("ok").expect("x");
    let expiry = t0() + Duration::hours(2);
    assert!(
        out.effects.contains(&Effect::ScheduleTimer {
            kind: TimerKind::ExpiryWarning,
            due_at: expiry - Duration::minutes(15)
        })
    );
    let s = fold(Some(s), out);
    let warn = Command::TimerFired { kind: TimerKind::ExpiryWarning, step_index: s.run.step_index };
    let out = apply(s.clone(), warn, &f.ctx(expiry - Duration::minutes(15))).expect("ok").expect("not stale");
    assert_eq!(out.run.status, RunStatus::Active, "a warning changes nothing but tells the holder");
    assert!(out.audit.iter().any(|e| e.event_type == "access_expiring"));
    let warned: Vec<(String, Vec<String>)> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Enqueue(item) => match &item.payload {
                OutboxPayload::Notify { notification, .. } => Some((
                    notification.event.clone(),
                    notification.recipients.iter().map(|r| r.principal.clone()).collect(),
                )),
                OutboxPayload::Action { .. } => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(warned, vec![("expiring".to_owned(), vec!["alice".to_owned()])]);
}

#[test]
fn a_bystander_learns_nothing_of_a_request_not_even_how_it_ended() {
    let f = Fixture::new();
    let s = f.start("alice");
    assert_eq!(decide(&f, &s, "erin", Decision::Deny, t0()).unwrap_err(), TransitionError::NotVisible);
    let mut cancelled = s.clone();
    cancelled.run.status = RunStatus::Cancelled;
    assert_eq!(decide(&f, &cancelled, "erin", Decision::Approve, t0()).unwrap_err(), TransitionError::NotVisible);
    assert_eq!(decide(&f, &cancelled, "bob", Decision::Approve, t0()).unwrap_err(), TransitionError::Cancelled);
    let refusal = refusal_event(&s.run, "erin", "approve", "api", &TransitionError::NotVisible);
    assert_eq!(refusal.details["reason"], "not_visible", "the evidence says why");
    assert_eq!(TransitionError::NotVisible.code(), "not_found");
}

#[test]
fn a_decision_cast_on_another_step_is_refused_and_records_nothing() {
    let f = Fixture::new();
    let s = f.start("alice");
    let cast = |step| {
        Command::Decide(Cast {
            origin: serde_json::json!({ "slack_user_id": "U0BOB" }),
            step: Some(step),
            ..Cast::new("bob", Decision::Approve, None, "slack")
        })
    };
    let stale = apply(s.clone(), cast(s.run.step_index + 1), &f.ctx(t0()));
    assert_eq!(stale.unwrap_err(), TransitionError::StepOver);
    let out = apply(s.clone(), cast(s.run.step_index), &f.ctx(t0())).expect("ok").expect("not stale");
    let recorded = out.audit.iter().find(|e| e.event_type == "approval_recorded").expect("audited");
    assert_eq!(recorded.details["origin"]["slack_user_id"], "U0BOB", "channel evidence is kept");
}

#[test]
fn an_escalation_widens_the_approvers_and_asks_only_the_new_ones() {
    let yaml = WORKFLOW.replace(
        "      reminder: 20m\n",
        "      reminder: 20m\n      escalation: { after: 30m, to: { users: [erin] } }\n",
    );
    let f = Fixture {
        def: parse_definition("test.yaml", &yaml).expect("valid workflow"),
        dir: directory(),
        ids: IdSource::random(),
    };
    let s = f.start("alice");
    assert!(matches!(decide(&f, &s, "erin", Decision::Approve, t0()), Err(TransitionError::NotAnApprover(_))));
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("owner approves");

    let at = t0() + Duration::minutes(30);
    let fired = Command::TimerFired { kind: TimerKind::Escalation, step_index: 0 };
    let out = apply(s.clone(), fired.clone(), &f.ctx(at)).expect("ok").expect("not stale");
    let escalated = out.audit.iter().find(|e| e.event_type == "approval_escalated").expect("audited");
    assert_eq!(escalated.details["approvers"], serde_json::json!(["erin"]), "only the new approver");
    let asked: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Enqueue(item) => match &item.payload {
                crate::effect::OutboxPayload::Notify { notification, .. } => Some(notification.clone()),
                crate::effect::OutboxPayload::Action { .. } => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].event, "approval_escalated");
    assert_eq!(asked[0].recipients.iter().map(|r| r.principal.as_str()).collect::<Vec<_>>(), ["erin"]);
    let s = fold(Some(s), out);
    assert!(matches!(s.run.step, StepState::Approval { escalated: true, .. }));
    assert!(apply(s.clone(), fired, &f.ctx(at)).expect("ok").is_none(), "escalates once");

    let s = decide(&f, &s, "erin", Decision::Approve, at).expect("erin may approve now");
    assert_eq!(s.run.status, RunStatus::Provisioning, "bob + erin meet the quorum");
}

#[test]
fn a_repeated_decision_succeeds_without_effect_and_a_changed_one_is_refused() {
    let f = Fixture::new();
    let s = decide(&f, &f.start("alice"), "bob", Decision::Approve, t0()).expect("bob");
    let s = decide(&f, &s, "carol", Decision::Approve, t0()).expect("carol completes the quorum");
    assert_eq!(s.run.status, RunStatus::Provisioning);
    let later = t0() + Duration::minutes(5);
    let cast = |who: &str, d: Decision, step: Option<u32>| {
        let mut c = Cast::new(who, d, None, "slack");
        c.step = step;
        Command::Decide(c)
    };
    // (command, expected): a retry is Ok(None) whatever the run did since; anything else is judged
    // as a new decision.
    let table: [(Command, Result<Option<()>, &str>); 6] = [
        (cast("bob", Decision::Approve, None), Ok(None)),
        (cast("carol", Decision::Approve, Some(0)), Ok(None)),
        (cast("bob", Decision::Deny, None), Err("already_decided")),
        (cast("bob", Decision::Approve, Some(1)), Err("already_decided")),
        (cast("dave", Decision::Approve, None), Err("already_decided")),
        // Principal ids are case-sensitive: "Bob" is nobody, and nobody learns how it ended.
        (cast("Bob", Decision::Approve, None), Err("not_found")),
    ];
    for (cmd, want) in table {
        let got = apply(s.clone(), cmd.clone(), &f.ctx(later)).map(|o| o.map(drop)).map_err(|e| e.code());
        assert_eq!(got, want, "{cmd:?}");
        if let Command::Decide(c) = &cmd {
            assert_eq!(super::is_retry(&s.votes, c), want == Ok(None), "{cmd:?}");
        }
    }
}

#[test]
fn no_requested_duration_passes_the_global_bound_whatever_the_workflow_says() {
    let mut f = Fixture::new();
    // A workflow that states no maximum (as renew and rotate workflows may).
    f.def.parameters.max_duration = None;
    let ask = |secs: u64| NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind: WorkflowKind::Grant,
        integration: "crm".to_owned(),
        scopes: vec!["write".to_owned()],
        duration: Some(tollgate_workflows::Duration::from_secs(secs)),
        justification: "x".to_owned(),
        grant: None,
        channel: "api".to_owned(),
        break_glass: false,
    };
    let max = tollgate_workflows::MAX_DURATION.as_std().as_secs();
    let three_hundred_thousand_years = 300_000 * 365 * 24 * 3600;
    for secs in [max + 1, three_hundred_thousand_years, u64::MAX / 2] {
        let err = start(ask(secs), false, &f.ctx(t0())).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "duration_too_long", "{secs} s");
    }
    assert!(start(ask(max), false, &f.ctx(t0())).is_ok(), "the bound itself is allowed");
}

#[test]
fn time_beyond_the_calendar_is_a_typed_error_never_a_panic() {
    let f = Fixture::new();
    // The approval deadline (now + 1 h) does not exist.
    let end = DateTime::<Utc>::MAX_UTC - Duration::minutes(30);
    let req = NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind: WorkflowKind::Grant,
        integration: "crm".to_owned(),
        scopes: vec!["write".to_owned()],
        duration: Some(tollgate_workflows::Duration::from_secs(3600)),
        justification: "x".to_owned(),
        grant: None,
        channel: "api".to_owned(),
        break_glass: false,
    };
    let err = start(req, false, &f.ctx(end)).map(|_| ()).unwrap_err();
    assert!(matches!(err, TransitionError::TimeOutOfRange), "{err:?}");
    assert_eq!(err.code(), "time_out_of_range");

    // A run whose grant call succeeds at the end of time: its expiry cannot be computed.
    let state = f.start("alice");
    let state = decide(&f, &state, "carol", Decision::Approve, t0()).unwrap();
    let state = decide(&f, &state, "dave", Decision::Approve, t0()).unwrap();
    let (outbox_id, op) = pending_action(&state).expect("grant call pending");
    assert_eq!(op, Operation::Grant);
    let done = Command::ActionSucceeded {
        outbox_id,
        reference: None,
        at: None,
        actor: "system".to_owned(),
        channel: "engine".to_owned(),
    };
    let err = apply(state, done, &f.ctx(end)).map(|_| ()).unwrap_err();
    assert!(matches!(err, TransitionError::TimeOutOfRange), "{err:?}");
}

#[test]
fn a_transition_is_a_pure_function_of_state_command_and_context() {
    // Two fixtures whose id sources share a seed: the same request and decisions give the same
    // outcome, ids included.
    let seed = uuid::Uuid::new_v4();
    let run = |f: &mut Fixture| {
        f.ids = IdSource::seeded(seed);
        let req = NewRequest {
            id: RunId(uuid::Uuid::nil()),
            requester: "alice".to_owned(),
            kind: WorkflowKind::Grant,
            integration: "crm".to_owned(),
            scopes: vec!["write".to_owned()],
            duration: Some(tollgate_workflows::Duration::from_secs(3600)),
            justification: "x".to_owned(),
            grant: None,
            channel: "api".to_owned(),
            break_glass: false,
        };
        let started = start(req, false, &f.ctx(t0())).unwrap();
        let state = fold(None, started.clone());
        let state = decide(f, &state, "carol", Decision::Approve, t0()).unwrap();
        let approved = apply(state, Command::Decide(Cast::new("dave", Decision::Approve, None, "api")), &f.ctx(t0()));
        format!("{started:?}{approved:?}")
    };
    let (mut a, mut b) = (Fixture::new(), Fixture::new());
    let (first, second) = (run(&mut a), run(&mut b));
    assert_eq!(first, second);
    // And the ids it made are distinct, time-ordered UUIDv7s.
    let ids = IdSource::seeded(seed);
    let (x, y): (OutboxId, OutboxId) = (ids.next(t0()), ids.next(t0() + Duration::milliseconds(1)));
    assert_ne!(x, y);
    assert_eq!(x.0.get_version_num(), 7);
    assert!(x < y);
}

/// alice's active grant of `write` on crm, made at [`t0`] for an hour.
fn alices_grant() -> Grant {
    Grant {
        id: GrantId::new(),
        run_id: RunId::new(),
        integration: "crm".to_owned(),
        principal: "alice".to_owned(),
        scopes: vec!["write".to_owned()],
        status: GrantStatus::Active,
        granted_at: Some(t0()),
        expires_at: Some(t0() + Duration::hours(1)),
        revoked_at: None,
        reference: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

#[test]
fn renew_rotate_and_revoke_act_on_the_grants_whole_scope_set() {
    let f = Fixture::new();
    let grant = alices_grant();
    let ask = |kind: WorkflowKind, scopes: &[&str]| NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind,
        integration: "crm".to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        duration: Some(tollgate_workflows::Duration::from_secs(3600)),
        justification: "x".to_owned(),
        grant: Some(grant.clone()),
        channel: "api".to_owned(),
        break_glass: false,
    };
    for kind in [WorkflowKind::Renew, WorkflowKind::Rotate, WorkflowKind::Revoke] {
        for scopes in [&[][..], &["write"], &["write", "write"]] {
            let out =
                start(ask(kind, scopes), false, &f.ctx(t0())).unwrap_or_else(|e| panic!("{kind} {scopes:?}: {e}"));
            assert_eq!(out.run.scopes, ["write"], "{kind} {scopes:?}: the grant's scopes, whatever was named");
        }
        // Wider (escalation past the grant workflow) or other (a revoke of less than was granted).
        for scopes in [&["admin"][..], &["write", "admin"], &["read"]] {
            let err = start(ask(kind, scopes), false, &f.ctx(t0())).map(|_| ()).unwrap_err();
            assert_eq!(err.code(), "scope_mismatch", "{kind} {scopes:?}");
            assert!(err.to_string().contains("[write]"), "{err}");
        }
    }
}

#[test]
fn access_shorter_than_a_second_is_refused() {
    let f = Fixture::new();
    let ask = |d: std::time::Duration| NewRequest {
        id: RunId::new(),
        requester: "alice".to_owned(),
        kind: WorkflowKind::Grant,
        integration: "crm".to_owned(),
        scopes: vec!["write".to_owned()],
        duration: Some(tollgate_workflows::Duration::from(d)),
        justification: "x".to_owned(),
        grant: None,
        channel: "api".to_owned(),
        break_glass: false,
    };
    for ms in [1, 999] {
        let err = start(ask(std::time::Duration::from_millis(ms)), false, &f.ctx(t0())).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "duration_too_short", "{ms} ms");
    }
    assert!(start(ask(super::MIN_DURATION), false, &f.ctx(t0())).is_ok(), "one second is allowed");
}

#[test]
fn renewals_stop_at_the_grants_lifetime() {
    let mut f = Fixture::new();
    let hours = |h: u64| tollgate_workflows::Duration::from_secs(h * 3600);
    f.def.parameters.max_duration = Some(hours(2));
    let grant = alices_grant();
    let renew = |f: &Fixture, hours_asked: u64, at: DateTime<Utc>| {
        let req = NewRequest {
            id: RunId::new(),
            requester: "alice".to_owned(),
            kind: WorkflowKind::Renew,
            integration: "crm".to_owned(),
            scopes: vec![],
            duration: Some(hours(hours_asked)),
            justification: "x".to_owned(),
            grant: Some(grant.clone()),
            channel: "api".to_owned(),
            break_glass: false,
        };
        start(req, false, &f.ctx(at)).map(|_| ()).map_err(|e| e.code())
    };
    // No max_lifetime: four times max_duration (8 h) from when the grant was made.
    assert_eq!(renew(&f, 2, t0() + Duration::hours(6)), Ok(()));
    assert_eq!(renew(&f, 2, t0() + Duration::hours(6) + Duration::seconds(1)), Err("lifetime_exceeded"));
    f.def.parameters.max_lifetime = Some(hours(3));
    assert_eq!(renew(&f, 2, t0() + Duration::minutes(30)), Ok(()));
    assert_eq!(renew(&f, 2, t0() + Duration::minutes(90)), Err("lifetime_exceeded"));
    assert_eq!(renew(&f, 1, t0() + Duration::minutes(90)), Ok(()));
}

#[test]
fn renewals_approved_late_are_cut_at_the_lifetimes_end() {
    let mut f = Fixture::new();
    f.def.parameters.max_duration = Some(tollgate_workflows::Duration::from_secs(2 * 3600));
    f.def.parameters.max_lifetime = Some(tollgate_workflows::Duration::from_secs(2 * 3600));
    let grant = alices_grant();
    let end = t0() + Duration::hours(2);
    let renewed = |secs: u64, at| super::advance::renewed_expiry(Some(&grant), secs, &f.ctx(at)).expect("in range");
    // Asked at t0 + 5 s for 1 h 59 m 50 s (it fitted), performed at t0 + 11 s: cut at the end.
    assert_eq!(renewed(7190, t0() + Duration::seconds(11)), end);
    // Performed in time, it gets what it asked for.
    assert_eq!(renewed(7190, t0() + Duration::seconds(5)), t0() + Duration::seconds(7195));
    // Never earlier than the current expiry.
    assert_eq!(renewed(60, t0()), t0() + Duration::hours(1));
}

fn notifications(out: &Outcome) -> Vec<(String, Vec<String>, String)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Enqueue(item) => match &item.payload {
                OutboxPayload::Notify { notification: n, .. } => {
                    Some((n.event.clone(), n.recipients.iter().map(|r| r.principal.clone()).collect(), n.text.clone()))
                }
                OutboxPayload::Action { .. } => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_manual_task_reaches_its_operator_and_reminds_them_until_it_is_resolved() {
    let f = Fixture::new();
    let s = f.start("alice");
    let s = decide(&f, &s, "bob", Decision::Approve, t0()).expect("1");
    let s = decide(&f, &s, "dave", Decision::Approve, t0()).expect("2");
    let (outbox, _) = pending_action(&s).expect("grant pending");
    let task = crate::ids::TaskId::new();
    let opened = |outbox_id| Command::TaskOpened {
        outbox_id,
        task_id: task,
        operator: "erin".to_owned(),
        instructions: "Grant scopes write to principal alice.".to_owned(),
        remind_every: Some(std::time::Duration::from_secs(3600)),
    };
    // A task for another (stale) call changes nothing.
    assert!(apply(s.clone(), opened(OutboxId::new()), &f.ctx(t0())).expect("ok").is_none());

    let out = apply(s.clone(), opened(outbox), &f.ctx(t0())).expect("ok").expect("not stale");
    let told = notifications(&out);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0].0.as_str(), told[0].1.clone()), ("task_assigned", vec!["erin".to_owned()]));
    assert!(told[0].2.contains("Grant scopes write") && told[0].2.contains(&format!("tollgate task complete {task}")));
    assert!(
        out.effects
            .contains(&Effect::ScheduleTimer { kind: TimerKind::TaskReminder, due_at: t0() + Duration::hours(1) })
    );
    let s = fold(Some(s), out);
    // Opening the same task again (a retried job) does not tell the operator twice.
    assert!(apply(s.clone(), opened(outbox), &f.ctx(t0())).expect("ok").is_none());

    let remind = |state: &RunState, at| {
        apply(state.clone(), Command::TimerFired { kind: TimerKind::TaskReminder, step_index: 1 }, &f.ctx(at))
            .expect("ok")
            .expect("not stale")
    };
    let mut s = s;
    for n in 1..=2 {
        let at = t0() + Duration::hours(n);
        let out = remind(&s, at);
        let told = notifications(&out);
        assert_eq!((told[0].0.as_str(), told[0].1.clone()), ("task_reminder", vec!["erin".to_owned()]));
        assert!(out.audit.iter().any(|e| e.event_type == "task_reminded" && e.details["reminder"] == n));
        assert!(
            out.effects
                .contains(&Effect::ScheduleTimer { kind: TimerKind::TaskReminder, due_at: at + Duration::hours(1) })
        );
        s = fold(Some(s), out);
    }

    // The operator confirms: the reminders stop, and a reminder already due is stale.
    let done = Command::ActionSucceeded {
        outbox_id: outbox,
        reference: None,
        at: None,
        actor: "erin".to_owned(),
        channel: "api".to_owned(),
    };
    let out = apply(s.clone(), done, &f.ctx(t0() + Duration::hours(3))).expect("ok").expect("x");
    assert!(out.effects.contains(&Effect::ClearTimersOf(TimerKind::TaskReminder)));
    let s = fold(Some(s), out);
    assert_eq!(s.run.status, RunStatus::Active);
    let late = Command::TimerFired { kind: TimerKind::TaskReminder, step_index: 1 };
    assert!(apply(s, late, &f.ctx(t0() + Duration::hours(3))).expect("ok").is_none());
}
