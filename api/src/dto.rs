//! API shapes: `*In` for bodies the API accepts, `*Out` for what it returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_engine::audit::{AuditRecord, ChainBreak, VerifyReport};
use tollgate_engine::directory::{Integration, Principal};
use tollgate_engine::run::{Grant, StepState};
use tollgate_engine::store::query::{RunView, Task};
use tollgate_engine::token::ApiToken;
use tollgate_workflows::{Step, WorkflowDefinition};

use utoipa::ToSchema;
use uuid::Uuid;

use crate::openapi;

/// Most items a page of `GET /v1/requests` or `GET /v1/grants` holds (`limit`).
pub const MAX_PAGE_LIMIT: u64 = 200;
/// Items per page of `GET /v1/requests` and `GET /v1/grants` without `limit`.
pub const DEFAULT_PAGE_LIMIT: u64 = 50;
/// Most records a page of `GET /v1/audit` holds (`limit`).
pub const MAX_AUDIT_LIMIT: u64 = 1000;
/// Records per page of `GET /v1/audit` without `limit`.
pub const DEFAULT_AUDIT_LIMIT: u64 = 100;

/// A new request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "integration": "github-staging",
    "scopes": ["contents:write"],
    "duration": "2h",
    "justification": "hotfix for INC-1234"
}))]
pub struct RequestIn {
    /// Integration name.
    #[schema(schema_with = openapi::integration_name)]
    pub integration: String,
    /// `grant` (default), `renew`, `rotate` or `revoke`.
    #[serde(default)]
    #[schema(schema_with = openapi::request_kind_in)]
    pub kind: Option<String>,
    /// Scopes. For renew, rotate and revoke: the grant's, exactly, or none (which means the
    /// grant's); any other set is refused (`scope_mismatch`).
    #[serde(default)]
    #[schema(schema_with = openapi::scopes)]
    pub scopes: Vec<String>,
    /// How long, e.g. `"2h"`: at least 1 second, at most the workflow's `max_duration` (and never
    /// more than 366 days); defaults to the workflow's default.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why.
    #[serde(default)]
    #[schema(schema_with = openapi::justification)]
    pub justification: String,
    /// The existing grant, for renew/rotate/revoke.
    #[serde(default)]
    pub grant: Option<Uuid>,
    /// Emergency access ("break-glass"): granted at once, without the approvals before the
    /// grant, then reviewed by the workflow's `break_glass.review` approvers; a denied or late
    /// review revokes the access at once. Only grant requests, only where the workflow offers it
    /// and names the requester (else 422 `break_glass_unavailable` or 403 `forbidden`); a
    /// justification is required.
    #[serde(default)]
    pub break_glass: bool,
}

/// A decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "decision": "approve", "comment": "ok for the incident window" }))]
pub struct DecisionIn {
    /// `approve` or `deny`.
    #[schema(schema_with = openapi::decision)]
    pub decision: String,
    /// Comment; for a denial, the reason.
    #[serde(default)]
    #[schema(schema_with = openapi::comment)]
    pub comment: Option<String>,
}

/// Resolving a manual task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "outcome": "done", "comment": "collaborator added" }))]
pub struct TaskCompleteIn {
    /// `done` (default) or `failed`.
    #[serde(default)]
    #[schema(schema_with = openapi::task_outcome)]
    pub outcome: Option<String>,
    /// Comment.
    #[serde(default)]
    #[schema(schema_with = openapi::comment)]
    pub comment: Option<String>,
}

/// Workflow reference.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRef {
    /// Key.
    pub key: String,
    /// Pinned version.
    pub version: u32,
}

