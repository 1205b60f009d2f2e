//! The test directory (principals, groups, integrations) and the test workflows, with durations
//! short enough for tests that wait for real timers.

/// The signing secret shared by the server's webhooks and the [`crate::Receiver`].
pub const SECRET: &str = "whsec_tollgate_integration_tests_0123456789abcdef";

/// A secret the receiver puts into every connector answer (a credential in successes, internal
/// detail in failures). It must never appear in anything Tollgate writes or sends.
pub const CANARY: &str = "CANARY-client-secret-7d41f0c2e9";

/// The directory: who is who, and what can be requested.
///
/// - `alice` requests; `bob` owns every integration except `ci-runner`; `carol` and `dave` are
///   `security`; `erin` approves nothing; `admin` is admin; `audrey` is auditor; `ci-bot` is a
///   service owned by `alice`, and `alice` owns `ci-runner`.
/// - `wiki-staging` (staging; `read` low, `edit` medium) and `ci-runner` use `test-grant`: one
///   approval from the owner or security.
/// - `crm-prod` (production; `read` low, `write` high) uses `test-two-person`: two approvals,
///   two denials to deny.
/// - `ledger-sandbox` uses `test-short-timeout`: the approval expires after 2 s.
/// - `hr-staging` (app `hr`) uses `test-reminder`: two approvals, reminders every second.
/// - `test-renew` (owner approves) and `test-revoke` (no approval) serve renew and revoke
///   requests everywhere.
#[must_use]
pub fn directory_toml(connector_url: &str, connector_timeout: &str) -> String {
    let connector = format!(
        r#"connector = {{ type = "webhook", url = "{connector_url}", secret = "{SECRET}", timeout = "{connector_timeout}" }}"#
    );
    format!(
        r#"
[principals.alice]
name = "Alice Developer"
email = "alice@example.com"

[principals.bob]
name = "Bob Owner"
email = "bob@example.com"
slack_user_id = "U0BOB"

[principals.carol]
name = "Carol Security"
email = "carol@example.com"

[principals.dave]
name = "Dave Security"
email = "dave@example.com"

[principals.erin]
name = "Erin Bystander"
email = "erin@example.com"

[principals.admin]
name = "Ada Admin"
email = "admin@example.com"
roles = ["admin"]

[principals.audrey]
name = "Audrey Auditor"
email = "audrey@example.com"
roles = ["auditor"]

[principals.ci-bot]
kind = "service"
name = "CI bot"
owner = "alice"

[groups.security]
description = "Security team"
members = ["carol", "dave"]

[integrations.wiki-staging]
app = "wiki"
environment = "staging"
owner = "bob"
scopes = [
  {{ name = "read", risk = "low" }},
  {{ name = "edit", risk = "medium" }},
]
{connector}

[integrations.crm-prod]
app = "crm"
environment = "production"
owner = "bob"
scopes = [
  {{ name = "read", risk = "low" }},
  {{ name = "write", risk = "high" }},
]
{connector}

[integrations.ledger-sandbox]
app = "ledger"
environment = "sandbox"
owner = "bob"
scopes = [{{ name = "read", risk = "medium" }}]
{connector}

[integrations.hr-staging]
app = "hr"
environment = "staging"
owner = "bob"
scopes = [{{ name = "payroll", risk = "medium" }}]
{connector}

[integrations.ci-runner]
app = "ci"
environment = "staging"
owner = "alice"
scopes = [{{ name = "deploy", risk = "medium" }}]
{connector}
"#
    )
}

const GRANT_TAIL: &str = r#"
  - action:
      id: grant
      operation: grant
      retry: {max_attempts: 5, backoff: 200ms, max_backoff: 1s}
  - notify:
      id: granted
      event: granted
      to: [requester]
      message: "Access to {integration} ({scopes}) granted until {expires_at}. Request: {request}"
  - wait:
      id: until-expiry
      until: expiry
  - action:
      id: revoke
      operation: revoke
      retry: {max_attempts: 3, backoff: 200ms, max_backoff: 400ms}
  - notify:
      id: revoked
      event: revoked
      to: [requester, owner]
      message: "Access of {requester} to {integration} ({scopes}) revoked. Request: {request}"
"#;

/// The test workflows as `(file name, YAML)`.
#[must_use]
pub fn test_workflows() -> Vec<(String, String)> {
    let grant = format!(
        r#"key: test-grant
version: 1
kind: grant
description: One approval from the owner or security; revoked at expiry.
applies_to:
  integrations: ["*"]
parameters:
  default_duration: 2s
  max_duration: 1h
  require_justification: true
steps:
  - approval:
      id: owner-or-security
      approvers:
        owner: true
        groups: [security]
      timeout: 5m
{GRANT_TAIL}"#
    );
    let two_person = format!(
        r#"key: test-two-person
version: 1
kind: grant
description: Production needs two distinct approvals; two denials deny.
applies_to:
  environments: [production]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      id: two-person
      approvers:
        owner: true
        groups: [security]
      quorum: 2
      deny_quorum: 2
      timeout: 5m
{GRANT_TAIL}"#
    );
    let short = format!(
        r#"key: test-short-timeout
version: 1
kind: grant
description: The approval expires after two seconds.
applies_to:
  integrations: [ledger-sandbox]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      id: quick
      approvers:
        owner: true
      timeout: 2s
{GRANT_TAIL}"#
    );
    let renew = r#"key: test-renew
version: 1
kind: renew
description: The owner approves every extension.
parameters:
  default_duration: 1h
  max_duration: 2h
steps:
  - approval:
      id: owner
      approvers:
        owner: true
      timeout: 5m
  - action:
      id: renew
      operation: renew
      retry: {max_attempts: 3, backoff: 200ms, max_backoff: 400ms}
  - notify:
      id: renewed
      to: [requester]
      message: "Access to {integration} extended until {expires_at}. Request: {request}"
"#;
    let revoke = r#"key: test-revoke
version: 1
kind: revoke
description: Give access up early, no approval.
parameters:
  require_justification: false
steps:
  - action:
      id: revoke
      operation: revoke
      retry: {max_attempts: 3, backoff: 200ms, max_backoff: 400ms}
  - notify:
      id: revoked
      event: revoked
      to: [requester, owner]
      message: "Access to {integration} revoked early. Request: {request}"
"#;
    let reminder = format!(
        r#"key: test-reminder
version: 1
kind: grant
description: Two approvals; pending approvers are reminded every second.
applies_to:
  apps: [hr]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      id: two-with-reminders
      approvers:
        owner: true
        groups: [security]
      quorum: 2
      timeout: 5m
      reminder: 1s
{GRANT_TAIL}"#
    );
    vec![
        ("test-grant.yaml".to_owned(), grant),
        ("test-reminder.yaml".to_owned(), reminder),
        ("test-renew.yaml".to_owned(), renew.to_owned()),
        ("test-revoke.yaml".to_owned(), revoke.to_owned()),
        ("test-two-person.yaml".to_owned(), two_person),
        ("test-short-timeout.yaml".to_owned(), short),
    ]
}
