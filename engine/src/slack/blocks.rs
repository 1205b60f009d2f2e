//! Block Kit rendering: approval messages, their decided replacements, thread replies and modals.
//!
//! Every user-supplied string (justification, names, integration, scopes, reasons) reaches mrkdwn
//! only through [`escape`], and every mrkdwn text object is `verbatim`, so Slack parses no markup
//! but ours: a justification cannot ping `@channel`, mention a user or smuggle a link. Plain-text
//! objects need no escaping but are cut to Slack's length limits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use slack_morphism::prelude::*;
use uuid::Uuid;

use crate::message::{Notification, RequestSummary};

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "tollgate_approve";
/// `action_id` of the Deny button (which opens the [`deny_modal`]).
pub const ACTION_DENY: &str = "tollgate_deny";
/// `callback_id` of the [`deny_modal`].
pub const CALLBACK_DENY: &str = "tollgate_deny_reason";
/// `callback_id` of the [`request_modal`].
pub const CALLBACK_REQUEST: &str = "tollgate_request";

/// `block_id` of the deny modal's reason input (keys `view.state.values`).
pub const BLOCK_DENY_REASON: &str = "tollgate_deny_reason";
/// `action_id` of the deny modal's reason input.
pub const INPUT_DENY_REASON: &str = "reason";
/// `block_id` of the request modal's integration select.
pub const BLOCK_INTEGRATION: &str = "tollgate_integration";
/// `action_id` of the request modal's integration select.
pub const INPUT_INTEGRATION: &str = "integration";
/// `block_id` of the request modal's scopes input.
pub const BLOCK_SCOPES: &str = "tollgate_scopes";
/// `action_id` of the request modal's scopes input (comma- or space-separated).
pub const INPUT_SCOPES: &str = "scopes";
/// `block_id` of the request modal's duration input.
pub const BLOCK_DURATION: &str = "tollgate_duration";
/// `action_id` of the request modal's duration input (`"1h"`, `"30m"`, …).
pub const INPUT_DURATION: &str = "duration";
/// `block_id` of the request modal's justification input.
pub const BLOCK_JUSTIFICATION: &str = "tollgate_justification";
/// `action_id` of the request modal's justification input.
pub const INPUT_JUSTIFICATION: &str = "justification";
/// `block_id` of the request modal's break-glass checkbox (optional).
pub const BLOCK_BREAK_GLASS: &str = "tollgate_break_glass";
/// `action_id` of the request modal's break-glass checkbox; its one option's value is
/// [`BREAK_GLASS_VALUE`].
pub const INPUT_BREAK_GLASS: &str = "break_glass";
/// The value of the break-glass option when ticked.
pub const BREAK_GLASS_VALUE: &str = "break_glass";

/// Slack's limit on a header block's text, in characters.
pub const MAX_HEADER_CHARS: usize = 150;
/// Slack's limit on a button's text, in characters.
pub const MAX_BUTTON_CHARS: usize = 75;
/// Slack's limit on a section block's text, in characters.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit on one section field, in characters.
pub const MAX_FIELD_CHARS: usize = 2000;
/// Longest deny reason the modal accepts: a comment's limit on every path.
pub const MAX_DENY_REASON_CHARS: usize = crate::policy::MAX_COMMENT_CHARS;
/// Longest justification the request modal accepts: the limit on every path.
pub const MAX_JUSTIFICATION_CHARS: usize = crate::policy::MAX_JUSTIFICATION_CHARS;
/// Slack's limit on the options of a static select.
pub const MAX_SELECT_OPTIONS: usize = 100;

/// Slack's limits on an option's text and value, and on a modal's title and buttons.
const MAX_OPTION_TEXT_CHARS: usize = 75;
const MAX_OPTION_VALUE_CHARS: usize = 150;
const MAX_MODAL_TITLE_CHARS: usize = 24;
/// Above this a grant counts as long-lived in [`risk_hints`].
const LONG_LIVED: Duration = Duration::from_secs(8 * 60 * 60);
/// Scope fragments that suggest more than read access (matched case-insensitively).
const POWERFUL_SCOPE_MARKERS: &[&str] = &["write", "admin", "delete", ":all", "full"];

/// Escapes `&`, `<` and `>` for Slack mrkdwn, so the text shows as written and carries no
/// mention, channel ping or link.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, the last being "…" when something was cut.
#[must_use]
pub fn truncate(text: &str, max: usize) -> String {
    match cut_point(text, max) {
        None => text.to_owned(),
        Some(end) => format!("{}…", &text[..end]),
    }
}