/// A step of the request's workflow and where the request stands on it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepOut {
    /// Position.
    pub index: u32,
    /// `approval`, `action`, `wait`, `notify`.
    #[serde(rename = "type")]
    pub step_type: String,
    /// Step id, if the definition gives one.
    pub id: Option<String>,
    /// `done`, `current` or `pending`.
    pub state: String,
    /// For the current approval step: its deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// For the current approval step: approvals needed in all.
    pub quorum: Option<u32>,
    /// For an approval step: the principal ids who may decide at it. At the approval the request
    /// awaits (for a break-glass request under review, shown on its grant step): everyone who may
    /// decide now — eligible under the directory as it is now (the escalation's approvers
    /// included once it escalated), never the requester or the same person, and without anyone
    /// who already decided on this request (one vote per person per request). At an approval step
    /// still ahead: who would be asked as things stand (before any escalation). `[]` for an
    /// approval step that is done. `null` for other steps, for approval steps the request will
    /// skip (their `when`/`unless` does not admit it, or a break-glass request's approvals before
    /// its grant) and, once the request has ended, for every step that is not done.
    pub eligible: Option<Vec<String>>,
    /// For an approval step: approvals still needed — the quorum less the approvals recorded at
    /// the approval the request awaits, the whole quorum at one still ahead, `0` once done; `null`
    /// whenever `eligible` is.
    pub remaining: Option<u32>,
}

/// A recorded decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalOut {
    /// Step index.
    pub step: u32,
    /// Approver.
    pub approver: String,
    /// `approve` or `deny`.
    #[schema(schema_with = openapi::decision)]
    pub decision: String,
    /// Comment.
    pub comment: Option<String>,
    /// `api`, `cli`, `slack`, `email`.
    pub channel: String,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// A grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "01938f4e-7a10-7c3e-9b1a-2f6d8e4c5a01",
    "request": "01938f4e-6b20-7d4f-8c2b-3e7f9a5d6b02",
    "integration": "github-staging",
    "principal": "alice",
    "scopes": ["contents:write"],
    "status": "active",
    "granted_at": "2026-01-15T09:30:05Z",
    "expires_at": "2026-01-15T11:30:05Z",
    "revoked_at": null,
    "reference": "gh-collab-4821"
}))]
pub struct GrantOut {
    /// Id.
    pub id: Uuid,
    /// The request that created it.
    pub request: Uuid,
    /// Integration.
    pub integration: String,
    /// Holder.
    pub principal: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// `provisioning`, `active`, `revoking`, `revoked`, `revoke_failed`, `failed`.
    #[schema(schema_with = openapi::grant_status)]
    pub status: String,
    /// When access was put in place.
    pub granted_at: Option<DateTime<Utc>>,
    /// When it ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was removed.
    pub revoked_at: Option<DateTime<Utc>>,
    /// External reference from the connector.
    pub reference: Option<String>,
}

