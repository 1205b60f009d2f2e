//! The rules every way into Tollgate must apply alike: who may see a request or a grant, who may
//! revoke a grant early, and the limits on what a new request or a decision may carry.
//!
//! The HTTP API, the Slack endpoints and the email approval pages each call these functions
//! rather than restating a rule, so that no path quietly misses one (the Slack request dialog
//! once accepted justifications of any length). They are pure: the caller loads the run, grant,
//! workflow definition and directory; nothing here reads the database or the clock, writes,
//! or logs. Approval rules proper (eligibility at decision time, quorum, self-approval) belong
//! to the transitions, which already are the one path every channel takes.

use std::fmt;

use std::collections::BTreeSet;

use tollgate_workflows::{
    ApprovalStep, Approvers, Duration, Operation, RequestFacts, Risk, Step, WorkflowDefinition, WorkflowKind,
};

use crate::directory::{Directory, Integration, Principal, Role};
use crate::run::{Decision, Grant, Run, StepState, Vote};

/// Longest justification a request may carry, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 2000;
/// Longest decision comment (a denial's reason), in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// Longest integration name a request may name, in characters.
pub const MAX_INTEGRATION_CHARS: usize = 200;
/// Most scopes one request may list.
pub const MAX_SCOPES: usize = 100;
/// Longest scope name, in characters.
pub const MAX_SCOPE_CHARS: usize = 200;

/// Someone asking to see or do something: a principal and its global roles, however it
/// authenticated (bearer token, Slack user, email link).
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// Principal id.
    pub id: &'a str,
    /// Global roles.
    pub roles: &'a [Role],
}

impl<'a> Viewer<'a> {
    /// A viewer from an id and its roles.
    #[must_use]
    pub fn new(id: &'a str, roles: &'a [Role]) -> Self {
        Self { id, roles }
    }

    /// The directory's principal as a viewer.
    #[must_use]
    pub fn of(principal: &'a Principal) -> Self {
        Self { id: &principal.id, roles: &principal.roles }
    }

    /// Holds the admin role.
    #[must_use]
    pub fn is_admin(self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Admins and auditors read everything: every request, grant and task, and the audit log.
    #[must_use]
    pub fn reads_all(self) -> bool {
        self.is_admin() || self.roles.contains(&Role::Auditor)
    }
}

/// Whether `viewer` may see `run`: its requester, an admin or auditor, or someone who may
/// approve at one of its approval steps.
///
/// Eligibility is judged against `directory` as it is now, over every approval step of the
/// pinned `definition` including the approvers an escalation would add, whether or not that
/// step was reached, skipped or escalated: whoever may be asked to decide may read the request
/// before being asked. A run whose definition or integration is no longer known is visible to
/// its requester and to admins and auditors only.
#[must_use]
pub fn may_view_request(
    viewer: Viewer<'_>,
    run: &Run,
    definition: Option<&WorkflowDefinition>,
    directory: &Directory,
) -> bool {
    if viewer.reads_all() || viewer.id == run.requester {
        return true;
    }
    let (Some(definition), Some(integration)) = (definition, directory.integrations.get(&run.integration)) else {
        return false;
    };
    let reviewers = definition.break_glass.iter().map(|b| &b.review).filter(|_| run.break_glass);
    definition
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Approval(a) => Some(a),
            _ => None,
        })
        .chain(reviewers)
        .any(|a| directory.is_eligible_approver(viewer.id, &a.approvers_at(true), integration, &run.requester))
}

/// Whether `viewer` may see `grant`: its holder, the owner of its integration, or an admin or
/// auditor.
#[must_use]
pub fn may_view_grant(viewer: Viewer<'_>, grant: &Grant, directory: &Directory) -> bool {
    viewer.reads_all() || viewer.id == grant.principal || owns_integration(viewer, grant, directory)
}

/// Whether `viewer` may end `grant` before it expires: its holder, the owner of its
/// integration, or an admin. Auditors may see every grant but revoke none; callers check
/// [`may_view_grant`] first, so that a grant the viewer may not see stays hidden rather than
/// forbidden.
#[must_use]
pub fn may_revoke_grant(viewer: Viewer<'_>, grant: &Grant, directory: &Directory) -> bool {
    viewer.is_admin() || viewer.id == grant.principal || owns_integration(viewer, grant, directory)
}

/// Whether `viewer` may read, export and verify the audit log: admins and auditors.
#[must_use]
pub fn may_read_audit(viewer: Viewer<'_>) -> bool {
    viewer.reads_all()
}

/// Whether `viewer` may see every detail of principal `id` in the directory (email, Slack id,
/// roles, groups, owner): admins and auditors of everyone, everyone of themselves. Others see
/// who a principal is (id, kind, name) and nothing to contact, impersonate or target it by.
#[must_use]
pub fn may_see_principal_details(viewer: Viewer<'_>, id: &str) -> bool {
    viewer.reads_all() || viewer.id == id
}

/// Whether `viewer` may create API tokens: admins only (for any principal). Tokens are
/// credentials; a token that could mint more of itself would spread without an owner's say.
#[must_use]
pub fn may_create_tokens(viewer: Viewer<'_>) -> bool {
    viewer.is_admin()
}

/// Whether `viewer` may see and revoke the API tokens of `owner`: admins every token, everyone
/// else their own (so a holder can revoke a token they leaked without waiting for an admin).
/// Callers answer as for a missing token when this is false.
#[must_use]
pub fn may_manage_token(viewer: Viewer<'_>, owner: &str) -> bool {
    may_manage_all_tokens(viewer) || viewer.id == owner
}

/// Whether `viewer` may see and revoke every principal's API tokens: admins.
#[must_use]
pub fn may_manage_all_tokens(viewer: Viewer<'_>) -> bool {
    viewer.is_admin()
}

