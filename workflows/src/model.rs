//! The workflow definition model: what a YAML definition deserializes into.
//!
//! Steps use serde's externally tagged representation (`- approval: {...}`) rather than an
//! internally tagged `type:` field: it needs no buffering, so every deserialization error keeps
//! its exact line and column, and `deny_unknown_fields` works on every step.
//!
//! `yaml_serde` on its own reads externally tagged enums only from YAML tags (`- !approval {...}`);
//! [`crate::parse_definition`] reads through `yaml_serde::with::singleton_map_recursive` so the
//! single-key map form works. Deserialize YAML through it, not `yaml_serde::from_str`. JSON
//! (`serde_json`) uses the single-key map form natively.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A complete workflow definition, as written in one YAML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Stable identifier, `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
    pub key: String,
    /// Integer version ≥ 1; a run pins the version it started with.
    pub version: u32,
    /// What the workflow does to access: grant, renew, rotate or revoke.
    pub kind: WorkflowKind,
    /// Free text shown to users.
    #[serde(default)]
    pub description: String,
    /// Which integrations this workflow governs.
    #[serde(default)]
    pub applies_to: AppliesTo,
    /// Request parameters: durations, justification, who may ask.
    #[serde(default)]
    pub parameters: Parameters,
    /// Ordered steps; at least one.
    pub steps: Vec<Step>,
    /// Grant workflows: emergency access ("access first, review after") for the principals it
    /// names. A break-glass request skips the approval steps before the grant, is granted at once,
    /// and must then pass `review`; a denied or late review revokes the access at once.
    #[serde(default)]
    pub break_glass: Option<BreakGlass>,
}

/// Emergency access with an enforced review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    /// Who may use it (never empty: break-glass is for named people and groups).
    pub requesters: Principals,
    /// The review that follows the grant: its approvers (never the requester), quorum,
    /// deadline (counted from the grant; at the latest the grant's expiry), reminders and
    /// channels, like an approval step's. `on_timeout` is always a revocation.
    pub review: ApprovalStep,
}

/// The kind of a workflow, which is also the kind of the requests it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// Grant new, time-boxed access.
    Grant,
    /// Extend an existing grant.
    Renew,
    /// Rotate the credential behind an existing grant.
    Rotate,
    /// Revoke an existing grant before it expires.
    Revoke,
}

impl WorkflowKind {
    /// The lowercase name used in YAML, the API and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Renew => "renew",
            Self::Rotate => "rotate",
            Self::Revoke => "revoke",
        }
    }

    /// Parses the lowercase name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grant" => Some(Self::Grant),
            "renew" => Some(Self::Renew),
            "rotate" => Some(Self::Rotate),
            "revoke" => Some(Self::Revoke),
            _ => None,
        }
    }
}

impl fmt::Display for WorkflowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Selects the integrations a workflow governs. Every non-empty list must match; an empty list
/// (or `"*"` in it) matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliesTo {
    /// Integration names.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// SaaS applications (e.g. `salesforce`, `github`).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Environments (e.g. `production`).
    #[serde(default)]
    pub environments: Vec<String>,
}

/// Request parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Duration used when the request names none.
    #[serde(default)]
    pub default_duration: Option<Duration>,
    /// Longest duration a request may ask for. Required for `grant` workflows: no standing access.
    #[serde(default)]
    pub max_duration: Option<Duration>,
    /// Renew workflows: the longest a grant may last from when it was granted, across all its
    /// renewals (default [`LIFETIME_MULTIPLE`] × `max_duration`, at most 366 days).
    #[serde(default)]
    pub max_lifetime: Option<Duration>,
    /// Whether a non-empty justification is required.
    #[serde(default = "yes")]
    pub require_justification: bool,
    /// Who may ask. Empty means any authenticated principal.
    #[serde(default)]
    pub requesters: Principals,
}

impl Default for Parameters {
    fn default() -> Self {
        Self {
            default_duration: None,
            max_duration: None,
            max_lifetime: None,
            require_justification: true,
            requesters: Principals::default(),
        }
    }
}

/// A renew workflow that states no `max_lifetime` lets a grant last this many times its
/// `max_duration` from when it was granted.
pub const LIFETIME_MULTIPLE: u32 = 4;

impl Parameters {
    /// How long a grant may last from when it was granted, across renewals: `max_lifetime`, else
    /// [`LIFETIME_MULTIPLE`] × `max_duration`, never more than [`crate::MAX_DURATION`]. `None`
    /// without either (only renew workflows use it, and they must set `max_duration`).
    #[must_use]
    pub fn lifetime(&self) -> Option<Duration> {
        let lifetime = self
            .max_lifetime
            .or_else(|| self.max_duration.map(|m| Duration(m.as_std().saturating_mul(LIFETIME_MULTIPLE))))?;
        Some(if lifetime > crate::MAX_DURATION { crate::MAX_DURATION } else { lifetime })
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// A set of principals named by group or by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Principal ids.
    #[serde(default)]
    pub users: Vec<String>,
}

impl Principals {
    /// True when neither groups nor users are named.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }
}

/// One step of a workflow, written as a single-key map: `- approval: {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Wait for human approval.
    Approval(ApprovalStep),
    /// Call the integration's connector.
    Action(ActionStep),
    /// Wait for a duration or until the grant expires.
    Wait(WaitStep),
    /// Send a notification.
    Notify(NotifyStep),
}