impl From<&Grant> for GrantOut {
    fn from(g: &Grant) -> Self {
        Self {
            id: g.id.0,
            request: g.run_id.0,
            integration: g.integration.clone(),
            principal: g.principal.clone(),
            scopes: g.scopes.clone(),
            status: g.status.as_str().to_owned(),
            granted_at: g.granted_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
            reference: g.reference.clone(),
        }
    }
}

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "01938f4e-6b20-7d4f-8c2b-3e7f9a5d6b02",
    "kind": "grant",
    "status": "awaiting_approval",
    "requester": "alice",
    "integration": "github-staging",
    "scopes": ["contents:write"],
    "duration": "2h",
    "duration_secs": 7200,
    "justification": "hotfix for INC-1234",
    "workflow": { "key": "standard-grant", "version": 1 },
    "steps": [
        { "index": 0, "type": "approval", "id": "owner", "state": "current", "deadline": "2026-01-16T09:30:00Z", "quorum": 1, "eligible": ["bob"], "remaining": 1 },
        { "index": 1, "type": "action", "id": null, "state": "pending", "deadline": null, "quorum": null, "eligible": null, "remaining": null }
    ],
    "approvals": [],
    "grant": null,
    "reason": null,
    "break_glass": false,
    "created_at": "2026-01-15T09:30:00Z",
    "updated_at": "2026-01-15T09:30:00Z"
}))]
pub struct RequestOut {
    /// Id.
    pub id: Uuid,
    /// Kind.
    #[schema(schema_with = openapi::request_kind_out)]
    pub kind: String,
    /// Status: `awaiting_approval`, `denied`, `expired`, `cancelled`, `provisioning`, `active`,
    /// `revoking`, `completed`, `failed`.
    #[schema(schema_with = openapi::run_status)]
    pub status: String,
    /// Requester.
    pub requester: String,
    /// Integration.
    pub integration: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Duration, e.g. `2h`.
    pub duration: String,
    /// Duration in seconds.
    pub duration_secs: u64,
    /// Justification.
    pub justification: String,
    /// The workflow version the request pinned.
    pub workflow: WorkflowRef,
    /// Steps.
    pub steps: Vec<StepOut>,
    /// Decisions so far.
    pub approvals: Vec<ApprovalOut>,
    /// The grant concerned.
    pub grant: Option<GrantOut>,
    /// Why it ended as it did (denial reason, failure).
    pub reason: Option<String>,
    /// Emergency access: granted before its review. While the review is pending the request is
    /// `awaiting_approval` with its grant already `active`.
    pub break_glass: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl RequestOut {
    /// Builds the view; `definition` gives the step list (absent if the version is unknown).
    pub fn new(v: &RunView, definition: Option<&WorkflowDefinition>) -> Self {
        let run = &v.run;
        let steps = definition.map_or_else(Vec::new, |d| {
            d.steps
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    // A final run has no current step, except a revocation still being retried.
                    let current =
                        i == run.step_index && (!run.status.is_final() || matches!(run.step, StepState::Action { .. }));
                    let state = if current {
                        "current"
                    } else if i < run.step_index {
                        "done"
                    } else {
                        "pending"
                    };
                    let (deadline, quorum) = match (s, &run.step) {
                        (Step::Approval(a), StepState::Approval { deadline, .. }) if current => {
                            (Some(*deadline), Some(a.quorum))
                        }
                        // A break-glass grant under review: the grant step shows the review.
                        (Step::Action(_), StepState::Approval { deadline, .. }) if current => (
                            Some(*deadline),
                            tollgate_engine::transition::pending_approval_in(run, d).map(|a| a.quorum),
                        ),
                        (Step::Approval(a), _) => (None, Some(a.quorum)),
                        _ => (None, None),
                    };
                    StepOut {
                        index: i,
                        step_type: s.type_name().to_owned(),
                        id: s.id().map(str::to_owned),
                        state: state.to_owned(),
                        deadline,
                        quorum,
                        // Filled in by the route, which has the directory.
                        eligible: None,
                        remaining: None,
                    }
                })
                .collect()
        });
        Self {
            id: run.id.0,
            kind: run.kind.as_str().to_owned(),
            status: run.status.as_str().to_owned(),
            requester: run.requester.clone(),
            integration: run.integration.clone(),
            scopes: run.scopes.clone(),
            duration: humantime::format_duration(std::time::Duration::from_secs(run.duration_secs)).to_string(),
            duration_secs: run.duration_secs,
            justification: run.justification.clone(),
            workflow: WorkflowRef { key: run.workflow_key.clone(), version: run.workflow_version },
            steps,
            approvals: v
                .votes
                .iter()
                .map(|vote| ApprovalOut {
                    step: vote.step_index,
                    approver: vote.approver.clone(),
                    decision: vote.decision.as_str().to_owned(),
                    comment: vote.comment.clone(),
                    channel: vote.channel.clone(),
                    decided_at: vote.decided_at,
                })
                .collect(),
            grant: v.grant.as_ref().map(GrantOut::from),
            reason: run.reason.clone(),
            break_glass: run.break_glass,
            created_at: run.created_at,
            updated_at: run.updated_at,
        }
    }
}