/// Whether `viewer` may reload the directory and workflows (`POST /v1/admin/reload`): admins.
/// (`SIGHUP` is for whoever may signal the process: its operator.)
#[must_use]
pub fn may_reload_config(viewer: Viewer<'_>) -> bool {
    viewer.is_admin()
}

/// Whether `viewer` sees every manual task, not only those it must confirm itself.
#[must_use]
pub fn may_view_all_tasks(viewer: Viewer<'_>) -> bool {
    viewer.reads_all()
}

/// Whether `viewer` may record credentials in the inventory (create, import, update): admins.
#[must_use]
pub fn may_manage_credentials(viewer: Viewer<'_>) -> bool {
    viewer.is_admin()
}

/// Whether `viewer` sees every credential of the inventory: admins and auditors.
#[must_use]
pub fn may_view_all_credentials(viewer: Viewer<'_>) -> bool {
    viewer.reads_all()
}

/// Whether `viewer` may see a credential owned by `owner`: admins and auditors, and its owner.
/// Everyone else is told it does not exist.
#[must_use]
pub fn may_view_credential(viewer: Viewer<'_>, owner: &str) -> bool {
    may_view_all_credentials(viewer) || viewer.id == owner
}

fn owns_integration(viewer: Viewer<'_>, grant: &Grant, directory: &Directory) -> bool {
    directory.integrations.get(&grant.integration).is_some_and(|i| i.owner == viewer.id)
}

/// Who may still decide at an approval now: every enabled person `approvers` names for
/// `integration` ([`Directory::eligible_approvers`]) whom the decision path would let decide
/// ([`crate::transition::may_decide`], the one rule: not the requester nor the same person, and
/// no vote of theirs on this run yet). Sorted.
#[must_use]
pub fn undecided_approvers(
    directory: &Directory,
    integration: &Integration,
    approvers: &Approvers,
    requester: &str,
    votes: &[Vote],
) -> Vec<String> {
    directory
        .eligible_approvers(approvers, integration, requester)
        .into_iter()
        .filter(|a| crate::transition::may_decide(directory, integration, approvers, requester, votes, a).is_ok())
        .collect()
}

/// An approval a new request would reach that nobody could pass: fewer people may approve at
/// it than its quorum, even counting the approvers its escalation adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapprovable {
    /// Which approval: `steps[0] ("owner-or-security")`, `steps[2]`, or `break_glass.review`.
    pub step: String,
    /// Its quorum.
    pub quorum: u32,
    /// Who may approve at it, escalation included (fewer people than `quorum`; often nobody).
    pub eligible: Vec<String>,
}

/// The facts a request's step guards are tested against: the integration's environment and the
/// risk of each scope (a scope the integration does not define counts as high risk).
fn risks(integration: &Integration, scopes: &[String]) -> Vec<Risk> {
    scopes.iter().map(|s| integration.scope(s).map_or(Risk::High, |d| d.risk)).collect()
}

/// Whether a run on `definition` will perform step `index` (an approval step) once it gets
/// there: its guard admits the request, and it is not one of the approval steps a break-glass
/// run skips (those before the grant: access first, review after).
fn will_run(
    definition: &WorkflowDefinition,
    index: usize,
    step: &Step,
    facts: &RequestFacts<'_>,
    break_glass: bool,
) -> bool {
    let before_grant = || {
        definition
            .steps
            .iter()
            .position(|s| matches!(s, Step::Action(a) if a.operation == Operation::Grant))
            .is_none_or(|g| index < g)
    };
    step.guard().admits(facts) && !(break_glass && matches!(step, Step::Approval(_)) && before_grant())
}

/// How an approval step is named in messages: `steps[0] ("owner")`, or `steps[0]` without an id.
fn step_label(index: usize, a: &ApprovalStep) -> String {
    match &a.id {
        Some(id) => format!("steps[{index}] ({id:?})"),
        None => format!("steps[{index}]"),
    }
}

/// Checks, when a request is made, that every approval it will meet can be passed: each
/// approval step whose guard admits the request (for a break-glass request, those after the
/// grant, and the break-glass review) must have at least its quorum of distinct people who may
/// approve a request by `requester` ([`Directory::eligible_approvers`]: enabled people, never the
/// requester nor the same person), counting the approvers its escalation adds. Eligibility
/// depends only on the directory, the requester and the integration, all known now, so such a
/// request would otherwise wait for nobody until its deadline.
///
/// # Errors
/// The first approval that cannot be passed.
pub fn check_approvable(
    definition: &WorkflowDefinition,
    directory: &Directory,
    integration: &Integration,
    requester: &str,
    scopes: &[String],
    break_glass: bool,
) -> Result<(), Unapprovable> {
    let risks = risks(integration, scopes);
    let facts = RequestFacts { environment: &integration.environment, scope_risks: &risks };
    let steps = definition.steps.iter().enumerate().filter_map(|(i, step)| match step {
        Step::Approval(a) if will_run(definition, i, step, &facts, break_glass) => Some((step_label(i, a), a)),
        _ => None,
    });
    let review =
        definition.break_glass.as_ref().filter(|_| break_glass).map(|b| ("break_glass.review".to_owned(), &b.review));
    for (step, a) in steps.chain(review) {
        let eligible = directory.eligible_approvers(&a.approvers_at(true), integration, requester);
        let people: BTreeSet<&str> = eligible.iter().map(|id| directory.person_of(id)).collect();
        if (people.len() as u64) < u64::from(a.quorum) {
            return Err(Unapprovable { step, quorum: a.quorum, eligible });
        }
    }
    Ok(())
}

