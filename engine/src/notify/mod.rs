//! Notification channels: how requests, reminders and outcomes reach people; a channel never changes a run's state.
//!
//! A channel renders and delivers a [`Notification`] (a core value, [`crate::message`]) and
//! answers with a [`ConnectorError`] that says whether a retry can help; the outbox dispatcher
//! does the retrying and the writer records the outcome.

pub mod email;
pub mod webhook;

use crate::message::{IssuedLink, Notification, SlackMessageRef};
use crate::outbound::ConnectorError;

/// A delivery channel.
#[async_trait::async_trait]
pub trait NotificationChannel: Send + Sync + std::fmt::Debug {
    /// Channel name used in the audit log (`webhook`, `log`, later `slack`, `email`).
    fn name(&self) -> &'static str;

    /// Delivers `notification`.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] for transient failures, [`ConnectorError::Permanent`] otherwise.
    async fn send(&self, notification: &Notification) -> Result<(), ConnectorError>;

    /// Delivers `notification` with access to the engine (approval links, message records).
    /// Channels that need nothing from the engine keep the default, [`Self::send`].
    ///
    /// # Errors
    /// As [`Self::send`].
    async fn deliver(&self, notification: &Notification, _ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        self.send(notification).await
    }
}

/// What a channel may ask of the engine while delivering one outbox item (of one run and step).
#[async_trait::async_trait]
pub trait DeliveryContext: Send + Sync {
    /// Issues single-use email approval links for `principals` at the item's approval step, in
    /// order; `None` for a principal who cannot decide there (the requester, no longer eligible,
    /// already voted) and for everyone once the step is over. Each link is stored (hashed)
    /// before this returns.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when the links cannot be recorded now.
    async fn approval_links(&self, principals: &[String]) -> Result<Vec<Option<IssuedLink>>, ConnectorError>;

    /// The Slack messages already posted about this run, oldest first.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when they cannot be read now.
    async fn slack_messages(&self) -> Result<Vec<SlackMessageRef>, ConnectorError> {
        Ok(Vec::new())
    }

    /// Records a Slack message posted about this run (before anything else is posted, so a
    /// retried delivery skips it).
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when it cannot be recorded now.
    async fn record_slack_message(&self, _message: &SlackMessageRef) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A context that offers nothing: no links are issued (previews, tests, channels used alone).
#[derive(Debug, Default)]
pub struct NoContext;

#[async_trait::async_trait]
impl DeliveryContext for NoContext {
    async fn approval_links(&self, principals: &[String]) -> Result<Vec<Option<IssuedLink>>, ConnectorError> {
        Ok(vec![None; principals.len()])
    }
}

/// A channel that only logs that a notification was produced (used when none is configured).
#[derive(Debug, Default)]
pub struct LogChannel;

#[async_trait::async_trait]
impl NotificationChannel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<(), ConnectorError> {
        tracing::info!(request.id = %n.request_id, event = %n.event, recipients = n.recipients.len(), "notification (no channel configured)");
        Ok(())
    }
}