/// A page of results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "items": [], "next_cursor": null }))]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A requestable scope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScopeOut {
    /// Name.
    pub name: String,
    /// `low`, `medium`, `high`.
    pub risk: String,
    /// Description.
    pub description: String,
}

/// An integration (no connector settings, which may hold secrets).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "github-staging",
    "app": "github",
    "environment": "staging",
    "owner": "bob",
    "description": "The staging organisation",
    "connector": "manual",
    "scopes": [{ "name": "contents:write", "risk": "medium", "description": "Push to repositories" }]
}))]
pub struct IntegrationOut {
    /// Name (also its id).
    pub name: String,
    /// SaaS application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Owner.
    pub owner: String,
    /// Description.
    pub description: String,
    /// Connector type.
    pub connector: String,
    /// Requestable scopes.
    pub scopes: Vec<ScopeOut>,
}

impl From<&Integration> for IntegrationOut {
    fn from(i: &Integration) -> Self {
        Self {
            name: i.name.clone(),
            app: i.app.clone(),
            environment: i.environment.clone(),
            owner: i.owner.clone(),
            description: i.description.clone(),
            connector: i.connector_type().to_owned(),
            scopes: i
                .scopes
                .iter()
                .map(|s| ScopeOut {
                    name: s.name.clone(),
                    risk: s.risk.as_str().to_owned(),
                    description: s.description.clone(),
                })
                .collect(),
        }
    }
}

/// A principal. `GET /v1/principals` shows admins and auditors every field, and everyone else
/// only `id`, `kind` and `name` (enough to pick an approver) except for their own entry; the
/// fields after `name` are then absent. `GET /v1/me` always shows every field.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "alice",
    "kind": "person",
    "name": "Alice",
    "email": "alice@example.com",
    "slack_user_id": null,
    "roles": [],
    "owner": null,
    "groups": ["engineering"],
    "disabled": false
}))]
pub struct PrincipalOut {
    /// Id.
    pub id: String,
    /// `person` or `service`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Email (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    /// Slack user id (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub slack_user_id: Option<Option<String>>,
    /// Global roles (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>, required = false)]
    pub roles: Option<Vec<String>>,
    /// Accountable person, for services (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner: Option<Option<String>>,
    /// Groups it belongs to (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>, required = false)]
    pub groups: Option<Vec<String>>,
    /// Disabled (absent in the short view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool, required = false)]
    pub disabled: Option<bool>,
}

impl PrincipalOut {
    /// Every field.
    pub fn new(p: &Principal, groups: Vec<String>) -> Self {
        Self {
            id: p.id.clone(),
            kind: p.kind.as_str().to_owned(),
            name: p.name.clone(),
            email: Some(p.email.clone()),
            slack_user_id: Some(p.slack_user_id.clone()),
            roles: Some(p.roles.iter().map(|r| r.as_str().to_owned()).collect()),
            owner: Some(p.owner.clone()),
            groups: Some(groups),
            disabled: Some(p.disabled),
        }
    }

    /// The short view: who it is, nothing to contact or map it by.
    pub fn short(p: &Principal) -> Self {
        Self {
            id: p.id.clone(),
            kind: p.kind.as_str().to_owned(),
            name: p.name.clone(),
            email: None,
            slack_user_id: None,
            roles: None,
            owner: None,
            groups: None,
            disabled: None,
        }
    }
}

/// A workflow definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "key": "standard-grant",
    "version": 1,
    "kind": "grant",
    "description": "One approval by the integration's owner",
    "latest": true,
    "definition": { "key": "standard-grant", "kind": "grant", "steps": [{ "type": "approval", "approvers": ["integration_owner"] }] }
}))]
pub struct WorkflowOut {
    /// Key.
    pub key: String,
    /// Version.
    pub version: u32,
    /// Kind.
    pub kind: String,
    /// Description.
    pub description: String,
    /// Whether this is the version new requests use.
    pub latest: bool,
    /// The full definition.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
}