/// Where a request stands on one approval of its workflow, as the request view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalStanding {
    /// Who may decide at it: for the approval the request awaits, everyone who may decide now
    /// ([`undecided_approvers`], with the escalation's approvers once it escalated); for one
    /// still ahead, who would be asked (as things stand: without escalation, and without anyone
    /// who already decided on this run); empty once it is done.
    pub eligible: Vec<String>,
    /// Approvals still needed: its quorum less the approvals recorded at it; its whole quorum
    /// when still ahead; 0 once done.
    pub remaining: u32,
}

/// For each step of the run's pinned `definition` (by index), where the run stands on it if it
/// is an approval: done (steps the run has passed, approved or skipped), awaited (the current
/// approval, or — a break-glass run whose access is in place — its review, shown on its grant
/// step), or ahead (an approval step the run will reach, given its guards). `None` for other
/// steps, for approvals the run will skip, for everything not done once the run is over
/// (denied, expired, cancelled, failed), and for every step when the run's integration is no
/// longer in the directory.
#[must_use]
pub fn approval_standing(
    run: &Run,
    votes: &[Vote],
    definition: &WorkflowDefinition,
    directory: &Directory,
) -> Vec<Option<ApprovalStanding>> {
    let Some(integration) = directory.integrations.get(&run.integration) else {
        return vec![None; definition.steps.len()];
    };
    let risks = risks(integration, &run.scopes);
    let facts = RequestFacts { environment: &integration.environment, scope_risks: &risks };
    let awaited = crate::transition::pending_approval_in(run, definition);
    let at = run.step_index as usize;
    definition
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let approval = matches!(step, Step::Approval(_));
            if i < at {
                return approval.then(|| ApprovalStanding { eligible: Vec::new(), remaining: 0 });
            }
            if run.status.is_final() {
                return None;
            }
            if let (true, Some(a), StepState::Approval { escalated, .. }) = (i == at, awaited, &run.step) {
                let approvals =
                    votes.iter().filter(|v| v.step_index == run.step_index && v.decision == Decision::Approve);
                let approvals = u32::try_from(approvals.count()).unwrap_or(u32::MAX);
                return Some(ApprovalStanding {
                    eligible: undecided_approvers(
                        directory,
                        integration,
                        &a.approvers_at(*escalated),
                        &run.requester,
                        votes,
                    ),
                    remaining: a.quorum.saturating_sub(approvals),
                });
            }
            match step {
                Step::Approval(a) if will_run(definition, i, step, &facts, run.break_glass) => Some(ApprovalStanding {
                    eligible: undecided_approvers(directory, integration, &a.approvers, &run.requester, votes),
                    remaining: a.quorum,
                }),
                _ => None,
            }
        })
        .collect()
}

/// A field of a request or decision, as its callers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The request kind.
    Kind,
    /// The integration name.
    Integration,
    /// The scopes.
    Scopes,
    /// The requested duration.
    Duration,
    /// The justification.
    Justification,
    /// A decision's comment (a denial's reason).
    Comment,
}

impl Field {
    /// The field's name in the HTTP API's bodies.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Integration => "integration",
            Self::Scopes => "scopes",
            Self::Duration => "duration",
            Self::Justification => "justification",
            Self::Comment => "comment",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Input refused before it reaches the engine. The message starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not a request kind.
    #[error("kind: must be one of grant, renew, rotate, revoke")]
    UnknownKind,
    /// The duration does not parse, or is zero.
    #[error("duration: {0}")]
    InvalidDuration(String),
    /// A required field is empty.
    #[error("{0}: required")]
    Missing(Field),
    /// A text longer than its limit.
    #[error("{field}: at most {max} characters")]
    TooLong {
        /// The field.
        field: Field,
        /// Its limit, in characters.
        max: usize,
    },
    /// Control characters (other than line breaks and tabs), bidirectional overrides and
    /// isolates, or zero-width characters: text that would show differently from what it says.
    #[error("{field}: control, bidirectional-override and invisible (zero-width) characters are not allowed")]
    DeceptiveCharacters {
        /// The field.
        field: Field,
    },
    /// More scopes than [`MAX_SCOPES`].
    #[error("scopes: at most {max} scopes")]
    TooManyScopes {
        /// The limit.
        max: usize,
    },
    /// A scope name longer than [`MAX_SCOPE_CHARS`].
    #[error("scopes: each scope at most {max} characters")]
    ScopeTooLong {
        /// The limit, in characters.
        max: usize,
    },
}

impl InputError {
    /// The stable machine-readable code (the HTTP API's error code).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidDuration(_) => "invalid_duration",
            Self::UnknownKind
            | Self::Missing(_)
            | Self::TooLong { .. }
            | Self::DeceptiveCharacters { .. }
            | Self::TooManyScopes { .. }
            | Self::ScopeTooLong { .. } => "validation_failed",
        }
    }

    /// What to fix, as a sentence for a person at a form (Slack dialog, email page), without
    /// the field's API name.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            Self::TooLong { max, .. } => format!("Too long: at most {max} characters."),
            Self::DeceptiveCharacters { .. } => {
                "Remove control, bidirectional-override and invisible (zero-width) characters.".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The field at fault.
    #[must_use]
    pub fn field(&self) -> Field {
        match self {
            Self::UnknownKind => Field::Kind,
            Self::InvalidDuration(_) => Field::Duration,
            Self::Missing(field) | Self::TooLong { field, .. } | Self::DeceptiveCharacters { field } => *field,
            Self::TooManyScopes { .. } | Self::ScopeTooLong { .. } => Field::Scopes,
        }
    }
}

/// A new request's fields as a client sent them, before the engine sees them.
#[derive(Debug, Clone, Copy)]
pub struct RequestFields<'a> {
    /// `grant`, `renew`, `rotate` or `revoke`; `None` means `grant`.
    pub kind: Option<&'a str>,
    /// Integration name.
    pub integration: &'a str,
    /// Scopes (may be empty: renewals default to the grant's, and the engine refuses an empty
    /// list where it matters).
    pub scopes: &'a [String],
    /// Requested duration as written, e.g. `"2h"`; `None` for the workflow's default.
    pub duration: Option<&'a str>,
    /// Justification, measured as given.
    pub justification: &'a str,
}