/// [`truncate`] for escaped mrkdwn: never cuts an `&amp;`-style entity in half.
fn truncate_mrkdwn(text: &str, max: usize) -> String {
    let Some(mut end) = cut_point(text, max) else {
        return text.to_owned();
    };
    if let Some(amp) = text[..end].rfind('&')
        && !text[amp..end].contains(';')
    {
        end = amp;
    }
    format!("{}…", &text[..end])
}

/// Byte offset to cut `text` at so that it plus "…" fits in `max` characters; `None` if it fits.
fn cut_point(text: &str, max: usize) -> Option<usize> {
    if text.chars().count() <= max {
        return None;
    }
    Some(text.char_indices().nth(max.saturating_sub(1)).map_or(text.len(), |(i, _)| i))
}

/// The button value and modal `private_metadata` naming an approval step: `"{request_id}:{step}"`.
/// Only ever used as ids: the state is reloaded server-side.
#[must_use]
pub fn request_ref(request_id: Uuid, step_index: u32) -> String {
    format!("{request_id}:{step_index}")
}

/// Parses a [`request_ref`]; `None` for anything else.
#[must_use]
pub fn parse_request_ref(value: &str) -> Option<(Uuid, u32)> {
    let (id, step) = value.split_once(':')?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Uuid::parse_str(id).ok()?, step.parse().ok()?))
}

/// Short reasons an approver should look twice: `"production"` when the environment contains
/// "prod", `"write/admin scopes"` when a scope contains `write`, `admin`, `delete`, `:all` or
/// `full`, `"long-lived (>8h)"` when the duration exceeds 8 hours. Case-insensitive.
#[must_use]
pub fn risk_hints(summary: &RequestSummary) -> Vec<&'static str> {
    let mut hints = Vec::new();
    if summary.environment.to_lowercase().contains("prod") {
        hints.push("production");
    }
    if summary.scopes.iter().any(|s| {
        let s = s.to_lowercase();
        POWERFUL_SCOPE_MARKERS.iter().any(|m| s.contains(m))
    }) {
        hints.push("write/admin scopes");
    }
    if Duration::from_secs(summary.duration_secs) > LONG_LIVED {
        hints.push("long-lived (>8h)");
    }
    hints
}

/// The approval request for one step: the request summary, risk hints and Approve/Deny buttons
/// whose value is the [`request_ref`]. Block ids embed `now`, so each rendering gets new ones
/// (`chat.update` needs them).
#[must_use]
pub fn approval_request(n: &Notification, step_index: u32, now: DateTime<Utc>) -> SlackMessageContent {
    request_message(n, step_index, now, false)
}

/// [`approval_request`] marked as a reminder, to replace or repeat the original message.
#[must_use]
pub fn reminder(n: &Notification, step_index: u32, now: DateTime<Utc>) -> SlackMessageContent {
    request_message(n, step_index, now, true)
}

fn request_message(n: &Notification, step_index: u32, now: DateTime<Utc>, reminder: bool) -> SlackMessageContent {
    let ids = BlockIds::new(if reminder { "rem" } else { "req" }, now);
    let heading = heading(&n.request);
    let (header, fallback) = if reminder {
        (format!("Reminder: {heading}"), format!("Reminder: {}", fallback_text(&n.request)))
    } else {
        (heading, fallback_text(&n.request))
    };
    let mut blocks = summary_blocks(n, &header, &ids, now);
    let value = request_ref(n.request_id, step_index);
    blocks.push(
        SlackActionsBlock::new(vec![
            button(ACTION_APPROVE, "Approve", &value, SlackBlockButtonStyle::Primary),
            button(ACTION_DENY, "Deny", &value, SlackBlockButtonStyle::Danger),
        ])
        .with_block_id(ids.id("actions"))
        .into(),
    );
    SlackMessageContent::new().with_text(fallback).with_blocks(blocks)
}

/// The replacement for an approval message once it is decided: the same summary, no buttons, and
/// the outcome (`approved`, `denied`, `expired` or `cancelled`; anything else is shown as is)
/// with who decided and when. Block ids embed `at` and differ from the request's.
#[must_use]
pub fn decided(n: &Notification, outcome: &str, actor: Option<&str>, at: DateTime<Utc>) -> SlackMessageContent {
    let ids = BlockIds::new("dec", at);
    let mut blocks = summary_blocks(n, &heading(&n.request), &ids, at);
    let by = actor.map(|a| format!(" by {}", escape(a))).unwrap_or_default();
    let when = utc_text(at);
    let (line, word) = match outcome {
        "approved" => (format!("✅ *Approved*{by} at {when}"), "approved"),
        "denied" => (format!("❌ *Denied*{by} at {when}"), "denied"),
        "expired" => (format!("⌛ *Expired* at {when}"), "expired"),
        "cancelled" => (format!("🚫 *Cancelled*{by} at {when}"), "cancelled"),
        other => (format!("*{}*{by} at {when}", escape(other)), "decided"),
    };
    blocks.push(
        SlackSectionBlock::new().with_text(mrkdwn(line, MAX_SECTION_CHARS)).with_block_id(ids.id("outcome")).into(),
    );
    let fallback = format!("{} ({word})", fallback_text(&n.request));
    SlackMessageContent::new().with_text(fallback).with_blocks(blocks)
}