/// An audit record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "seq": 42,
    "recorded_at": "2026-01-15T09:31:00Z",
    "event_type": "request.decided",
    "channel": "api",
    "outcome": "approve",
    "actor": "bob",
    "subject": "01938f4e-6b20-7d4f-8c2b-3e7f9a5d6b02",
    "run_id": "01938f4e-6b20-7d4f-8c2b-3e7f9a5d6b02",
    "justification": null,
    "workflow_key": "standard-grant",
    "workflow_version": 1,
    "details": { "step": 0 },
    "prev_hash": "9f2c4e1a7b3d5f6e8a0c2b4d6f8e0a1c3e5f7a9b1d3f5e7a9c1b3d5f7e9a1c3e",
    "hash": "1b3d5f7e9a1c3e5f7a9b1d3f5e7a9c1b3d5f7e9a1c3e9f2c4e1a7b3d5f6e8a0c"
}))]
pub struct AuditRecordOut {
    /// Sequence.
    pub seq: i64,
    /// UTC time.
    pub recorded_at: DateTime<Utc>,
    /// Event type.
    pub event_type: String,
    /// Channel.
    pub channel: String,
    /// Outcome.
    pub outcome: String,
    /// Actor.
    pub actor: String,
    /// Subject.
    pub subject: String,
    /// Request id.
    pub run_id: Option<Uuid>,
    /// Justification.
    pub justification: Option<String>,
    /// Workflow key.
    pub workflow_key: Option<String>,
    /// Workflow version.
    pub workflow_version: Option<i32>,
    /// Details.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl From<AuditRecord> for AuditRecordOut {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            recorded_at: r.recorded_at,
            event_type: r.event.event_type,
            channel: r.event.channel,
            outcome: r.event.outcome,
            actor: r.event.actor,
            subject: r.event.subject,
            run_id: r.event.run_id,
            justification: r.event.justification,
            workflow_key: r.event.workflow_key,
            workflow_version: r.event.workflow_version,
            details: r.event.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The result of verifying the audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "ok": true,
    "records": 42,
    "head_seq": 42,
    "head_hash": "1b3d5f7e9a1c3e5f7a9b1d3f5e7a9c1b3d5f7e9a1c3e9f2c4e1a7b3d5f6e8a0c",
    "broken_at": null,
    "kind": null,
    "detail": null
}))]
pub struct VerifyOut {
    /// Whether every link verified.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// Last sequence checked.
    pub head_seq: Option<i64>,
    /// Its hash.
    pub head_hash: Option<String>,
    /// The first broken sequence.
    pub broken_at: Option<i64>,
    /// What broke there: `hash_mismatch` (content altered), `prev_hash_mismatch` (link broken:
    /// deletion or reordering), `sequence_gap`, `sequence_order`, `bad_start`.
    pub kind: Option<String>,
    /// What is wrong there.
    pub detail: Option<String>,
}

impl From<Result<VerifyReport, ChainBreak>> for VerifyOut {
    fn from(verified: Result<VerifyReport, ChainBreak>) -> Self {
        match verified {
            Ok(r) => Self {
                ok: true,
                records: r.records,
                head_seq: r.head_seq,
                head_hash: r.head_hash,
                broken_at: None,
                kind: None,
                detail: None,
            },
            Err(b) => Self {
                ok: false,
                records: 0,
                head_seq: None,
                head_hash: None,
                broken_at: Some(b.seq),
                kind: Some(b.kind.as_str().to_owned()),
                detail: Some(b.to_string()),
            },
        }
    }
}

