//! The manual connector: hands the action to a named operator as plain-language instructions.
//!
//! Nothing is called: [`ManualConnector::execute`] returns [`ActionOutcome::AwaitingOperator`]
//! and the engine turns it into a task that the operator confirms once done.

use std::time::Duration;

use chrono::SecondsFormat;
use serde::Deserialize;
use tollgate_workflows::Operation;

use super::{ActionOutcome, Connector};
use crate::action::ConnectorAction;
use crate::outbound::{ConfigError, ConnectorError};

/// Settings of the manual connector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualSettings {
    /// The principal who performs the action and confirms it.
    pub operator: String,
    /// Text shown before the generated instructions (e.g. a runbook link).
    #[serde(default)]
    pub instructions: Option<String>,
    /// How often the operator is reminded of an open task, e.g. `"4h"` (at least a second, at
    /// most a week), or `"off"`; default [`DEFAULT_REMIND_EVERY`].
    #[serde(default)]
    pub remind_every: Option<String>,
}

/// Reminder interval of an open task when the settings name none.
pub const DEFAULT_REMIND_EVERY: Duration = Duration::from_secs(4 * 3600);
/// Shortest reminder interval.
pub const MIN_REMIND_EVERY: Duration = Duration::from_secs(1);
/// Longest reminder interval.
pub const MAX_REMIND_EVERY: Duration = Duration::from_secs(7 * 86_400);

/// Asks an operator to perform the action by hand.
#[derive(Debug, Clone)]
pub struct ManualConnector {
    settings: ManualSettings,
    remind_every: Option<Duration>,
}

impl ManualConnector {
    /// Validates `settings`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `operator` when it is blank.
    pub fn new(settings: &ManualSettings) -> Result<Self, ConfigError> {
        if settings.operator.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "operator",
                reason: "name the principal who performs the action".to_owned(),
            });
        }
        let remind_every = match settings.remind_every.as_deref().map(str::trim) {
            None => Some(DEFAULT_REMIND_EVERY),
            Some("off") => None,
            Some(text) => {
                let invalid = |reason: String| ConfigError::Invalid { field: "remind_every", reason };
                let d = humantime::parse_duration(text)
                    .map_err(|e| invalid(format!("{text:?} is not a duration ({e}); write e.g. \"4h\", or \"off\"")))?;
                if !(MIN_REMIND_EVERY..=MAX_REMIND_EVERY).contains(&d) {
                    return Err(invalid(format!("{text:?}: between 1s and 7days, or \"off\"")));
                }
                Some(d)
            }
        };
        Ok(Self { settings: settings.clone(), remind_every })
    }

    /// The text shown to the operator: the configured instructions, if any, then a sentence
    /// saying what to do, to whom, where, until when, and the idempotency key.
    #[must_use]
    pub fn instructions(&self, action: &ConnectorAction) -> String {
        let generated = describe(action);
        match self.settings.instructions.as_deref().map(str::trim) {
            Some(configured) if !configured.is_empty() => format!("{configured}\n\n{generated}"),
            _ => generated,
        }
    }
}

#[async_trait::async_trait]
impl Connector for ManualConnector {
    fn kind(&self) -> &'static str {
        "manual"
    }

    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError> {
        Ok(ActionOutcome::AwaitingOperator {
            operator: self.settings.operator.clone(),
            instructions: self.instructions(action),
            remind_every: self.remind_every,
        })
    }
}

