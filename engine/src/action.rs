//! The connector call an action step asks for, as a plain value: it must never hold a secret or perform I/O.
//!
//! Transitions build a [`ConnectorAction`], the writer stores it in an outbox row, and the outbox
//! dispatcher hands it to the integration's connector. It lives in the core, not with the
//! connectors, so that transitions and effects depend on no adapter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_workflows::{CredentialVersion, Operation};
use uuid::Uuid;

/// What a connector is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorAction {
    /// The operation.
    pub operation: Operation,
    /// Same on every attempt of this (run, step); receivers deduplicate on it.
    pub idempotency_key: String,
    /// The run that asked.
    pub run_id: Uuid,
    /// The grant concerned.
    pub grant_id: Uuid,
    /// The integration acted on.
    pub integration: IntegrationRef,
    /// The principal who receives (or loses) access.
    pub principal: String,
    /// Scopes concerned.
    pub scopes: Vec<String>,
    /// When the access ends (grant, renew).
    pub expires_at: Option<DateTime<Utc>>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// For `verify`: what the target must show for the call to succeed (absent after a
    /// revocation, present while the grant is active). Absent from other operations' bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// For `revoke` and `verify` in a rotation: `previous` when the call acts on the version the
    /// rotation replaced (during or after its grace period), not on the grant's current access.
    /// Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<CredentialVersion>,
    /// For `rotate`: the version being replaced must stay valid — a later `revoke` with
    /// `version: previous` ends it after the workflow's grace period. Absent (false): the
    /// connector may invalidate the old version at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_previous: bool,
}

/// What a `verify` call expects to find at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The access is in place (an active grant).
    Present,
    /// The access is gone (a revoked grant).
    Absent,
}

impl Expect {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Absent => "absent",
        }
    }
}

/// The integration as a connector sees it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationRef {
    /// Registry name.
    pub name: String,
    /// SaaS application.
    pub app: String,
    /// Environment.
    pub environment: String,
}