/// A manual task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "01938f4e-8c30-7e5a-9d3c-4f8a0b6e7c03",
    "request": "01938f4e-6b20-7d4f-8c2b-3e7f9a5d6b02",
    "operator": "admin",
    "instructions": "Add alice to github-staging with contents:write",
    "status": "open",
    "resolved_by": null,
    "comment": null,
    "resolved_at": null,
    "created_at": "2026-01-15T09:31:00Z"
}))]
pub struct TaskOut {
    /// Id.
    pub id: Uuid,
    /// The request.
    pub request: Uuid,
    /// Who must confirm.
    pub operator: String,
    /// What to do.
    pub instructions: String,
    /// `open`, `done`, `failed`.
    pub status: String,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// Comment.
    pub comment: Option<String>,
    /// When resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<Task> for TaskOut {
    fn from(t: Task) -> Self {
        Self {
            id: t.id.0,
            request: t.run_id.0,
            operator: t.operator,
            instructions: t.instructions,
            status: t.status,
            resolved_by: t.resolved_by,
            comment: t.comment,
            resolved_at: t.resolved_at,
            created_at: t.created_at,
        }
    }
}

/// Health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "status": "ok" }))]
pub struct HealthOut {
    /// `ok`.
    pub status: String,
}

/// A new API token (admins only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"principal": "ci-deployer", "label": "GitHub Actions, repo infra", "ttl": "30d"}))]
pub struct TokenIn {
    /// The principal the token acts as (an active principal of the directory).
    pub principal: String,
    /// What it is for: 1–100 characters, no control or invisible formatting characters.
    #[schema(schema_with = openapi::token_label)]
    pub label: String,
    /// Lifetime, e.g. `"30d"`, at most 366 days; without one the token never expires (until
    /// revoked), which is discouraged.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// An API token (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenOut {
    /// Id (to revoke it).
    pub id: Uuid,
    /// The principal it acts as.
    pub principal: String,
    /// What it is for.
    pub label: String,
    /// `active`, `expired` or `revoked`.
    #[schema(schema_with = openapi::token_status)]
    pub status: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops authenticating; `null`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (kept to within a minute); `null`: never used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenOut {
    /// The token as seen at `now` (its status depends on the time).
    #[must_use]
    pub fn new(t: &ApiToken, now: DateTime<Utc>) -> Self {
        Self {
            id: t.id,
            principal: t.principal.clone(),
            label: t.label.clone(),
            status: t.status(now).as_str().to_owned(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just created: its secret, shown this once, and the stored token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreatedOut {
    /// The bearer token. Only its SHA-256 is stored: it cannot be shown again.
    pub secret: String,
    /// The stored token.
    pub token: TokenOut,
}

/// What a configuration reload applied.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReloadOut {
    /// Workflow versions loaded for the first time (new requests use the newest of each key).
    pub workflows: Vec<WorkflowRef>,
    /// Directory entries added, changed or removed.
    pub changes: Vec<DirectoryChangeOut>,
}

/// One directory entry a reload added, changed or removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectoryChangeOut {
    /// `principal`, `group` or `integration`.
    #[schema(schema_with = openapi::directory_kind)]
    pub kind: String,
    /// Its id or name.
    pub name: String,
    /// `added`, `changed` or `removed`.
    #[schema(schema_with = openapi::directory_change)]
    pub change: String,
}

impl From<tollgate_engine::config_sync::DirectoryChange> for DirectoryChangeOut {
    fn from(c: tollgate_engine::config_sync::DirectoryChange) -> Self {
        Self { kind: c.kind.to_owned(), name: c.name, change: c.change.to_owned() }
    }
}

/// A credential minted for the caller's grant, handed over this once (`POST
/// /v1/grants/{id}/secret`): it was erased as this answer was made.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "secret": "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "expires_at": "2026-01-15T10:30:05Z" }))]
pub struct GrantSecretOut {
    /// The credential. It is not stored any more: it cannot be shown again.
    pub secret: String,
    /// When the SaaS side expires it, if it said.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for GrantSecretOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantSecretOut").field("secret", &"[redacted]").field("expires_at", &self.expires_at).finish()
    }
}

/// A credential to record in the inventory (`POST /v1/credentials`): the fields of an import
/// row. Give `secret_ref` (a reference to where the secret is kept), or `value` (the secret:
/// stored sealed with the server's `[secrets] key`, never shown again), or neither.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "github-staging/deploy-bot",
    "kind": "bot_token",
    "integration": "github-staging",
    "owner": "bob",
    "scopes": ["contents:read"],
    "expires_at": "2027-06-30T00:00:00Z",
    "revocation": "manual",
    "revocation_url": "https://github.com/settings/tokens",
    "secret_ref": "vault:kv/data/github#deploy-bot"
}))]
pub struct CredentialIn {
    /// Unique name: 1–200 of `A–Z a–z 0–9 . _ - : / @`.
    pub name: String,
    /// `oauth_client`, `oauth_grant`, `refresh_token`, `api_key`, `webhook_secret`,
    /// `app_installation`, `service_account_key` or `bot_token`.
    #[schema(schema_with = openapi::credential_kind)]
    pub kind: String,
    /// An integration of the directory (its environment is the credential's).
    pub integration: String,
    /// A principal of the directory.
    pub owner: String,
    /// Scopes it carries (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = openapi::credential_scopes)]
    pub scopes: Vec<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<String>,
    /// `connector` or `manual` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
    /// How to revoke it by hand (at most 2,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_instructions: Option<String>,
    /// Where to revoke it by hand (`https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// Free text (at most 2,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the secret is kept, `scheme:location` (e.g. `vault:kv/data/github#token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// The secret itself (needs `[secrets] key` on the server); stored sealed, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// How a credential is revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationOut {
    /// `connector` or `manual`.
    pub method: String,
    /// Instructions for a manual revocation.
    pub instructions: Option<String>,
    /// Where to revoke it by hand.
    pub url: Option<String>,
}