impl Step {
    /// The step's own id, if it has one.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Approval(s) => s.id.as_deref(),
            Self::Action(s) => s.id.as_deref(),
            Self::Wait(s) => s.id.as_deref(),
            Self::Notify(s) => s.id.as_deref(),
        }
    }

    /// The step type name as written in YAML.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Approval(_) => "approval",
            Self::Action(_) => "action",
            Self::Wait(_) => "wait",
            Self::Notify(_) => "notify",
        }
    }

    /// The step's guard conditions.
    #[must_use]
    pub fn guard(&self) -> Guard<'_> {
        let (when, unless) = match self {
            Self::Approval(s) => (&s.when, &s.unless),
            Self::Action(s) => (&s.when, &s.unless),
            Self::Wait(s) => (&s.when, &s.unless),
            Self::Notify(s) => (&s.when, &s.unless),
        };
        Guard { when: when.as_ref(), unless: unless.as_ref() }
    }
}

/// The `when`/`unless` pair of a step.
#[derive(Debug, Clone, Copy)]
pub struct Guard<'a> {
    /// Run the step only if this holds.
    pub when: Option<&'a Condition>,
    /// Skip the step if this holds.
    pub unless: Option<&'a Condition>,
}

impl Guard<'_> {
    /// Whether the step runs for a request with these facts.
    #[must_use]
    pub fn admits(&self, facts: &RequestFacts<'_>) -> bool {
        self.when.is_none_or(|c| c.holds(facts)) && !self.unless.is_some_and(|c| c.holds(facts))
    }
}

/// Facts about a request that conditions can test.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The integration's environment.
    pub environment: &'a str,
    /// The risk level of every requested scope.
    pub scope_risks: &'a [Risk],
}

/// A condition on the request; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The integration's environment is one of these.
    #[serde(default)]
    pub environments: Vec<String>,
    /// At least one requested scope has one of these risk levels.
    #[serde(default)]
    pub any_scope_risk: Vec<Risk>,
    /// Every requested scope has one of these risk levels.
    #[serde(default)]
    pub all_scopes_risk: Vec<Risk>,
}

impl Condition {
    /// Evaluates the condition.
    #[must_use]
    pub fn holds(&self, facts: &RequestFacts<'_>) -> bool {
        (self.environments.is_empty() || self.environments.iter().any(|e| e == facts.environment))
            && (self.any_scope_risk.is_empty() || facts.scope_risks.iter().any(|r| self.any_scope_risk.contains(r)))
            && (self.all_scopes_risk.is_empty() || facts.scope_risks.iter().all(|r| self.all_scopes_risk.contains(r)))
    }

    /// True when no field is set (such a condition always holds).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.environments.is_empty() && self.any_scope_risk.is_empty() && self.all_scopes_risk.is_empty()
    }
}

/// Risk level of a scope, declared in the integration registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Read-only or otherwise harmless.
    Low,
    /// Default.
    Medium,
    /// Write, admin or production-data access.
    High,
}

impl Risk {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// An approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// Optional step id, unique within the workflow.
    #[serde(default)]
    pub id: Option<String>,
    /// Run only if this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Skip if this holds.
    #[serde(default)]
    pub unless: Option<Condition>,
    /// Who may approve. The requester is always excluded.
    pub approvers: Approvers,
    /// Distinct approvals needed.
    #[serde(default = "one")]
    pub quorum: u32,
    /// Distinct denials that end the run (1: any deny ends it).
    #[serde(default = "one")]
    pub deny_quorum: u32,
    /// Deadline, counted from when the step is reached.
    pub timeout: Duration,
    /// What happens at the deadline.
    #[serde(default)]
    pub on_timeout: TimeoutOutcome,
    /// Remind pending approvers at this interval.
    #[serde(default)]
    pub reminder: Option<Duration>,
    /// Channels the approval request and reminders go to (`slack`, `email`, `webhook`); empty or
    /// absent: every configured channel. If none of them is configured, every configured channel
    /// is used instead (an approval request is never dropped).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Slack channel id (e.g. `C0123ABCD`) to post the approval request in; absent: the
    /// `[slack] approvals_channel`, or a direct message to each approver.
    #[serde(default)]
    pub slack_channel: Option<String>,
    /// Widen the circle of approvers when the step is still undecided after a while.
    #[serde(default)]
    pub escalation: Option<Escalation>,
}

impl ApprovalStep {
    /// Who may approve: [`Self::approvers`], plus the escalation's approvers once `escalated`.
    #[must_use]
    pub fn approvers_at(&self, escalated: bool) -> Approvers {
        let mut all = self.approvers.clone();
        if let Some(e) = self.escalation.as_ref().filter(|_| escalated) {
            all.groups.extend(e.to.groups.iter().filter(|g| !self.approvers.groups.contains(g)).cloned());
            all.users.extend(e.to.users.iter().filter(|u| !self.approvers.users.contains(u)).cloned());
            all.owner |= e.to.owner;
        }
        all
    }
}

