//! The semantic rules a definition must satisfy beyond its shape, each reported with a field path.

use std::collections::{HashMap, HashSet};

use crate::model::{
    ActionStep, ApprovalStep, Condition, CredentialVersion, Duration, NotifyStep, Operation, Step, WaitStep, WaitUntil,
    WorkflowDefinition, WorkflowKind,
};

/// Longest accepted identifier (`key`, step `id`).
const MAX_ID_LEN: usize = 64;
/// Longest accepted notification message, in characters.
const MAX_MESSAGE_CHARS: usize = 2000;
/// Most attempts a retry policy may make.
const MAX_ATTEMPTS: u32 = 100;
/// Longest accepted duration of any kind, in a definition or in a request (the engine refuses
/// longer requested durations whatever the workflow says). Keeps every deadline it computes far from
/// overflow, and no grant lasts longer than this anyway.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);
/// Placeholders the engine fills in notification messages.
const PLACEHOLDERS: &[&str] = &["requester", "integration", "scopes", "expires_at", "request"];

/// One broken rule: where (a field path like `steps[1].approval.timeout`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Checks every rule. Problems come in the order definitions are usually written: top-level
/// fields, then each step, then the rules that span steps.
pub(crate) fn validate(def: &WorkflowDefinition) -> Result<(), Vec<Problem>> {
    let mut v = Validator::default();
    v.definition(def);
    if v.problems.is_empty() { Ok(()) } else { Err(v.problems) }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

/// The notification channels a step may route to.
const CHANNELS: &[&str] = &["slack", "email", "webhook"];

impl Validator {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    fn definition(&mut self, def: &WorkflowDefinition) {
        if let Err(why) = check_identifier(&def.key) {
            self.report("key", format!("invalid key {:?}: {why}", def.key));
        }
        if def.version < 1 {
            self.report("version", "version must be at least 1");
        }
        self.text("description", &def.description);
        let a = &def.applies_to;
        self.names("applies_to.integrations", &a.integrations);
        self.names("applies_to.apps", &a.apps);
        self.names("applies_to.environments", &a.environments);
        self.parameters(def);
        if def.steps.is_empty() {
            self.report("steps", "a workflow needs at least one step");
        }
        self.steps(def);
        self.required_operation(def);
        self.previous_versions(def);
        if def.kind == WorkflowKind::Grant {
            self.expiry_chain(def);
        }
        if let Some(b) = &def.break_glass {
            self.break_glass(def, b);
        }
    }

    fn break_glass(&mut self, def: &WorkflowDefinition, b: &crate::model::BreakGlass) {
        if def.kind != WorkflowKind::Grant {
            self.report("break_glass", "break-glass is emergency access: only grant workflows may offer it");
        }
        if b.requesters.is_empty() {
            self.report(
                "break_glass.requesters",
                "name the groups or users who may use break-glass (it is never open to everyone)",
            );
        }
        self.principals("break_glass.requesters", &b.requesters.groups, &b.requesters.users);
        self.approval("break_glass.review", &b.review);
        if b.review.when.is_some() || b.review.unless.is_some() {
            self.report("break_glass.review", "a review always happens: it takes no when/unless");
        }
        if b.review.on_timeout != crate::model::TimeoutOutcome::Deny {
            self.report("break_glass.review.on_timeout", "a review not done in time always revokes the access");
        }
    }

    fn parameters(&mut self, def: &WorkflowDefinition) {
        let p = &def.parameters;
        if let Some(d) = p.default_duration {
            self.duration("parameters.default_duration", d);
        }
        if let Some(d) = p.max_duration {
            self.duration("parameters.max_duration", d);
        }
        if def.kind == WorkflowKind::Grant && p.max_duration.is_none() {
            self.report(
                "parameters.max_duration",
                "grant without expiry: a grant workflow must set parameters.max_duration \
                 (Tollgate grants no standing access)",
            );
        }
        // A renewal extends access by the duration asked for: without a bound a requester could
        // ask for any extension. No inheriting the grant workflow's bound: which grant workflow
        // (and version) made a grant is not the renew workflow's to know, and the bound must be
        // checkable when the definition is loaded.
        if def.kind == WorkflowKind::Renew && p.max_duration.is_none() {
            self.report(
                "parameters.max_duration",
                "renew without a limit: a renew workflow must set parameters.max_duration, the \
                 longest extension a request may ask for (at most 366 days)",
            );
        }
        if let Some(lifetime) = p.max_lifetime {
            self.duration("parameters.max_lifetime", lifetime);
            if def.kind != WorkflowKind::Renew {
                self.report(
                    "parameters.max_lifetime",
                    "max_lifetime caps a grant across its renewals: set it in renew workflows",
                );
            }
            if let Some(max) = p.max_duration
                && lifetime < max
            {
                self.report(
                    "parameters.max_lifetime",
                    format!("max_lifetime {lifetime} is shorter than max_duration {max}"),
                );
            }
        }
        if let (Some(default), Some(max)) = (p.default_duration, p.max_duration)
            && default > max
        {
            self.report(
                "parameters.default_duration",
                format!("default_duration {default} is longer than max_duration {max}"),
            );
        }
        self.principals("parameters.requesters", &p.requesters.groups, &p.requesters.users);
    }

    /// Text shown to people (a description, a message): printable, with tabs and line breaks.
    fn text(&mut self, path: &str, text: &str) {
        if let Some((at, c)) = text.chars().enumerate().find(|&(_, c)| c.is_control() && c != '\t' && c != '\n') {
            self.report(
                path,
                format!(
                    "control character {} (character {}) is not allowed: text shown to people may \
                     contain tabs and line breaks, but no other control characters",
                    code(c),
                    at + 1
                ),
            );
        }
    }

    /// Names (groups, users, integrations, apps, environments): one line of printable text each.
    fn names(&mut self, path: &str, names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
                self.report(
                    format!("{path}[{i}]"),
                    format!(
                        "control character {} (character {}) is not allowed in a name: names are \
                         one line of printable text",
                        code(c),
                        at + 1
                    ),
                );
            }
        }
    }

    fn principals(&mut self, path: &str, groups: &[String], users: &[String]) {
        self.names(&format!("{path}.groups"), groups);
        self.names(&format!("{path}.users"), users);
    }

    fn condition(&mut self, path: &str, condition: Option<&Condition>) {
        if let Some(c) = condition {
            self.names(&format!("{path}.environments"), &c.environments);
        }
    }

    fn duration(&mut self, path: &str, d: Duration) {
        if d > MAX_DURATION {
            self.report(path, format!("duration {d} is longer than the limit of 366 days"));
        }
    }

    fn steps(&mut self, def: &WorkflowDefinition) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, step) in def.steps.iter().enumerate() {
            let at = format!("steps[{i}].{}", step.type_name());
            if let Some(id) = step.id() {
                if let Err(why) = check_identifier(id) {
                    self.report(format!("{at}.id"), format!("invalid step id {id:?}: {why}"));
                }
                let first = *ids.entry(id).or_insert(i);
                if first != i {
                    self.report(
                        format!("{at}.id"),
                        format!("duplicate step id {id:?}: steps[{first}] already uses it"),
                    );
                }
            }
            let guard = step.guard();
            for (name, condition) in [("when", guard.when), ("unless", guard.unless)] {
                self.condition(&format!("{at}.{name}"), condition);
                if condition.is_some_and(Condition::is_empty) {
                    self.report(
                        format!("{at}.{name}"),
                        format!(
                            "empty `{name}` condition: name environments, any_scope_risk or \
                             all_scopes_risk, or remove it"
                        ),
                    );
                }
            }
            match step {
                Step::Approval(s) => self.approval(&at, s),
                Step::Action(s) => self.action(&at, s, def.kind),
                Step::Wait(s) => self.wait(&at, s, def.kind),
                Step::Notify(s) => self.notify(&at, s),
            }
        }
    }

    fn approval(&mut self, at: &str, s: &ApprovalStep) {
        if s.approvers.is_empty() {
            self.report(format!("{at}.approvers"), "approval without approvers: name groups, users or `owner: true`");
        }
        self.principals(&format!("{at}.approvers"), &s.approvers.groups, &s.approvers.users);
        if s.quorum < 1 {
            self.report(format!("{at}.quorum"), "quorum must be at least 1");
        }
        for (i, c) in s.channels.iter().enumerate() {
            if !CHANNELS.contains(&c.as_str()) {
                self.report(
                    format!("{at}.channels[{i}]"),
                    format!("unknown channel {c:?}; expected one of {CHANNELS:?}"),
                );
            }
        }
        if let Some(c) = &s.slack_channel
            && !(c.len() >= 9
                && c.starts_with(['C', 'G'])
                && c.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            self.report(format!("{at}.slack_channel"), "must be a Slack channel id such as C0123ABCD (not a #name)");
        }
        if s.deny_quorum < 1 {
            self.report(format!("{at}.deny_quorum"), "deny_quorum must be at least 1");
        }
        let a = &s.approvers;
        if a.groups.is_empty() && !a.owner && !a.users.is_empty() {
            let users = a.users.iter().collect::<HashSet<_>>().len();
            if s.quorum as usize > users {
                self.report(
                    format!("{at}.quorum"),
                    format!("quorum {} can never be reached: only {users} distinct users may approve", s.quorum),
                );
            }
            if s.deny_quorum as usize > users {
                self.report(
                    format!("{at}.deny_quorum"),
                    format!(
                        "deny_quorum {} can never be reached: only {users} distinct users may \
                         decide",
                        s.deny_quorum
                    ),
                );
            }
        }
        self.duration(&format!("{at}.timeout"), s.timeout);
        if let Some(reminder) = s.reminder {
            if reminder >= s.timeout {
                self.report(
                    format!("{at}.reminder"),
                    format!("reminder {reminder} is not shorter than timeout {}: it would never fire", s.timeout),
                );
            }
            self.duration(&format!("{at}.reminder"), reminder);
        }
        if let Some(e) = &s.escalation {
            if e.to.is_empty() {
                self.report(
                    format!("{at}.escalation.to"),
                    "escalation without approvers: name groups, users or `owner: true`",
                );
            }
            self.principals(&format!("{at}.escalation.to"), &e.to.groups, &e.to.users);
            if e.after >= s.timeout {
                self.report(
                    format!("{at}.escalation.after"),
                    format!(
                        "escalation after {} is not shorter than timeout {}: it would never happen",
                        e.after, s.timeout
                    ),
                );
            }
            self.duration(&format!("{at}.escalation.after"), e.after);
        }
    }

    fn action(&mut self, at: &str, s: &ActionStep, kind: WorkflowKind) {
        if s.operation == Operation::Grant && kind != WorkflowKind::Grant {
            self.report(
                format!("{at}.operation"),
                format!(
                    "operation `grant` is only allowed in grant workflows: access created by a \
                     {kind} workflow would never expire"
                ),
            );
        }
        let r = &s.retry;
        if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
            self.report(
                format!("{at}.retry.max_attempts"),
                format!("max_attempts must be between 1 and {MAX_ATTEMPTS}, not {}", r.max_attempts),
            );
        }
        if r.backoff > r.max_backoff {
            self.report(
                format!("{at}.retry.backoff"),
                format!("backoff {} is longer than max_backoff {}", r.backoff, r.max_backoff),
            );
        }
        self.duration(&format!("{at}.retry.backoff"), r.backoff);
        self.duration(&format!("{at}.retry.max_backoff"), r.max_backoff);
    }

    fn wait(&mut self, at: &str, s: &WaitStep, kind: WorkflowKind) {
        match (s.duration, s.until) {
            (Some(_), Some(_)) => {
                self.report(at, "a wait step takes `duration` or `until`, not both");
            }
            (None, None) => self.report(at, "a wait step needs `duration` or `until`"),
            (Some(d), None) => self.duration(&format!("{at}.duration"), d),
            (None, Some(WaitUntil::Expiry)) => {
                if kind != WorkflowKind::Grant {
                    self.report(
                        format!("{at}.until"),
                        format!(
                            "`until: expiry` is only allowed in grant workflows, not in a {kind} \
                             workflow"
                        ),
                    );
                }
            }
        }
    }

    fn notify(&mut self, at: &str, s: &NotifyStep) {
        if let Some(e) = s.event.as_deref().filter(|e| !crate::NOTIFY_EVENTS.contains(e)) {
            self.report(
                format!("{at}.event"),
                format!("unknown event {e:?}; expected one of {:?}", crate::NOTIFY_EVENTS),
            );
        }
        if s.to.is_empty() {
            self.report(format!("{at}.to"), "notify without recipients: name requester, approvers or owner");
        }
        let chars = s.message.chars().count();
        if s.message.trim().is_empty() {
            self.report(format!("{at}.message"), "the message is empty");
        } else if chars > MAX_MESSAGE_CHARS {
            self.report(
                format!("{at}.message"),
                format!("the message is {chars} characters long; the limit is {MAX_MESSAGE_CHARS}"),
            );
        }
        self.text(&format!("{at}.message"), &s.message);
        if let Some(unknown) = unknown_placeholder(&s.message) {
            self.report(
                format!("{at}.message"),
                format!(
                    "unknown placeholder {{{unknown}}}; the known ones are {}",
                    PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }

    /// Every workflow kind performs its own operation at least once.
    fn required_operation(&mut self, def: &WorkflowDefinition) {
        let needed = match def.kind {
            WorkflowKind::Grant => Operation::Grant,
            WorkflowKind::Renew => Operation::Renew,
            WorkflowKind::Rotate => Operation::Rotate,
            WorkflowKind::Revoke => Operation::Revoke,
        };
        let present = def.steps.iter().any(|s| matches!(s, Step::Action(a) if a.operation == needed));
        if !present && !def.steps.is_empty() {
            self.report("steps", format!("a {} workflow needs an `action` step with `operation: {needed}`", def.kind));
        }
    }

    /// `version: previous` names the version a rotation replaced: only a rotate workflow has
    /// one, only after its `rotate` step, and only `revoke` and `verify` act on it.
    fn previous_versions(&mut self, def: &WorkflowDefinition) {
        let rotated = def.steps.iter().position(|s| matches!(s, Step::Action(a) if a.operation == Operation::Rotate));
        for (i, step) in def.steps.iter().enumerate() {
            let Step::Action(a) = step else { continue };
            if a.version != CredentialVersion::Previous {
                continue;
            }
            let at = format!("steps[{i}].action.version");
            if !matches!(a.operation, Operation::Revoke | Operation::Verify) {
                self.report(at, format!("`version: previous` applies to `revoke` and `verify`, not `{}`", a.operation));
            } else if def.kind != WorkflowKind::Rotate {
                self.report(
                    at,
                    "`version: previous` is the version a rotation replaced: only rotate workflows have one",
                );
            } else if rotated.is_none_or(|r| r > i) {
                self.report(
                    at,
                    "`version: previous` must come after the `rotate` action that makes a previous version",
                );
            } else if a.operation == Operation::Revoke && (a.when.is_some() || a.unless.is_some()) {
                self.report(
                    format!("steps[{i}].action"),
                    "the revocation of the previous version may not have `when` or `unless`: skipped, it would \
                     leave the old version valid",
                );
            }
        }
    }

    /// A grant must end: after the grant action, an unconditional `wait: {until: expiry}`,
    /// then an unconditional `revoke`. A `when`/`unless` on either could skip it and leave access
    /// standing.
    fn expiry_chain(&mut self, def: &WorkflowDefinition) {
        let unconditional = |s: &Step| {
            let g = s.guard();
            g.when.is_none() && g.unless.is_none()
        };
        let granted =
            def.steps.iter().position(|s| matches!(s, Step::Action(a) if a.operation == Operation::Grant)).unwrap_or(0);
        let wait = def.steps[granted..]
            .iter()
            .position(|s| unconditional(s) && matches!(s, Step::Wait(w) if w.until == Some(WaitUntil::Expiry)))
            .map(|w| granted + w);
        let revoke = wait.and_then(|w| {
            def.steps[w + 1..]
                .iter()
                .position(|s| unconditional(s) && matches!(s, Step::Action(a) if a.operation == Operation::Revoke))
        });
        let Some(revoke) = wait.zip(revoke).map(|(w, r)| w + 1 + r) else {
            if !def.steps.is_empty() {
                self.report(
                    "steps",
                    "grant without expiry: after the grant action, a grant workflow needs \
                     `- wait: {until: expiry}` followed by `- action: {operation: revoke}`, \
                     neither with `when` or `unless` (Tollgate grants no standing access)",
                );
            }
            return;
        };
        // Every way a run can end between the grant and its revocation (a deny, a timeout or a
        // cancel at an approval; a failed action) would end it with access in place and no
        // expiry timer left to revoke it. Only steps that cannot end the run may come between.
        for (i, step) in def.steps.iter().enumerate().take(revoke).skip(granted + 1) {
            let why = match step {
                Step::Approval(_) => {
                    "a deny, a timeout or a cancel here would end the run with access in place and \
                     nothing left to revoke it (access first, review later is not supported)"
                }
                Step::Action(_) => {
                    "a failure here would end the run with access in place and nothing left to revoke it"
                }
                Step::Wait(_) | Step::Notify(_) => continue,
            };
            self.report(
                format!("steps[{i}].{}", step.type_name()),
                format!(
                    "{} step between the grant action and its revocation: {why}; only `notify` and \
                     `wait` steps may come between them",
                    step.type_name()
                ),
            );
        }
    }
}

/// `U+001B` for a character.
fn code(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Checks `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
fn check_identifier(id: &str) -> Result<(), String> {
    let Some(first) = id.chars().next() else {
        return Err("it is empty".to_owned());
    };
    if id.len() > MAX_ID_LEN {
        return Err(format!("it is longer than {MAX_ID_LEN} characters"));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("it must start with a lowercase letter or a digit".to_owned());
    }
    if let Some(bad) =
        id.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{bad:?} is not allowed; use lowercase letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// The first `{name}` in `message` (name of lowercase letters and `_`) that is not a known
/// placeholder. Other braces are left alone, so JSON-ish text in a message is fine.
fn unknown_placeholder(message: &str) -> Option<&str> {
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let name = &rest[..close];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !PLACEHOLDERS.contains(&name)
        {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_key_charset() {
        for ok in ["a", "0", "standard-grant", "a.b_c-d", &"a".repeat(64)] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "A", "a b", "grant/1", "é", &"a".repeat(65)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_checked_but_other_braces_are_not() {
        assert_eq!(unknown_placeholder("until {expires_at} for {requester}"), None);
        assert_eq!(unknown_placeholder("until {expiry}"), Some("expiry"));
        assert_eq!(unknown_placeholder("json {\"a\": 1} and {} and {X} and {"), None);
    }
}