/// One version of a credential's secret (never the value).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialVersionOut {
    /// 1, 2, 3, …
    pub version: i32,
    /// `active` (the current version) or `retired`.
    pub state: String,
    /// Whether Tollgate holds the value (sealed at rest; never returned).
    pub has_value: bool,
    /// The last four characters of a held value of 16 or more characters.
    pub hint: Option<String>,
    /// Where the secret is kept, for a reference.
    pub secret_ref: Option<String>,
    /// When this version was recorded.
    pub created_at: DateTime<Utc>,
    /// When a newer version replaced it.
    pub retired_at: Option<DateTime<Utc>>,
}

/// An inventoried credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialOut {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Kind.
    #[schema(schema_with = openapi::credential_kind)]
    pub kind: String,
    /// Integration.
    pub integration: String,
    /// Owner.
    pub owner: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The integration's environment.
    pub environment: String,
    /// `active` or `expired` (now).
    #[schema(schema_with = openapi::credential_status)]
    pub status: String,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was last rotated.
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// How it is revoked.
    pub revocation: RevocationOut,
    /// Free text.
    pub description: String,
    /// The current version (0: no secret recorded).
    pub current_version: i32,
    /// Whether the current version's value is held (sealed).
    pub has_value: bool,
    /// Versions, newest first: the current one and the previous ones.
    pub versions: Vec<CredentialVersionOut>,
    /// When it was first recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl CredentialOut {
    /// The credential as seen at `now`.
    #[must_use]
    pub fn new(c: &tollgate_engine::credential::Credential, now: DateTime<Utc>) -> Self {
        use tollgate_engine::credential::CredentialStatus;
        let versions: Vec<CredentialVersionOut> = c
            .versions
            .iter()
            .map(|v| CredentialVersionOut {
                version: v.version,
                state: v.state.clone(),
                has_value: v.has_value,
                hint: v.hint.clone(),
                secret_ref: v.secret_ref.clone(),
                created_at: v.created_at,
                retired_at: v.retired_at,
            })
            .collect();
        Self {
            id: c.id,
            name: c.name.clone(),
            kind: c.kind.clone(),
            integration: c.integration.clone(),
            owner: c.owner.clone(),
            scopes: c.scopes.clone(),
            environment: c.environment.clone(),
            status: CredentialStatus::at(c.expires_at, now).as_str().to_owned(),
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            last_used_at: c.last_used_at,
            last_rotated_at: c.last_rotated_at,
            revocation: RevocationOut {
                method: c.revocation.clone(),
                instructions: c.revocation_instructions.clone(),
                url: c.revocation_url.clone(),
            },
            description: c.description.clone(),
            current_version: c.current_version,
            has_value: versions.iter().any(|v| v.version == c.current_version && v.has_value),
            versions,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// An import file (`POST /v1/credentials/import`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "format": "csv",
    "content": "name,kind,integration,owner,scopes,expires_at,secret_ref\ngh-deploy,api_key,github-staging,bob,contents:read,2027-01-01T00:00:00Z,vault:kv/gh#deploy\n",
    "dry_run": false
}))]
pub struct CredentialImportIn {
    /// `yaml` (a list of mappings) or `csv` (a header line naming the columns).
    #[schema(schema_with = openapi::import_format)]
    pub format: String,
    /// The file's text (within `http.max_body_bytes` as JSON).
    pub content: String,
    /// Check and compare only: nothing is stored.
    #[serde(default)]
    pub dry_run: bool,
}