/// An approval step's escalation: after `after`, `to` may approve as well (and are asked to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// How long after the step is reached; shorter than the step's timeout.
    pub after: Duration,
    /// Who is added.
    pub to: Approvers,
}

/// Who may approve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Members of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// These principals.
    #[serde(default)]
    pub users: Vec<String>,
    /// The owner of the integration.
    #[serde(default)]
    pub owner: bool,
}

impl Approvers {
    /// True when nobody is named.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty() && !self.owner
    }
}

/// The outcome of an approval step whose deadline passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutOutcome {
    /// The request ends as `expired` (the default).
    #[default]
    Deny,
    /// The step counts as approved. Only sensible for low-risk workflows.
    Approve,
}

/// A connector call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionStep {
    /// Optional step id, unique within the workflow.
    #[serde(default)]
    pub id: Option<String>,
    /// Run only if this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Skip if this holds.
    #[serde(default)]
    pub unless: Option<Condition>,
    /// The connector operation.
    pub operation: Operation,
    /// Which version of the grant's credential a `revoke` or `verify` acts on: `current` (the
    /// default) or, in a rotate workflow after its `rotate` step, `previous` — the version the
    /// rotation replaced, kept valid for a grace period until this step revokes it (or checks
    /// that it is dead). The grant itself stays active.
    #[serde(default, skip_serializing_if = "CredentialVersion::is_current")]
    pub version: CredentialVersion,
    /// Retry policy for failed calls.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// Which version of a grant's credential an action acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialVersion {
    /// The credential in use: for a grant, its access.
    #[default]
    Current,
    /// The version a rotation replaced, during its grace period.
    Previous,
}

impl CredentialVersion {
    /// Whether this is the default, [`CredentialVersion::Current`].
    #[must_use]
    pub fn is_current(&self) -> bool {
        *self == Self::Current
    }

    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
}

/// A connector operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Create access.
    Grant,
    /// Extend access.
    Renew,
    /// Remove access.
    Revoke,
    /// Replace the credential.
    Rotate,
    /// Check that access is in the expected state.
    Verify,
}

impl Operation {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Rotate => "rotate",
            Self::Verify => "verify",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry policy: exponential backoff with jitter between `backoff` and `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, including the first (≥ 1).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Upper bound of any delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: default_attempts(), backoff: default_backoff(), max_backoff: default_max_backoff() }
    }
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// A wait step: exactly one of `duration` and `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    /// Optional step id, unique within the workflow.
    #[serde(default)]
    pub id: Option<String>,
    /// Run only if this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Skip if this holds.
    #[serde(default)]
    pub unless: Option<Condition>,
    /// Wait this long.
    #[serde(default)]
    pub duration: Option<Duration>,
    /// Wait until an event.
    #[serde(default)]
    pub until: Option<WaitUntil>,
}

/// What a wait step can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitUntil {
    /// The grant's expiry (moved by renewals, brought forward by revocation).
    Expiry,
}

/// A notification step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyStep {
    /// Optional step id, unique within the workflow.
    #[serde(default)]
    pub id: Option<String>,
    /// Run only if this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Skip if this holds.
    #[serde(default)]
    pub unless: Option<Condition>,
    /// Recipients.
    pub to: Vec<Recipient>,
    /// Message; `{requester}`, `{integration}`, `{scopes}`, `{expires_at}`, `{request}`
    /// placeholders are filled in.
    pub message: String,
    /// The event this notification announces, which picks its email wording and Slack headline:
    /// one of [`NOTIFY_EVENTS`]; default `message`.
    #[serde(default)]
    pub event: Option<String>,
}

/// The events a `notify` step may announce.
pub const NOTIFY_EVENTS: &[&str] = &["granted", "revoked", "renewed", "rotated", "message"];

/// A notification recipient role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// Whoever asked.
    Requester,
    /// The approvers of the workflow's approval steps.
    Approvers,
    /// The integration's owner.
    Owner,
}

/// A strictly positive duration written like `90s`, `15m`, `2h`, `1h 30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The standard-library duration.
    #[must_use]
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whole seconds.
    #[must_use]
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Parses `2h`, `30m`, `1h 30m`, `7d`; rejects zero and malformed text.
    ///
    /// # Errors
    /// A message saying why the text is not a positive duration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| format!("invalid duration {text:?}: {e} (write e.g. \"90s\", \"15m\", \"2h\", \"7d\")"))?;
        if d.is_zero() {
            return Err(format!("duration {text:?} must be greater than zero"));
        }
        Ok(Self(d))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive duration such as \"90s\", \"15m\", \"2h\" or \"7d\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!("duration {v} has no unit: write e.g. \"{v}s\" or \"{v}m\"")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(Visitor)
    }
}