/// A short reply for the request's thread: grant, expiry and revocation events, reminders,
/// escalations and failures, with the notification's text below; `message` (and any event
/// without wording of its own) shows only the text.
#[must_use]
pub fn thread_reply(n: &Notification) -> SlackMessageContent {
    let r = &n.request;
    let headline = match n.event.as_str() {
        "granted" => format!(
            "🔓 *Access granted*{}",
            r.expires_at.map(|t| format!(" until {}", utc_text(t))).unwrap_or_default()
        ),
        "expiring" => {
            format!("⏳ *Access ends soon*{}", r.expires_at.map(|t| format!(": {}", utc_text(t))).unwrap_or_default())
        }
        "revoked" => "🔒 *Access revoked*".to_owned(),
        "revoke_failed" => "🚨 *Revocation failed*: access may still be in place".to_owned(),
        "approval_reminder" => match r.approvals_needed {
            Some(1) => "⏰ *Reminder*: this request still needs 1 approval".to_owned(),
            Some(k) => format!("⏰ *Reminder*: this request still needs {k} approvals"),
            None => "⏰ *Reminder*: this request still awaits a decision".to_owned(),
        },
        "escalated" | "approval_escalated" => "📣 *Escalated*".to_owned(),
        "task_assigned" => "🛠️ *A task for you*".to_owned(),
        "task_reminder" => "⏰ *Reminder*: a task of yours is still open".to_owned(),
        "expired" => "⌛ *Expired*".to_owned(),
        "failed" => "⚠️ *Failed*".to_owned(),
        "approved" => "✅ *Approved*".to_owned(),
        "denied" => "❌ *Denied*".to_owned(),
        "cancelled" => "🚫 *Cancelled*".to_owned(),
        _ => String::new(),
    };
    let detail = escape(n.text.trim());
    let text = match (headline.is_empty(), detail.is_empty()) {
        (true, true) => format!("Update on request {}", n.request_id),
        (true, false) => detail,
        (false, true) => headline,
        (false, false) => format!("{headline}\n{detail}"),
    };
    let text = truncate_mrkdwn(&text, MAX_SECTION_CHARS);
    SlackMessageContent::new()
        .with_text(text.clone())
        .with_blocks(vec![SlackSectionBlock::new().with_text(mrkdwn(text, MAX_SECTION_CHARS)).into()])
}

/// The modal asking a denying approver for a reason; `private_metadata` is the [`request_ref`].
#[must_use]
pub fn deny_modal(request_id: Uuid, step_index: u32, summary: &RequestSummary) -> SlackView {
    let about = format!(
        "*{}*\n*Requester:* {}\n*Scopes:* {}",
        escape(&heading(summary)),
        escape(&summary.requester),
        scopes_text(&summary.scopes)
    );
    let reason = SlackBlockPlainTextInputElement::new()
        .with_action_id(INPUT_DENY_REASON.into())
        .with_multiline(true)
        .with_max_length(MAX_DENY_REASON_CHARS as u64)
        .with_placeholder(plain("Why is this request denied?", MAX_OPTION_TEXT_CHARS));
    let blocks = vec![
        SlackSectionBlock::new().with_text(mrkdwn(about, MAX_SECTION_CHARS)).into(),
        SlackInputBlock::new(plain("Reason", MAX_OPTION_TEXT_CHARS), reason.into())
            .with_block_id(BLOCK_DENY_REASON.into())
            .with_hint(plain("Shown to the requester and kept in the audit log.", MAX_FIELD_CHARS))
            .with_optional(false)
            .into(),
    ];
    SlackView::Modal(
        SlackModalView::new(plain("Deny request", MAX_MODAL_TITLE_CHARS), blocks)
            .with_callback_id(CALLBACK_DENY.into())
            .with_private_metadata(request_ref(request_id, step_index))
            .with_submit(plain("Deny", MAX_MODAL_TITLE_CHARS))
            .with_close(plain("Cancel", MAX_MODAL_TITLE_CHARS)),
    )
}