/// One paragraph describing `action` for a person.
fn describe(action: &ConnectorAction) -> String {
    let scopes = if action.scopes.is_empty() { "(no scopes listed)".to_owned() } else { action.scopes.join(", ") };
    let principal = &action.principal;
    let i = &action.integration;
    let on = format!("on integration {} ({}, {})", i.name, i.app, i.environment);
    let until = action.expires_at.map_or_else(
        || "with no end date given".to_owned(),
        |t| format!("until {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    let what = match action.operation {
        Operation::Grant => format!("Grant scopes {scopes} to principal {principal} {on} {until}."),
        Operation::Renew => {
            format!("Extend the access of principal {principal} to scopes {scopes} {on} {until}.")
        }
        Operation::Revoke => {
            format!("Revoke the access of principal {principal} to scopes {scopes} {on}.")
        }
        Operation::Rotate => format!(
            "Rotate the credential that gives principal {principal} scopes {scopes} {on}, \
             and revoke the old one."
        ),
        Operation::Verify if action.expect == Some(crate::action::Expect::Absent) => format!(
            "Check that principal {principal} no longer has any of scopes {scopes} {on} (the \
             access was revoked). Resolve the task as failed if any is still there."
        ),
        Operation::Verify => format!(
            "Check that the access of principal {principal} to scopes {scopes} {on} is as \
             Tollgate records it ({until}), and report any difference."
        ),
    };
    format!(
        "{what}\nIdempotency key: {} (run {}, grant {}). If this was already done for this key, \
         do not repeat it: just confirm.",
        action.idempotency_key, action.run_id, action.grant_id
    )
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::action::IntegrationRef;

    fn action(operation: Operation) -> ConnectorAction {
        ConnectorAction {
            operation,
            idempotency_key: "run-1:step-3".to_owned(),
            run_id: Uuid::from_u128(1),
            grant_id: Uuid::from_u128(2),
            integration: IntegrationRef {
                name: "gh-org".to_owned(),
                app: "github".to_owned(),
                environment: "production".to_owned(),
            },
            principal: "bob".to_owned(),
            scopes: vec!["repo".to_owned(), "read:org".to_owned()],
            expires_at: Some("2030-01-02T03:04:05.678Z".parse().unwrap()),
            attempt: 1,
            expect: None,
            version: None,
            keep_previous: false,
        }
    }

    #[tokio::test]
    async fn manual_grant_awaits_the_operator_with_clear_instructions() {
        let connector = ManualConnector::new(&ManualSettings {
            operator: "it-admin".to_owned(),
            instructions: Some("Follow runbook RB-12.\n".to_owned()),
            remind_every: Some("90m".to_owned()),
        })
        .unwrap();
        assert_eq!(connector.kind(), "manual");

        let outcome = connector.execute(&action(Operation::Grant)).await.unwrap();
        assert_eq!(
            outcome,
            ActionOutcome::AwaitingOperator {
                operator: "it-admin".to_owned(),
                instructions: "Follow runbook RB-12.\n\n\
                    Grant scopes repo, read:org to principal bob on integration gh-org (github, production) \
                    until 2030-01-02T03:04:05Z.\n\
                    Idempotency key: run-1:step-3 (run 00000000-0000-0000-0000-000000000001, \
                    grant 00000000-0000-0000-0000-000000000002). \
                    If this was already done for this key, do not repeat it: just confirm."
                    .to_owned(),
                remind_every: Some(Duration::from_secs(90 * 60)),
            }
        );
    }

    #[test]
    fn every_operation_is_described() {
        let connector = ManualConnector::new(&ManualSettings {
            operator: "ops".to_owned(),
            instructions: None,
            remind_every: None,
        })
        .unwrap();
        for (operation, start) in [
            (Operation::Grant, "Grant scopes"),
            (Operation::Renew, "Extend the access"),
            (Operation::Revoke, "Revoke the access"),
            (Operation::Rotate, "Rotate the credential"),
            (Operation::Verify, "Check that the access"),
        ] {
            let text = connector.instructions(&action(operation));
            assert!(text.starts_with(start), "{text}");
            assert!(text.contains("run-1:step-3") && text.contains("gh-org"), "{text}");
        }
        let mut revoke = action(Operation::Revoke);
        revoke.scopes.clear();
        revoke.expires_at = None;
        let text = connector.instructions(&revoke);
        assert!(text.starts_with("Revoke the access of principal bob to scopes (no scopes listed)"), "{text}");
    }

    #[test]
    fn blank_operator_is_rejected() {
        let err =
            ManualConnector::new(&ManualSettings { operator: " ".to_owned(), instructions: None, remind_every: None })
                .unwrap_err();
        assert_eq!(err.to_string(), "`operator`: name the principal who performs the action");
    }

    #[test]
    fn reminders_default_to_four_hours_and_are_bounded() {
        let settings = |every: Option<&str>| ManualSettings {
            operator: "ops".to_owned(),
            instructions: None,
            remind_every: every.map(str::to_owned),
        };
        assert_eq!(ManualConnector::new(&settings(None)).unwrap().remind_every, Some(DEFAULT_REMIND_EVERY));
        assert_eq!(ManualConnector::new(&settings(Some("off"))).unwrap().remind_every, None);
        assert_eq!(ManualConnector::new(&settings(Some("1s"))).unwrap().remind_every, Some(MIN_REMIND_EVERY));
        for bad in ["500ms", "8days", "soon", ""] {
            let err = ManualConnector::new(&settings(Some(bad))).unwrap_err().to_string();
            assert!(err.starts_with("`remind_every`:"), "{bad}: {err}");
        }
    }
}