/// What [`check_new_request`] parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedRequest {
    /// The kind.
    pub kind: WorkflowKind,
    /// The duration, if one was asked for.
    pub duration: Option<Duration>,
}

/// Checks a new request's fields against the limits every channel enforces, and parses its
/// kind and duration. The workflow's own rules (known scopes, maximum duration, required
/// justification, who may ask) are the engine's, checked when the request starts.
///
/// # Errors
/// The first problem found, in the order kind, duration, justification, integration, scopes.
pub fn check_new_request(fields: &RequestFields<'_>) -> Result<CheckedRequest, InputError> {
    let kind = match fields.kind {
        None => WorkflowKind::Grant,
        Some(k) => WorkflowKind::parse(k).ok_or(InputError::UnknownKind)?,
    };
    let duration = fields.duration.map(Duration::parse).transpose().map_err(InputError::InvalidDuration)?;
    check_text(Field::Justification, fields.justification, MAX_JUSTIFICATION_CHARS)?;
    if fields.integration.is_empty() {
        return Err(InputError::Missing(Field::Integration));
    }
    check_length(Field::Integration, fields.integration, MAX_INTEGRATION_CHARS)?;
    if fields.scopes.len() > MAX_SCOPES {
        return Err(InputError::TooManyScopes { max: MAX_SCOPES });
    }
    if fields.scopes.iter().any(|s| s.chars().count() > MAX_SCOPE_CHARS) {
        return Err(InputError::ScopeTooLong { max: MAX_SCOPE_CHARS });
    }
    Ok(CheckedRequest { kind, duration })
}

/// Checks a decision's comment (a denial's reason), whichever channel it came through.
///
/// # Errors
/// [`InputError::TooLong`] beyond [`MAX_COMMENT_CHARS`], [`InputError::DeceptiveCharacters`].
pub fn check_comment(comment: &str) -> Result<(), InputError> {
    check_text(Field::Comment, comment, MAX_COMMENT_CHARS)
}

/// Free text people write and others read (justifications, comments): within `max` characters,
/// and refused when it holds a character that would make it show differently from what it
/// says ([`is_deceptive`]). Refused, not cleaned: what is stored and audited is what was sent.
fn check_text(field: Field, text: &str, max: usize) -> Result<(), InputError> {
    check_length(field, text, max)?;
    if text.chars().any(is_deceptive) { Err(InputError::DeceptiveCharacters { field }) } else { Ok(()) }
}

/// The characters free text may not hold, as inclusive ranges: control characters other than
/// tab, line feed and carriage return (NUL included, which PostgreSQL cannot store), and the
/// invisible formatting characters of [`is_invisible_format`]. One list for the check and for
/// the OpenAPI document's `pattern`.
pub const DECEPTIVE_RANGES: [(char, char); 9] = [
    ('\u{0}', '\u{8}'),
    ('\u{B}', '\u{C}'),
    ('\u{E}', '\u{1F}'),
    ('\u{7F}', '\u{9F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2069}'),
    ('\u{FEFF}', '\u{FEFF}'),
];