/// The modal for requesting access: integration (static select of the first
/// [`MAX_SELECT_OPTIONS`] entries of `integrations`, each described by its allowed scopes),
/// scopes, duration and justification, all required. `private_metadata` is `channel_id` (where
/// the request was started) or `""`. Integrations whose name exceeds Slack's 150-character option
/// value are left out; with none to offer, the modal only says so.
#[must_use]
pub fn request_modal(integrations: &[(String, Vec<String>)], channel_id: Option<&str>) -> SlackView {
    let options: Vec<SlackBlockChoiceItem<SlackBlockPlainTextOnly>> = integrations
        .iter()
        .filter(|(name, _)| !name.is_empty() && name.chars().count() <= MAX_OPTION_VALUE_CHARS)
        .take(MAX_SELECT_OPTIONS)
        .map(|(name, scopes)| {
            let item = SlackBlockChoiceItem::new(plain(name, MAX_OPTION_TEXT_CHARS), name.clone());
            if scopes.is_empty() {
                item
            } else {
                item.with_description(plain(&format!("Scopes: {}", scopes.join(", ")), MAX_OPTION_TEXT_CHARS))
            }
        })
        .collect();
    let view = SlackModalView::new(plain("Request access", MAX_MODAL_TITLE_CHARS), Vec::new())
        .with_callback_id(CALLBACK_REQUEST.into())
        .with_private_metadata(channel_id.unwrap_or_default().to_owned());
    if options.is_empty() {
        let none = SlackSectionBlock::new()
            .with_text(mrkdwn("No integrations are available to request.".to_owned(), MAX_SECTION_CHARS));
        return SlackView::Modal(view.with_blocks(vec![none.into()]).with_close(plain("Close", MAX_MODAL_TITLE_CHARS)));
    }
    let mut select = SlackBlockStaticSelectElement::new()
        .with_action_id(INPUT_INTEGRATION.into())
        .with_placeholder(plain("Choose an integration", MAX_OPTION_TEXT_CHARS));
    if let [only] = options.as_slice() {
        select = select.with_initial_option(only.clone());
    }
    let select = select.with_options(options);
    let blocks = vec![
        input(BLOCK_INTEGRATION, "Integration", select.into(), None),
        input(
            BLOCK_SCOPES,
            "Scopes",
            text_input(INPUT_SCOPES, "e.g. repo:read, issues:write", false, None),
            Some("Separate scopes with commas or spaces."),
        ),
        input(BLOCK_DURATION, "Duration", text_input(INPUT_DURATION, "e.g. 1h, 30m, 2h 30m", false, Some(32)), None),
        input(
            BLOCK_JUSTIFICATION,
            "Justification",
            text_input(INPUT_JUSTIFICATION, "What do you need the access for?", true, Some(MAX_JUSTIFICATION_CHARS)),
            Some("Approvers see this text."),
        ),
        SlackInputBlock::new(
            plain("Emergency", MAX_OPTION_TEXT_CHARS),
            SlackBlockCheckboxesElement::new(vec![
                SlackBlockChoiceItem::new(
                    SlackBlockText::from(plain("Break-glass: grant now, review after", MAX_OPTION_TEXT_CHARS)),
                    BREAK_GLASS_VALUE.to_owned(),
                )
                .with_description(plain("A denied or late review revokes it at once.", MAX_OPTION_TEXT_CHARS)),
            ])
            .with_action_id(INPUT_BREAK_GLASS.into())
            .into(),
        )
        .with_block_id(BLOCK_BREAK_GLASS.into())
        .with_optional(true)
        .into(),
    ];
    SlackView::Modal(
        view.with_blocks(blocks)
            .with_submit(plain("Request", MAX_MODAL_TITLE_CHARS))
            .with_close(plain("Cancel", MAX_MODAL_TITLE_CHARS)),
    )
}

/// Block ids unique to one rendering: `tg.{kind}.{micros}.{name}`. The kind keeps a decided
/// message's ids distinct from its request's even at the same instant.
struct BlockIds {
    prefix: String,
}

impl BlockIds {
    fn new(kind: &str, at: DateTime<Utc>) -> Self {
        Self { prefix: format!("tg.{kind}.{}", at.timestamp_micros()) }
    }

    fn id(&self, name: &str) -> SlackBlockId {
        SlackBlockId::new(format!("{}.{name}", self.prefix))
    }
}

