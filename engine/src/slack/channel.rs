//! The Slack notification channel: approval requests with buttons (in the step's channel, or as
//! a direct message to each approver), replaced in place once decided, with the rest of the
//! run's story as thread replies and direct messages to the people concerned.
//!
//! Every posted approval message is recorded (through the engine) before the next one is posted,
//! so a retried delivery skips what already went out. Replacements and thread replies are plain
//! repeats on retry: `chat.update` is idempotent; a thread reply may appear twice if Slack
//! accepted it but the answer was lost.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, SystemClock};
use crate::message::{Notification, RecipientInfo, SlackMessageRef};
use crate::notify::{DeliveryContext, NoContext, NotificationChannel};
use crate::outbound::ConnectorError;

use super::api::SlackApi;
use super::blocks;
use super::settings::ResolvedSlack;

/// Outcomes that close an approval: its messages are replaced without buttons.
const OUTCOMES: &[&str] = &["approved", "denied", "expired", "cancelled"];

/// Sends notifications to Slack.
pub struct SlackChannel {
    api: Arc<SlackApi>,
    approvals_channel: Option<String>,
    lookup_by_email: bool,
    clock: Arc<dyn Clock>,
    /// Email address → Slack user id (or none), from `users.lookupByEmail`.
    by_email: Mutex<HashMap<String, Option<String>>>,
}

impl fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackChannel").field("approvals_channel", &self.approvals_channel).finish_non_exhaustive()
    }
}

impl SlackChannel {
    /// A channel posting through `api` with `settings`.
    #[must_use]
    pub fn new(api: Arc<SlackApi>, settings: &ResolvedSlack) -> Self {
        Self {
            api,
            approvals_channel: settings.approvals_channel.clone(),
            lookup_by_email: settings.lookup_by_email,
            clock: Arc::new(SystemClock),
            by_email: Mutex::new(HashMap::new()),
        }
    }

    /// The Slack user id of `r`: from the directory, or looked up by email when enabled.
    async fn user_id(&self, r: &RecipientInfo) -> Result<Option<String>, ConnectorError> {
        if let Some(id) = r.slack_user_id.as_deref().filter(|id| !id.is_empty()) {
            return Ok(Some(id.to_owned()));
        }
        let Some(email) = r.email.as_deref().filter(|_| self.lookup_by_email) else { return Ok(None) };
        if let Some(found) = self.by_email.lock().unwrap_or_else(PoisonError::into_inner).get(email) {
            return Ok(found.clone());
        }
        let found = self.api.lookup_user_by_email(email).await?.map(|(id, _team)| id);
        self.by_email.lock().unwrap_or_else(PoisonError::into_inner).insert(email.to_owned(), found.clone());
        Ok(found)
    }

    /// Whether approval requests of `n`'s step go to a shared channel rather than DMs.
    fn shared_channel(&self, n: &Notification) -> bool {
        n.route.slack_channel.is_some() || self.approvals_channel.is_some()
    }

    /// Posts the approval request: once in the shared channel, or once per approver by DM.
    async fn request(&self, n: &Notification, ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        let step = n.route.step.unwrap_or_default();
        let posted = ctx.slack_messages().await?;
        let already = |recipient: &str| posted.iter().any(|m| m.step_index == step && m.recipient == recipient);
        let content = || blocks::approval_request(n, step, self.clock.now());
        if let Some(channel) = n.route.slack_channel.as_deref().or(self.approvals_channel.as_deref()) {
            if !already("") {
                let m = self.api.post_message(channel, content(), None).await?;
                let record =
                    SlackMessageRef { step_index: step, channel_id: m.channel, ts: m.ts, recipient: String::new() };
                ctx.record_slack_message(&record).await?;
            }
            return Ok(());
        }
        let mut reached = 0;
        for r in &n.recipients {
            if already(&r.principal) {
                reached += 1;
                continue;
            }
            let Some(user) = self.user_id(r).await? else {
                tracing::debug!(request.id = %n.request_id, recipient.principal = %r.principal, "no Slack user for this approver");
                continue;
            };
            let m = self.api.post_message(&user, content(), None).await?;
            let record =
                SlackMessageRef { step_index: step, channel_id: m.channel, ts: m.ts, recipient: r.principal.clone() };
            ctx.record_slack_message(&record).await?;
            reached += 1;
        }
        if reached == 0 && !n.recipients.is_empty() {
            // Nobody can be asked on Slack: say so, so the outbox audits it and falls back.
            return Err(ConnectorError::Permanent { message: "slack: no approver has a known Slack user".to_owned() });
        }
        Ok(())
    }

    /// Replaces the approval messages of the decided step with the outcome, then tells the
    /// people concerned (the requester) by DM.
    async fn outcome(&self, n: &Notification, ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        let posted = ctx.slack_messages().await?;
        let step = n.route.step;
        let actor = n.route.actor.as_deref().filter(|a| *a != "system");
        let now = self.clock.now();
        for m in posted.iter().filter(|m| step.is_none_or(|s| s == m.step_index)) {
            self.api.update_message(&m.channel_id, &m.ts, blocks::decided(n, &n.event, actor, now)).await?;
        }
        if n.event != "cancelled" {
            self.direct(n).await?;
        }
        Ok(())
    }

    /// Replies in the thread of every approval message of the run (the latest step's), and
    /// tells the recipients by DM.
    async fn follow_up(&self, n: &Notification, ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        let posted = ctx.slack_messages().await?;
        let latest = match n.route.step {
            Some(step) => Some(step),
            None => posted.iter().map(|m| m.step_index).max(),
        };
        for m in posted.iter().filter(|m| Some(m.step_index) == latest) {
            self.api.post_message(&m.channel_id, blocks::thread_reply(n), Some(&m.ts)).await?;
        }
        if n.event != "approval_reminder" {
            self.direct(n).await?;
        }
        Ok(())
    }

    /// A direct message to each recipient with a Slack user.
    async fn direct(&self, n: &Notification) -> Result<(), ConnectorError> {
        for r in &n.recipients {
            if let Some(user) = self.user_id(r).await? {
                self.api.post_message(&user, blocks::thread_reply(n), None).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl NotificationChannel for SlackChannel {
    fn name(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, n: &Notification) -> Result<(), ConnectorError> {
        self.deliver(n, &NoContext).await
    }

    async fn deliver(&self, n: &Notification, ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        match n.event.as_str() {
            "approval_requested" => self.request(n, ctx).await,
            // The added approvers get the request with its buttons (by DM); in a shared channel,
            // where they can already see it, the thread says it was escalated.
            "approval_escalated" if !self.shared_channel(n) => self.request(n, ctx).await,
            event if OUTCOMES.contains(&event) => self.outcome(n, ctx).await,
            // A manual task is the operator's business: a direct message, not the approvers' thread.
            "task_assigned" | "task_reminder" => self.direct(n).await,
            _ => self.follow_up(n, ctx).await,
        }
    }
}