/// One imported row that created or changed a credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportRowOut {
    /// Line in the file.
    pub line: usize,
    /// Credential name.
    pub name: String,
    /// `created` or `updated` (unchanged rows are only counted).
    #[schema(schema_with = openapi::import_outcome)]
    pub outcome: String,
    /// The credential's current secret version.
    pub version: i32,
}

/// An invalid row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportErrorOut {
    /// Line in the file.
    pub line: usize,
    /// The field at fault (`-`: the row or the file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// What an import did (or, with invalid rows, would have done: nothing was stored).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportReportOut {
    /// Whether the changes were stored (false for a dry run, and whenever a row is invalid).
    pub applied: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Rows that create a credential.
    pub created: usize,
    /// Rows that change one.
    pub updated: usize,
    /// Rows stored exactly so already.
    pub unchanged: usize,
    /// Invalid rows.
    pub invalid: usize,
    /// The rows that create or change a credential, in file order.
    pub rows: Vec<ImportRowOut>,
    /// The invalid rows, by line.
    pub errors: Vec<ImportErrorOut>,
}

impl ImportReportOut {
    /// The engine's report.
    #[must_use]
    pub fn new(r: &tollgate_engine::credential::ImportReport, dry_run: bool) -> Self {
        use tollgate_engine::credential::RowOutcome;
        Self {
            applied: r.applied,
            dry_run,
            created: r.count(RowOutcome::Created),
            updated: r.count(RowOutcome::Updated),
            unchanged: r.count(RowOutcome::Unchanged),
            invalid: r.invalid.len(),
            rows: r
                .rows
                .iter()
                .filter(|row| row.outcome != RowOutcome::Unchanged)
                .map(|row| ImportRowOut {
                    line: row.line,
                    name: row.name.clone(),
                    outcome: row.outcome.as_str().to_owned(),
                    version: row.version,
                })
                .collect(),
            errors: r
                .invalid
                .iter()
                .map(|e| ImportErrorOut { line: e.line, field: e.field.clone(), message: e.message.clone() })
                .collect(),
        }
    }
}

/// An import refused for invalid rows: the error envelope, and beside it the report naming each
/// row (documented as `ErrorBody`; `report` is an `ImportReportOut`).
#[derive(Debug, Serialize)]
pub struct ImportRefusedOut {
    /// `invalid_rows`, with the first problem.
    pub error: crate::error::ErrorDetail,
    /// Every invalid row (`errors`) and what the valid ones would have done.
    pub report: ImportReportOut,
}