/// Header, fields, justification and context shared by the request and decided messages.
fn summary_blocks(n: &Notification, header: &str, ids: &BlockIds, now: DateTime<Utc>) -> Vec<SlackBlock> {
    let r = &n.request;
    let mut fields = vec![
        field("Requester", &escape(&r.requester)),
        field("Integration", &format!("{} ({})", escape(&r.integration), escape(&r.environment))),
        field("Scopes", &scopes_text(&r.scopes)),
        field("Duration", &duration_text(r.duration_secs)),
    ];
    if let Some(needed) = r.approvals_needed {
        fields.push(field("Approvals needed", &needed.to_string()));
    }
    if let Some(deadline) = r.deadline {
        fields.push(field("Deadline", &format!("{} ({})", utc_text(deadline), relative(deadline, now))));
    }
    let justification = if r.justification.trim().is_empty() {
        "_none given_".to_owned()
    } else {
        escape(r.justification.trim()).lines().map(|line| format!(">{line}")).collect::<Vec<_>>().join("\n")
    };
    let mut context: Vec<SlackContextBlockElement> = vec![mrkdwn_text(format!("Request `{}`", n.request_id)).into()];
    let hints = risk_hints(r);
    if !hints.is_empty() {
        context.push(mrkdwn_text(format!("⚠️ {}", escape(&hints.join(" · ")))).into());
    }
    vec![
        SlackHeaderBlock::new(plain(header, MAX_HEADER_CHARS)).with_block_id(ids.id("header")).into(),
        SlackSectionBlock::new().with_fields(fields).with_block_id(ids.id("fields")).into(),
        SlackSectionBlock::new()
            .with_text(mrkdwn(format!("*Justification*\n{justification}"), MAX_SECTION_CHARS))
            .with_block_id(ids.id("justification"))
            .into(),
        SlackContextBlock::new(context).with_block_id(ids.id("context")).into(),
    ]
}

/// "Access request: {integration} ({environment})", worded by request kind. Not escaped.
fn heading(r: &RequestSummary) -> String {
    if r.emergency {
        return format!("🚨 EMERGENCY break-glass access: {} ({})", r.integration, r.environment);
    }
    let title = match r.kind.as_str() {
        "renew" => "Renewal request",
        "rotate" => "Rotation request",
        "revoke" => "Revocation request",
        _ => "Access request",
    };
    format!("{title}: {} ({})", r.integration, r.environment)
}

/// The message's `text`, used by notifications and screen readers; escaped like any mrkdwn.
fn fallback_text(r: &RequestSummary) -> String {
    truncate_mrkdwn(
        &format!("{} from {} for {}", escape(&heading(r)), escape(&r.requester), duration_text(r.duration_secs)),
        MAX_SECTION_CHARS,
    )
}

fn scopes_text(scopes: &[String]) -> String {
    if scopes.is_empty() { "—".to_owned() } else { escape(&scopes.join(", ")) }
}

fn duration_text(secs: u64) -> String {
    if secs == 0 { "—".to_owned() } else { humantime::format_duration(Duration::from_secs(secs)).to_string() }
}

fn utc_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "in 3h 59m" (whole minutes) or "passed".
fn relative(deadline: DateTime<Utc>, now: DateTime<Utc>) -> String {
    match (deadline - now).to_std() {
        Ok(left) if left.as_secs() >= 60 => {
            format!("in {}", humantime::format_duration(Duration::from_secs(left.as_secs() / 60 * 60)))
        }
        Ok(left) if !left.is_zero() => "in under a minute".to_owned(),
        _ => "passed".to_owned(),
    }
}

/// A verbatim mrkdwn text object from already-escaped `text`, cut to `max` characters.
fn mrkdwn(text: String, max: usize) -> SlackBlockText {
    mrkdwn_text(truncate_mrkdwn(&text, max)).into()
}

fn mrkdwn_text(text: String) -> SlackBlockMarkDownText {
    // Verbatim: Slack must not turn bare URLs, `#channel` or `@here` into links or mentions.
    SlackBlockMarkDownText::new(text).with_verbatim(true)
}

/// A section field: bold label over an already-escaped value.
fn field(label: &str, value: &str) -> SlackBlockText {
    mrkdwn(format!("*{label}*\n{value}"), MAX_FIELD_CHARS)
}

fn plain(text: &str, max: usize) -> SlackBlockPlainTextOnly {
    SlackBlockPlainTextOnly::from(truncate(text, max))
}

fn button(action_id: &str, text: &str, value: &str, style: SlackBlockButtonStyle) -> SlackActionBlockElement {
    SlackBlockButtonElement::new(plain(text, MAX_BUTTON_CHARS))
        .with_action_id(action_id.into())
        .with_value(value.to_owned())
        .with_style(style)
        .into()
}

fn input(block_id: &str, label: &str, element: SlackInputBlockElement, hint: Option<&str>) -> SlackBlock {
    SlackInputBlock::new(plain(label, MAX_OPTION_TEXT_CHARS), element)
        .with_block_id(block_id.into())
        .opt_hint(hint.map(|h| plain(h, MAX_FIELD_CHARS)))
        .with_optional(false)
        .into()
}