/// Whether `c` may not appear in free text ([`DECEPTIVE_RANGES`]).
#[must_use]
pub fn is_deceptive(c: char) -> bool {
    DECEPTIVE_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Characters that change how the text around them shows without being seen themselves:
/// bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E–U+200F, U+202A–U+202E,
/// U+2066–U+2069), zero-width characters (U+200B–U+200D, U+2060–U+2064) and the BOM (U+FEFF).
#[must_use]
pub fn is_invisible_format(c: char) -> bool {
    !c.is_control() && is_deceptive(c)
}

/// Limits count characters, not bytes: a limit stated to a person must mean what they typed.
fn check_length(field: Field, text: &str, max: usize) -> Result<(), InputError> {
    if text.chars().count() > max { Err(InputError::TooLong { field, max }) } else { Ok(()) }
}

/// A JSON Schema `pattern` matching text without any character of [`DECEPTIVE_RANGES`].
#[must_use]
pub fn free_text_pattern() -> String {
    let class: String =
        DECEPTIVE_RANGES.iter().map(|&(lo, hi)| format!("\\u{:04X}-\\u{:04X}", u32::from(lo), u32::from(hi))).collect();
    format!("^[^{class}]*$")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use tollgate_workflows::parse_definition;

    use super::*;
    use crate::directory::{Group, Integration, PrincipalKind};
    use crate::ids::{GrantId, RunId};
    use crate::run::{GrantStatus, RunStatus, StepState};

    /// Two approval steps: the integration's owner first, then `security`, escalating to `oncall`.
    const WORKFLOW: &str = r"
key: policy-test
version: 1
kind: grant
parameters:
  max_duration: 8h
steps:
  - approval:
      approvers: { owner: true }
      timeout: 1h
  - approval:
      approvers: { groups: [security] }
      timeout: 1h
      escalation:
        after: 30m
        to: { groups: [oncall] }
  - action: { operation: grant }
  - wait: { until: expiry }
  - action: { operation: revoke }
";

    fn principal(kind: PrincipalKind, roles: &[Role], owner: Option<&str>, disabled: bool) -> Principal {
        Principal {
            id: String::new(),
            kind,
            name: String::new(),
            email: None,
            slack_user_id: None,
            roles: roles.to_vec(),
            owner: owner.map(str::to_owned),
            disabled,
            person: None,
        }
    }

    /// `bob` owns `crm`; `carol` is in `security`, `dave` in `oncall`; `ci` is alice's service;
    /// `mallory` is a disabled member of `security`; `erin` is nobody in particular.
    fn directory() -> Directory {
        let person = |roles: &[Role]| principal(PrincipalKind::Person, roles, None, false);
        let mut principals = BTreeMap::new();
        for id in ["alice", "bob", "carol", "dave", "erin"] {
            principals.insert(id.to_owned(), person(&[]));
        }
        principals.insert("admin".to_owned(), person(&[Role::Admin]));
        principals.insert("audrey".to_owned(), person(&[Role::Auditor]));
        principals.insert("mallory".to_owned(), principal(PrincipalKind::Person, &[], None, true));
        principals.insert("ci".to_owned(), principal(PrincipalKind::Service, &[], Some("alice"), false));
        let group = |members: &[&str]| Group {
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            description: String::new(),
        };
        let groups = BTreeMap::from([
            ("security".to_owned(), group(&["carol", "mallory", "alice"])),
            ("oncall".to_owned(), group(&["dave", "ci"])),
        ]);
        // Built from its configuration form so the test does not depend on connector types.
        let crm: Integration = serde_json::from_value(json!({
            "app": "crm", "environment": "production", "owner": "bob",
            "scopes": [{ "name": "write" }],
            "connector": { "type": "manual", "operator": "erin" },
        }))
        .expect("valid integration");
        let integrations = BTreeMap::from([("crm".to_owned(), crm)]);
        Directory::new(principals, groups, integrations).expect("valid directory")
    }

    fn run(requester: &str, integration: &str) -> Run {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).single().unwrap_or_default();
        Run {
            id: RunId::new(),
            kind: WorkflowKind::Grant,
            workflow_key: "policy-test".to_owned(),
            workflow_version: 1,
            status: RunStatus::AwaitingApproval,
            requester: requester.to_owned(),
            integration: integration.to_owned(),
            scopes: vec!["write".to_owned()],
            duration_secs: 3600,
            justification: "incident 42".to_owned(),
            grant_id: None,
            step_index: 0,
            step: StepState::Idle,
            version: 1,
            created_at: t0,
            updated_at: t0,
            reason: None,
            break_glass: false,
        }
    }

    fn grant(holder: &str, integration: &str) -> Grant {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).single().unwrap_or_default();
        Grant {
            id: GrantId::new(),
            run_id: RunId::new(),
            integration: integration.to_owned(),
            principal: holder.to_owned(),
            scopes: vec!["write".to_owned()],
            status: GrantStatus::Active,
            granted_at: Some(t0),
            expires_at: None,
            revoked_at: None,
            reference: None,
            created_at: t0,
            updated_at: t0,
        }
    }

    fn viewer<'a>(dir: &'a Directory, id: &'a str) -> Viewer<'a> {
        dir.principals.get(id).map_or(Viewer::new(id, &[]), Viewer::of)
    }

    #[test]
    fn a_request_is_visible_to_its_requester_readers_of_all_and_whoever_may_approve_it() {
        let dir = directory();
        let def = parse_definition("policy-test.yaml", WORKFLOW).expect("valid workflow");
        // (viewer, requester, integration, definition known, visible, why)
        let cases = [
            ("alice", "alice", "crm", true, true, "the requester"),
            ("admin", "alice", "crm", true, true, "an admin"),
            ("audrey", "alice", "crm", true, true, "an auditor"),
            ("bob", "alice", "crm", true, true, "the owner approves at step 0"),
            ("carol", "alice", "crm", true, true, "security approves at step 1, not reached yet"),
            ("dave", "alice", "crm", true, true, "oncall is added by an escalation that has not happened"),
            ("erin", "alice", "crm", true, false, "no part in the request"),
            ("mallory", "alice", "crm", true, false, "a disabled member of an approver group"),
            ("ci", "erin", "crm", true, false, "a service in an approver group never approves"),
            ("nobody", "alice", "crm", true, false, "unknown to the directory"),
            ("alice", "ci", "crm", true, false, "the person behind a requesting service cannot approve it"),
            ("carol", "ci", "crm", true, true, "an approver of a service's request"),
            ("bob", "alice", "gone", true, false, "the integration was removed"),
            ("bob", "alice", "crm", false, false, "the workflow version is no longer loaded"),
            ("alice", "alice", "gone", false, true, "the requester, even then"),
            ("audrey", "alice", "gone", false, true, "an auditor, even then"),
        ];
        for (who, requester, integration, known, visible, why) in cases {
            let run = run(requester, integration);
            let definition = known.then_some(&def);
            assert_eq!(may_view_request(viewer(&dir, who), &run, definition, &dir), visible, "{who}: {why}");
        }
    }

    #[test]
    fn a_grant_is_visible_to_its_holder_the_integration_owner_and_readers_of_all_but_only_some_may_revoke_it() {
        let dir = directory();
        // (viewer, holder, integration, may view, may revoke, why)
        let cases = [
            ("alice", "alice", "crm", true, true, "the holder"),
            ("bob", "alice", "crm", true, true, "the integration's owner"),
            ("admin", "alice", "crm", true, true, "an admin"),
            ("audrey", "alice", "crm", true, false, "an auditor reads but does not revoke"),
            ("carol", "alice", "crm", false, false, "an approver of the request that created it"),
            ("erin", "alice", "crm", false, false, "no part in it"),
            ("alice", "ci", "crm", false, false, "the person behind the holding service"),
            ("bob", "alice", "gone", false, false, "the owner of an integration since removed"),
            ("alice", "alice", "gone", true, true, "the holder, even then"),
        ];
        for (who, holder, integration, view, revoke, why) in cases {
            let grant = grant(holder, integration);
            let v = viewer(&dir, who);
            assert_eq!(may_view_grant(v, &grant, &dir), view, "view, {who}: {why}");
            assert_eq!(may_revoke_grant(v, &grant, &dir), revoke, "revoke, {who}: {why}");
        }
    }

    #[test]
    fn the_audit_log_and_every_task_are_for_admins_and_auditors() {
        let dir = directory();
        for (who, allowed) in [("admin", true), ("audrey", true), ("bob", false), ("erin", false), ("nobody", false)] {
            let v = viewer(&dir, who);
            assert_eq!(may_read_audit(v), allowed, "{who}");
            assert_eq!(may_view_all_tasks(v), allowed, "{who}");
        }
    }

    #[test]
    fn admins_create_tokens_and_everyone_manages_their_own() {
        let dir = directory();
        for (who, creates, own, others) in [
            ("admin", true, true, true),
            ("audrey", false, true, false),
            ("bob", false, true, false),
            ("nobody", false, true, false),
        ] {
            let v = viewer(&dir, who);
            assert_eq!(may_create_tokens(v), creates, "{who}");
            assert_eq!(may_manage_token(v, who), own, "{who}");
            assert_eq!(may_manage_token(v, "someone-else"), others, "{who}");
            assert_eq!(may_manage_all_tokens(v), others, "{who}");
            assert!(may_see_principal_details(v, who), "{who}");
            assert_eq!(may_see_principal_details(v, "someone-else"), matches!(who, "admin" | "audrey"), "{who}");
        }
    }

    #[test]
    fn new_requests_are_checked_field_by_field_against_the_limits() {
        let long = |n: usize| "é".repeat(n); // limits count characters, not bytes
        let (j2000, j2001, padded) = (long(2000), long(2001), format!("x{}", " ".repeat(2000)));
        let (i200, i201) = (long(200), long(201));
        let one = vec!["write".to_owned()];
        let (none, at_limit) = (Vec::new(), vec!["s".repeat(MAX_SCOPE_CHARS); MAX_SCOPES]);
        let (too_many, too_long) = (vec!["s".to_owned(); MAX_SCOPES + 1], vec!["s".repeat(MAX_SCOPE_CHARS + 1)]);
        let ok = RequestFields {
            kind: Some("grant"),
            integration: "crm",
            scopes: &one,
            duration: Some("2h"),
            justification: "why",
        };
        let invalid = |field| Some(("validation_failed", field));
        let cases = [
            ("valid", ok, None),
            ("kind defaults to grant", RequestFields { kind: None, ..ok }, None),
            ("no duration: the workflow's default", RequestFields { duration: None, ..ok }, None),
            ("no scopes: the engine decides", RequestFields { scopes: &none, ..ok }, None),
            ("no justification: the workflow decides", RequestFields { justification: "", ..ok }, None),
            ("unknown kind", RequestFields { kind: Some("steal"), ..ok }, invalid(Field::Kind)),
            (
                "unparsable duration",
                RequestFields { duration: Some("5 parsecs"), ..ok },
                Some(("invalid_duration", Field::Duration)),
            ),
            (
                "zero duration",
                RequestFields { duration: Some("0s"), ..ok },
                Some(("invalid_duration", Field::Duration)),
            ),
            ("justification at the limit", RequestFields { justification: &j2000, ..ok }, None),
            (
                "justification over the limit",
                RequestFields { justification: &j2001, ..ok },
                invalid(Field::Justification),
            ),
            (
                "justification measured as sent",
                RequestFields { justification: &padded, ..ok },
                invalid(Field::Justification),
            ),
            ("no integration", RequestFields { integration: "", ..ok }, invalid(Field::Integration)),
            ("integration at the limit", RequestFields { integration: &i200, ..ok }, None),
            ("integration over the limit", RequestFields { integration: &i201, ..ok }, invalid(Field::Integration)),
            ("scopes at both limits", RequestFields { scopes: &at_limit, ..ok }, None),
            ("too many scopes", RequestFields { scopes: &too_many, ..ok }, invalid(Field::Scopes)),
            ("scope name over the limit", RequestFields { scopes: &too_long, ..ok }, invalid(Field::Scopes)),
            (
                "the first problem wins",
                RequestFields { kind: Some("steal"), justification: &j2001, ..ok },
                invalid(Field::Kind),
            ),
        ];
        for (case, fields, expected) in cases {
            match (check_new_request(&fields), expected) {
                (Ok(_), None) => {}
                (Err(e), Some((code, field))) => {
                    assert_eq!((e.code(), e.field()), (code, field), "{case}: {e}");
                    assert!(e.to_string().starts_with(field.as_str()), "{case}: the message names the field: {e}");
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_checked_request_carries_its_parsed_kind_and_duration() {
        let scopes = vec!["write".to_owned()];
        let fields = RequestFields {
            kind: Some("renew"),
            integration: "crm",
            scopes: &scopes,
            duration: Some("90m"),
            justification: "longer",
        };
        let checked = check_new_request(&fields).expect("valid");
        assert_eq!(checked.kind, WorkflowKind::Renew);
        assert_eq!(checked.duration.map(Duration::as_secs), Some(5400));
        let err = check_new_request(&RequestFields { justification: &"x".repeat(2001), ..fields }).unwrap_err();
        assert_eq!(err.to_string(), "justification: at most 2000 characters");
    }

    #[test]
    fn text_that_would_show_otherwise_than_it_says_is_refused_on_every_field() {
        let one = vec!["read".to_owned()];
        let ok = RequestFields { kind: None, integration: "crm", scopes: &one, duration: None, justification: "" };
        for (text, refused) in [
            ("deploy hotfix INC-42", false),
            ("line one\nline two\r\n\tindented", false),
            ("naïve café — 日本語 ✓", false),
            ("invoice_\u{202E}fdp.exe", true), // right-to-left override
            ("a\u{2066}b\u{2069}", true),      // isolates
            ("\u{200B}", true),                // zero-width space only
            ("approve\u{200D}d", true),        // zero-width joiner
            ("bom\u{FEFF}", true),
            ("nul\u{0}byte", true), // PostgreSQL cannot store it
            ("bell\u{7}", true),
            ("c1\u{85}", true),
            ("\u{061C}arabic mark", true),
        ] {
            let got = check_new_request(&RequestFields { justification: text, ..ok });
            assert_eq!(got.is_err(), refused, "justification {text:?}");
            if let Err(e) = got {
                assert_eq!((e.code(), e.field()), ("validation_failed", Field::Justification), "{text:?}");
                assert!(e.hint().contains("invisible"), "{}", e.hint());
            }
            let got = check_comment(text);
            assert_eq!(
                got.as_ref().err().map(InputError::field),
                refused.then_some(Field::Comment),
                "comment {text:?}"
            );
        }
    }

    #[test]
    fn the_refused_characters_are_controls_but_tab_and_line_breaks_and_invisible_formatting() {
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let invisible = matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}');
            let control = c.is_control() && !matches!(c, '\t' | '\n' | '\r');
            assert_eq!(is_deceptive(c), invisible || control, "U+{:04X}", u32::from(c));
            assert_eq!(is_invisible_format(c), invisible, "U+{:04X}", u32::from(c));
        }
        assert!(free_text_pattern().starts_with("^[^\\u0000-\\u0008\\u000B-\\u000C"), "{}", free_text_pattern());
    }

    #[test]
    fn comments_are_limited_in_characters() {
        for (comment, ok) in [
            (String::new(), true),
            ("not this quarter".to_owned(), true),
            ("é".repeat(MAX_COMMENT_CHARS), true),
            ("x".repeat(MAX_COMMENT_CHARS + 1), false),
        ] {
            let got = check_comment(&comment);
            assert_eq!(got.is_ok(), ok, "{} characters", comment.chars().count());
            if let Err(e) = got {
                assert_eq!((e.code(), e.field()), ("validation_failed", Field::Comment));
                assert_eq!(e.to_string(), "comment: at most 2000 characters");
            }
        }
    }

    /// A workflow around one approval step (`step`, YAML lines indented for `steps:`), with
    /// `extra` top-level YAML (a `break_glass`).
    fn one_approval(step: &str, extra: &str) -> WorkflowDefinition {
        let text = format!(
            "key: w\nversion: 1\nkind: grant\nparameters:\n  max_duration: 8h\nsteps:\n{step}\n  - action: {{ operation: grant }}\n  - wait: {{ until: expiry }}\n  - action: {{ operation: revoke }}\n{extra}"
        );
        parse_definition("w.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn a_request_is_refused_when_an_approval_it_will_reach_cannot_be_passed() {
        let dir = directory();
        let crm = &dir.integrations["crm"];
        let two_steps = parse_definition("policy-test.yaml", WORKFLOW).expect("valid workflow");
        let only_alice = one_approval("  - approval: { approvers: { users: [alice] }, timeout: 1h }", "");
        let escalates = one_approval(
            "  - approval: { approvers: { users: [alice] }, timeout: 1h, escalation: { after: 30m, to: { groups: [oncall] } } }",
            "",
        );
        let two_of_security =
            one_approval("  - approval: { approvers: { groups: [security] }, quorum: 2, timeout: 1h }", "");
        let staging_only = one_approval(
            "  - approval: { when: { environments: [staging] }, approvers: { users: [alice] }, timeout: 1h }",
            "",
        );
        let nobody_can =
            one_approval("  - approval: { approvers: { users: [mallory, ci], groups: [empty] }, timeout: 1h }", "");
        let glass = |review: &str| {
            one_approval(
                "  - approval: { id: first, approvers: { users: [alice] }, timeout: 1h }",
                &format!(
                    "break_glass:\n  requesters: {{ users: [alice] }}\n  review: {{ approvers: {review}, timeout: 1h }}\n"
                ),
            )
        };
        let (glass_owner, glass_self) = (glass("{ owner: true }"), glass("{ users: [alice] }"));
        let refused =
            |step: &str, eligible: &[&str]| Some((step.to_owned(), eligible.iter().map(|e| (*e).to_owned()).collect()));
        // (workflow, requester, break-glass, refused at (step, eligible), why)
        type Refused = Option<(String, Vec<String>)>;
        let cases: [(&WorkflowDefinition, &str, bool, Refused, &str); 14] = [
            (&two_steps, "alice", false, None, "bob owns, carol is security"),
            (
                &two_steps,
                "bob",
                false,
                refused("steps[0]", &[]),
                "the owner asks: nobody else may approve the first step",
            ),
            (&two_steps, "carol", false, None, "alice is the rest of security"),
            (&two_steps, "ci", false, None, "a service's person (alice) is excluded, carol remains"),
            (&only_alice, "alice", false, refused("steps[0]", &[]), "the only approver is the requester"),
            (
                &only_alice,
                "ci",
                false,
                refused("steps[0]", &[]),
                "the only approver is the person behind the requesting service",
            ),
            (&only_alice, "bob", false, None, "alice approves bob"),
            (&escalates, "alice", false, None, "the escalation adds dave"),
            (&two_of_security, "alice", false, refused("steps[0]", &["carol"]), "quorum 2, one person left"),
            (&two_of_security, "erin", false, None, "alice and carol"),
            (&staging_only, "alice", false, None, "the step is skipped in production"),
            (&nobody_can, "erin", false, refused("steps[0]", &[]), "a disabled person, a service and an unknown group"),
            (&glass_owner, "alice", true, None, "break-glass skips the first approval; bob reviews"),
            (&glass_self, "alice", true, refused("break_glass.review", &[]), "nobody but the requester reviews"),
        ];
        for (def, requester, break_glass, want, why) in cases {
            let got = check_approvable(def, &dir, crm, requester, &["write".to_owned()], break_glass)
                .map_err(|u| (u.step, u.eligible));
            assert_eq!(got.err(), want, "{requester}: {why}");
        }
        // Without break-glass the same workflow's first step counts again.
        let e = check_approvable(&glass_owner, &dir, crm, "alice", &["write".to_owned()], false).expect_err("refused");
        assert_eq!((e.step.as_str(), e.quorum), ("steps[0] (\"first\")", 1));
    }

    #[test]
    fn the_refusal_names_the_approval_and_who_could_approve() {
        let none = crate::transition::RequestError::NoEligibleApprover {
            step: "steps[0] (\"owner\")".to_owned(),
            quorum: 1,
            requester: "bob".to_owned(),
            eligible: Vec::new(),
        };
        assert_eq!(none.code(), "no_eligible_approver");
        let text = none.to_string();
        assert!(
            text.starts_with("approval steps[0] (\"owner\") has no eligible approver") && text.contains("(bob)"),
            "{text}"
        );
        let few = crate::transition::RequestError::NoEligibleApprover {
            step: "steps[1]".to_owned(),
            quorum: 2,
            requester: "alice".to_owned(),
            eligible: vec!["carol".to_owned()],
        };
        let text = few.to_string();
        assert!(text.contains("steps[1] needs 2 approvals") && text.contains("only carol may approve"), "{text}");
    }

    fn vote(step: u32, who: &str, decision: Decision) -> Vote {
        Vote {
            step_index: step,
            approver: who.to_owned(),
            decision,
            comment: None,
            channel: "api".to_owned(),
            decided_at: Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).single().unwrap_or_default(),
        }
    }

    fn awaiting(mut r: Run, step: u32, escalated: bool) -> Run {
        let t = r.created_at;
        r.step_index = step;
        r.step = StepState::Approval { reached_at: t, deadline: t, reminders: 0, escalated };
        r
    }

    #[test]
    fn the_view_shows_who_may_still_approve_each_approval_and_how_many_are_needed() {
        let dir = directory();
        let def = parse_definition("policy-test.yaml", WORKFLOW).expect("valid workflow");
        let standing = |eligible: &[&str], remaining| {
            Some(ApprovalStanding { eligible: eligible.iter().map(|e| (*e).to_owned()).collect(), remaining })
        };
        let (bob_approved, carol_denied) = (vote(0, "bob", Decision::Approve), vote(1, "carol", Decision::Deny));
        let mut denied = awaiting(run("alice", "crm"), 1, false);
        denied.status = RunStatus::Denied;
        let mut done = run("alice", "crm");
        (done.status, done.step_index) = (RunStatus::Completed, 5);
        // (run, votes, expected per step, why)
        let cases = [
            (
                awaiting(run("alice", "crm"), 0, false),
                vec![],
                vec![standing(&["bob"], 1), standing(&["carol"], 1), None, None, None],
                "the owner now; security next (before any escalation)",
            ),
            (
                awaiting(run("alice", "crm"), 1, false),
                vec![bob_approved.clone()],
                vec![standing(&[], 0), standing(&["carol"], 1), None, None, None],
                "the owner approved: security's turn",
            ),
            (
                awaiting(run("alice", "crm"), 1, true),
                vec![bob_approved.clone()],
                vec![standing(&[], 0), standing(&["carol", "dave"], 1), None, None, None],
                "escalated: oncall's dave too (the service ci never approves)",
            ),
            (
                awaiting(run("carol", "crm"), 0, false),
                vec![],
                vec![standing(&["bob"], 1), standing(&["alice"], 1), None, None, None],
                "the requester is never eligible",
            ),
            (
                awaiting(run("erin", "crm"), 1, false),
                vec![vote(0, "carol", Decision::Approve)],
                vec![standing(&[], 0), standing(&["alice"], 1), None, None, None],
                "one vote per person per request: carol decided already",
            ),
            (denied, vec![bob_approved.clone(), carol_denied], vec![standing(&[], 0), None, None, None, None], "over"),
            (done, vec![], vec![standing(&[], 0), standing(&[], 0), None, None, None], "every approval done"),
            (
                awaiting(run("alice", "gone"), 0, false),
                vec![],
                vec![None, None, None, None, None],
                "the integration was removed",
            ),
        ];
        for (run, votes, want, why) in cases {
            assert_eq!(approval_standing(&run, &votes, &def, &dir), want, "{why}");
        }
    }

    #[test]
    fn the_view_follows_guards_and_break_glass_reviews() {
        let dir = directory();
        let def = one_approval(
            "  - approval: { id: first, approvers: { owner: true }, quorum: 1, timeout: 1h }\n  - approval: { when: { environments: [staging] }, approvers: { users: [carol] }, timeout: 1h }",
            "break_glass:\n  requesters: { users: [alice] }\n  review: { approvers: { groups: [security] }, quorum: 2, timeout: 1h }\n",
        );
        let pending = approval_standing(&awaiting(run("alice", "crm"), 0, false), &[], &def, &dir);
        assert_eq!(pending[1], None, "a step its guard skips in production shows nothing");
        // A break-glass run under review: the grant step (index 2) shows the review.
        let mut glass = awaiting(run("alice", "crm"), 2, false);
        glass.break_glass = true;
        let votes = [vote(2, "carol", Decision::Approve)];
        let got = approval_standing(&glass, &votes, &def, &dir);
        assert_eq!(
            got[2],
            Some(ApprovalStanding { eligible: Vec::new(), remaining: 1 }),
            "carol approved; alice asked"
        );
        assert_eq!(got[0], Some(ApprovalStanding { eligible: Vec::new(), remaining: 0 }), "skipped before the grant");
        // Not yet granted: the approvals before the grant will be skipped.
        let mut early = run("alice", "crm");
        (early.break_glass, early.status) = (true, RunStatus::Provisioning);
        assert_eq!(approval_standing(&early, &[], &def, &dir)[0], None);
    }
}