fn text_input(action_id: &str, placeholder: &str, multiline: bool, max: Option<usize>) -> SlackInputBlockElement {
    SlackBlockPlainTextInputElement::new()
        .with_action_id(action_id.into())
        .with_placeholder(plain(placeholder, MAX_OPTION_VALUE_CHARS))
        .with_multiline(multiline)
        .opt_max_length(max.map(|m| m as u64))
        .into()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::Value;

    use super::*;

    const NASTY: &str = "<!channel> <@U123> <https://x|y> & done";
    const ESCAPED: &str = "&lt;!channel&gt; &lt;@U123&gt; &lt;https://x|y&gt; &amp; done";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, 10, 0, 0).unwrap()
    }

    fn notification() -> Notification {
        Notification {
            idempotency_key: "run:step:approval_requested:1".to_owned(),
            event: "approval_requested".to_owned(),
            request_id: Uuid::parse_str("01959e3a-7c1e-7aa0-b5d4-2c4f1d0e9a11").unwrap(),
            recipients: Vec::new(),
            request: RequestSummary {
                kind: "grant".to_owned(),
                requester: "alice <@U999>".to_owned(),
                integration: "github-org".to_owned(),
                environment: "production".to_owned(),
                scopes: vec!["repo:read".to_owned(), "admin:org".to_owned()],
                duration_secs: 9 * 3600,
                justification: NASTY.to_owned(),
                status: "pending".to_owned(),
                approvals_needed: Some(2),
                deadline: Some(now() + chrono::Duration::minutes(90)),
                expires_at: None,
                emergency: false,
            },
            text: String::new(),
            route: crate::message::Route::default(),
        }
    }

    fn json<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn blocks_of(content: &SlackMessageContent) -> Vec<Value> {
        json(content)["blocks"].as_array().unwrap().clone()
    }

    fn block_ids(content: &SlackMessageContent) -> Vec<String> {
        blocks_of(content).iter().map(|b| b["block_id"].as_str().unwrap().to_owned()).collect()
    }

    /// Every mrkdwn text object in `value`, wherever it sits.
    fn mrkdwn_objects(value: &Value, found: &mut Vec<Value>) {
        match value {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    found.push(value.clone());
                }
                map.values().for_each(|v| mrkdwn_objects(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| mrkdwn_objects(v, found)),
            _ => {}
        }
    }

    #[test]
    fn user_text_is_escaped_and_verbatim_everywhere() {
        assert_eq!(escape(NASTY), ESCAPED);
        let n = notification();
        for content in [approval_request(&n, 0, now()), decided(&n, "denied", Some("bob <!here>"), now())] {
            let value = json(&content);
            let text = value.to_string();
            assert!(text.contains(ESCAPED), "{text}");
            assert!(!text.contains("<!channel>") && !text.contains("<@U"), "{text}");
            assert!(!text.contains("<!here>") && !text.contains("<https://"), "{text}");
            let mut objects = Vec::new();
            mrkdwn_objects(&value, &mut objects);
            assert!(!objects.is_empty());
            assert!(objects.iter().all(|o| o["verbatim"] == Value::Bool(true)), "{objects:?}");
        }
        // The justification is quoted line by line.
        let mut n = notification();
        n.request.justification = "first line\nsecond > line".to_owned();
        let text = json(&approval_request(&n, 0, now())).to_string();
        assert!(text.contains(r"*Justification*\n>first line\n>second &gt; line"), "{text}");
    }

    #[test]
    fn approval_request_carries_summary_hints_and_buttons() {
        let n = notification();
        let content = approval_request(&n, 3, now());
        let blocks = blocks_of(&content);
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["header", "section", "section", "context", "actions"]);
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[0]["text"]["text"], "Access request: github-org (production)");
        let fields = blocks[1]["fields"].to_string();
        for expected in ["*Requester*", "alice &lt;@U999&gt;", "repo:read, admin:org", "9h", "*Approvals needed*\\n2"] {
            assert!(fields.contains(expected), "{expected} in {fields}");
        }
        assert!(fields.contains("2025-03-04 11:30 UTC (in 1h 30m)"), "{fields}");
        let context = blocks[3].to_string();
        assert!(context.contains("production · write/admin scopes · long-lived (&gt;8h)"), "{context}");
        assert!(context.contains(&n.request_id.to_string()), "{context}");

        let buttons = blocks[4]["elements"].as_array().unwrap();
        let value = format!("{}:3", n.request_id);
        assert_eq!(buttons[0]["action_id"], ACTION_APPROVE);
        assert_eq!(buttons[0]["style"], "primary");
        assert_eq!(buttons[0]["value"], value.as_str());
        assert_eq!(buttons[1]["action_id"], ACTION_DENY);
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(buttons[1]["value"], value.as_str());
        assert_eq!(parse_request_ref(&value), Some((n.request_id, 3)));
        assert!(
            content
                .text
                .as_deref()
                .unwrap()
                .starts_with("Access request: github-org (production) from alice &lt;@U999&gt;")
        );

        let ids = block_ids(&content);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        // A later rendering (a reminder) gets new block ids.
        let later = reminder(&n, 3, now() + chrono::Duration::seconds(1));
        assert!(block_ids(&later).iter().all(|id| !ids.contains(id)));
        assert_eq!(blocks_of(&later)[0]["text"]["text"], "Reminder: Access request: github-org (production)");
    }

    #[test]
    fn decided_replaces_buttons_with_the_outcome_under_new_block_ids() {
        let n = notification();
        let request = approval_request(&n, 0, now());
        for (outcome, actor, expected) in [
            ("approved", Some("bob"), "✅ *Approved* by bob at 2025-03-04 10:00 UTC"),
            ("denied", Some("bob"), "❌ *Denied* by bob at 2025-03-04 10:00 UTC"),
            ("expired", None, "⌛ *Expired* at 2025-03-04 10:00 UTC"),
            ("cancelled", None, "🚫 *Cancelled* at 2025-03-04 10:00 UTC"),
            ("weird<>", None, "*weird&lt;&gt;* at 2025-03-04 10:00 UTC"),
        ] {
            // Decided at the very instant of the request: the ids must still differ.
            let content = decided(&n, outcome, actor, now());
            let blocks = blocks_of(&content);
            assert!(blocks.iter().all(|b| b["type"] != "actions"), "{blocks:?}");
            assert_eq!(blocks.last().unwrap()["text"]["text"], expected);
            assert!(block_ids(&content).iter().all(|id| !block_ids(&request).contains(id)));
        }
    }

    #[test]
    fn long_texts_are_cut_to_slack_limits() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("ééééééé", 3), "éé…");
        // An entity is never cut in half.
        assert_eq!(truncate_mrkdwn("abc&amp;def", 6), "abc…");
        assert_eq!(truncate_mrkdwn("ab&lt;def", 8), "ab&lt;d…");

        let mut n = notification();
        n.request.integration = "i".repeat(200);
        n.request.justification = "&".repeat(2000);
        let blocks = blocks_of(&approval_request(&n, 0, now()));
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), MAX_HEADER_CHARS);
        assert!(header.ends_with('…'));
        let justification = blocks[2]["text"]["text"].as_str().unwrap();
        assert_eq!(justification.chars().count(), MAX_SECTION_CHARS - 3 + 1, "cut before the partial entity");
        assert!(justification.ends_with("&amp;…"));
        for f in blocks[1]["fields"].as_array().unwrap() {
            assert!(f["text"].as_str().unwrap().chars().count() <= MAX_FIELD_CHARS);
        }
    }

    #[test]
    fn risk_hints_flag_production_powerful_scopes_and_long_grants() {
        let mut r = notification().request;
        assert_eq!(risk_hints(&r), ["production", "write/admin scopes", "long-lived (>8h)"]);
        r.environment = "staging".to_owned();
        r.scopes = vec!["repo:read".to_owned()];
        r.duration_secs = 8 * 3600;
        assert!(risk_hints(&r).is_empty());
        for scope in ["Contents:WRITE", "files:delete", "mail:all", "FullAccess"] {
            r.scopes = vec![scope.to_owned()];
            assert_eq!(risk_hints(&r), ["write/admin scopes"], "{scope}");
        }
        r.environment = "PROD-eu".to_owned();
        r.scopes.clear();
        assert_eq!(risk_hints(&r), ["production"]);
        // No hints, no hint element.
        let mut n = notification();
        n.request =
            RequestSummary { environment: "dev".to_owned(), scopes: Vec::new(), duration_secs: 60, ..n.request };
        let context = &blocks_of(&approval_request(&n, 0, now()))[3];
        assert_eq!(context["elements"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn thread_replies_are_short_and_escaped() {
        let mut n = notification();
        n.event = "granted".to_owned();
        n.request.expires_at = Some(now() + chrono::Duration::hours(1));
        n.text = "Granted to <@U1> & co".to_owned();
        let content = thread_reply(&n);
        let text = content.text.clone().unwrap();
        assert_eq!(text, "🔓 *Access granted* until 2025-03-04 11:00 UTC\nGranted to &lt;@U1&gt; &amp; co");
        assert_eq!(blocks_of(&content)[0]["text"]["text"], text.as_str());
        assert_eq!(blocks_of(&content)[0]["text"]["verbatim"], true);

        n.event = "message".to_owned();
        assert_eq!(thread_reply(&n).text.unwrap(), "Granted to &lt;@U1&gt; &amp; co");
        n.event = "revoke_failed".to_owned();
        n.text.clear();
        assert_eq!(thread_reply(&n).text.unwrap(), "🚨 *Revocation failed*: access may still be in place");
        n.event = "approval_reminder".to_owned();
        assert_eq!(thread_reply(&n).text.unwrap(), "⏰ *Reminder*: this request still needs 2 approvals");
        for event in ["expiring", "revoked", "escalated", "expired", "failed"] {
            n.event = event.to_owned();
            assert!(!thread_reply(&n).text.unwrap().is_empty(), "{event}");
        }
    }

    #[test]
    fn deny_modal_asks_for_a_bounded_reason() {
        let n = notification();
        let view = json(&deny_modal(n.request_id, 1, &n.request));
        assert_eq!(view["type"], "modal");
        assert_eq!(view["callback_id"], CALLBACK_DENY);
        assert_eq!(view["private_metadata"], format!("{}:1", n.request_id));
        assert_eq!(view["submit"]["text"], "Deny");
        assert_eq!(view["close"]["text"], "Cancel");
        assert!(view["title"]["text"].as_str().unwrap().chars().count() <= 24);
        let input = &view["blocks"][1];
        assert_eq!(input["type"], "input");
        assert_eq!(input["block_id"], BLOCK_DENY_REASON);
        assert_eq!(input["optional"], false);
        assert_eq!(input["element"]["type"], "plain_text_input");
        assert_eq!(input["element"]["action_id"], INPUT_DENY_REASON);
        assert_eq!(input["element"]["multiline"], true);
        assert_eq!(input["element"]["max_length"], crate::policy::MAX_COMMENT_CHARS);
        assert!(!view.to_string().contains("<@U999>"));
    }

    #[test]
    fn request_modal_offers_integrations_and_required_inputs() {
        let integrations: Vec<(String, Vec<String>)> = (0..120)
            .map(|i| (format!("integration-{i}"), vec!["read".to_owned(), "write".to_owned()]))
            .chain([("x".repeat(151), Vec::new())])
            .collect();
        let view = json(&request_modal(&integrations, Some("C42")));
        assert_eq!(view["callback_id"], CALLBACK_REQUEST);
        assert_eq!(view["private_metadata"], "C42");
        let blocks = view["blocks"].as_array().unwrap();
        let ids: Vec<&str> = blocks.iter().map(|b| b["block_id"].as_str().unwrap()).collect();
        assert_eq!(ids, [BLOCK_INTEGRATION, BLOCK_SCOPES, BLOCK_DURATION, BLOCK_JUSTIFICATION, BLOCK_BREAK_GLASS]);
        assert!(blocks[..4].iter().all(|b| b["type"] == "input" && b["optional"] == false));
        let emergency = &blocks[4];
        assert_eq!(
            (emergency["optional"].as_bool(), emergency["element"]["type"].as_str()),
            (Some(true), Some("checkboxes"))
        );
        assert_eq!(emergency["element"]["action_id"], INPUT_BREAK_GLASS);
        assert_eq!(emergency["element"]["options"][0]["value"], BREAK_GLASS_VALUE);
        let select = &blocks[0]["element"];
        assert_eq!(select["type"], "static_select");
        assert_eq!(select["action_id"], INPUT_INTEGRATION);
        let options = select["options"].as_array().unwrap();
        assert_eq!(options.len(), MAX_SELECT_OPTIONS);
        assert_eq!(options[0]["value"], "integration-0");
        assert_eq!(options[0]["description"]["text"], "Scopes: read, write");
        assert!(select.get("initial_option").is_none());
        assert_eq!(blocks[1]["element"]["action_id"], INPUT_SCOPES);
        assert_eq!(blocks[2]["element"]["action_id"], INPUT_DURATION);
        assert_eq!(blocks[3]["element"]["action_id"], INPUT_JUSTIFICATION);
        assert_eq!(blocks[3]["element"]["multiline"], true);
        assert_eq!(blocks[3]["element"]["max_length"], MAX_JUSTIFICATION_CHARS);

        let one = json(&request_modal(&[("github".to_owned(), Vec::new())], None));
        assert_eq!(one["private_metadata"], "");
        assert_eq!(one["blocks"][0]["element"]["initial_option"]["value"], "github");
        let none = json(&request_modal(&[], None));
        assert!(none.get("submit").is_none());
        assert_eq!(none["blocks"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn request_refs_round_trip_and_reject_garbage() {
        let id = Uuid::parse_str("01959e3a-7c1e-7aa0-b5d4-2c4f1d0e9a11").unwrap();
        assert_eq!(parse_request_ref(&request_ref(id, 7)), Some((id, 7)));
        for bad in [
            "",
            "x:1",
            &format!("{id}"),
            &format!("{id}:"),
            &format!("{id}:-1"),
            &format!("{id}:1:2"),
            &format!("{id}:+1"),
        ] {
            assert_eq!(parse_request_ref(bad), None, "{bad}");
        }
    }
}
