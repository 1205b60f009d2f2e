//! The directory: principals (people and services), groups, and the registry of integrations.
//!
//! Loaded from configuration at start-up and mirrored into the database (every change audited);
//! decisions consult the in-memory copy, so eligibility is always checked against the directory
//! as it is at decision time, not as it was when a notification went out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tollgate_workflows::{Approvers, Principals, ReferenceKind, Risk, WorkflowDefinition};

use crate::connector::ConnectorConfig;

/// A person or a non-human identity that can authenticate with its own token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Unique id (set from the map key in configuration).
    #[serde(default)]
    pub id: String,
    /// Person or service.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Email address (used by the email channel).
    #[serde(default)]
    pub email: Option<String>,
    /// Slack user id (used by the Slack channel).
    #[serde(default)]
    pub slack_user_id: Option<String>,
    /// Global roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// For services: the accountable person. A person can never approve a request made by a
    /// service they own (no self-approval through a second identity).
    #[serde(default)]
    pub owner: Option<String>,
    /// Disabled principals cannot authenticate, request or approve.
    #[serde(default)]
    pub disabled: bool,
    /// The person behind this principal when one person has several principals (e.g. `alice`
    /// and `alice-admin` both with `person = "alice"`): no-self-approval and one-vote-per-person
    /// then hold across all of them. Principals sharing an email address or a Slack user id must
    /// declare the same person, or the directory is refused. Default: the principal's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

impl Principal {
    /// The principal accountable for this one: its owner for a service, itself otherwise.
    #[must_use]
    pub fn accountable_person(&self) -> &str {
        self.owner.as_deref().unwrap_or(&self.id)
    }

    /// The person this principal declares it is (`person`), or its id.
    #[must_use]
    pub fn person(&self) -> &str {
        self.person.as_deref().unwrap_or(&self.id)
    }

    /// Whether the principal holds `role`.
    #[must_use]
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What kind of identity a principal is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A human.
    #[default]
    Person,
    /// A CI job, AI agent or other non-human requester.
    Service,
}

impl PrincipalKind {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Service => "service",
        }
    }
}

/// Global roles. Requesting and approving are granted per workflow, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including revoking any grant and reading the audit log.
    Admin,
    /// Read everything, export and verify the audit log.
    Auditor,
}

impl Role {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }
}

/// A named set of principals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Member principal ids.
    #[serde(default)]
    pub members: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A scope that may be requested on an integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeDef {
    /// Scope name as the SaaS knows it.
    pub name: String,
    /// Risk level used by workflow conditions.
    #[serde(default = "medium")]
    pub risk: Risk,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

fn medium() -> Risk {
    Risk::Medium
}

/// An integration: one SaaS tenant/app connection whose access Tollgate governs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    /// Unique name (set from the map key in configuration).
    #[serde(default)]
    pub name: String,
    /// SaaS application, e.g. `salesforce`.
    pub app: String,
    /// Environment, e.g. `production`.
    pub environment: String,
    /// Owning principal id (accountable person).
    pub owner: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Requestable scopes.
    pub scopes: Vec<ScopeDef>,
    /// How to act on it. Holds secrets: never serialized to the API, the database or the log.
    #[serde(skip_serializing)]
    pub connector: ConnectorConfig,
}

impl Integration {
    /// The definition of a scope, if it may be requested.
    #[must_use]
    pub fn scope(&self, name: &str) -> Option<&ScopeDef> {
        self.scopes.iter().find(|s| s.name == name)
    }

    /// The connector type name (`webhook`, `manual`).
    #[must_use]
    pub fn connector_type(&self) -> &'static str {
        self.connector.type_name()
    }
}

/// The whole directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Principals by id.
    pub principals: BTreeMap<String, Principal>,
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
    /// Integrations by name.
    pub integrations: BTreeMap<String, Integration>,
}

/// A directory that refers to something it does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct DirectoryError {
    /// The configuration key at fault, e.g. `groups.security.members`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A workflow definition to check against the directory, and where it was read.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowSourceRef<'a> {
    /// Where it was read: a file name, or where a stored version comes from.
    pub source: &'a str,
    /// Its YAML text, when known: errors then give a line and column.
    pub text: Option<&'a str>,
    /// The definition.
    pub definition: &'a WorkflowDefinition,
}

/// A name that a workflow definition or a directory entry gives but the directory does not
/// define.
///
/// Displays as `{source}: workflow {key} v{version}: {field}: {message}` for a workflow, e.g.
/// `workflows/grant.yaml:27:17: workflow standard-grant v1: steps[0].approval.approvers.groups:
/// unknown group "secops"`, and as `{field}: {message}` for the directory's own entries, e.g.
/// `groups.security.members: unknown principal "ghost"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError {
    /// The workflow file (with `:line:column` when known), or empty for the directory's own
    /// entries (the caller knows which configuration file they come from).
    pub source: String,
    /// The workflow naming it, `key vN`; `None` for the directory's own entries.
    pub workflow: Option<String>,
    /// Field path: `steps[0].approval.approvers.groups` in a workflow (the step's index in
    /// `steps`, its type, the field), `groups.security.members` in the configuration.
    pub field: String,
    /// What is wrong, e.g. `unknown group "secops"`.
    pub message: String,
}

impl ReferenceError {
    fn in_config(field: String, message: String) -> Self {
        Self { source: String::new(), workflow: None, field, message }
    }
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.source.is_empty() {
            write!(f, "{}: ", self.source)?;
        }
        if let Some(w) = &self.workflow {
            write!(f, "workflow {w}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ReferenceError {}

impl Directory {
    /// Builds a directory, filling ids from map keys and checking every entry and every name
    /// an entry refers to ([`Self::dangling`]).
    ///
    /// # Errors
    /// The first invalid entry or dangling reference, naming its configuration key.
    pub fn new(
        principals: BTreeMap<String, Principal>,
        groups: BTreeMap<String, Group>,
        integrations: BTreeMap<String, Integration>,
    ) -> Result<Self, DirectoryError> {
        let directory = Self::unresolved(principals, groups, integrations)?;
        match directory.dangling().into_iter().next() {
            Some(e) => Err(DirectoryError { key: e.field, message: e.message }),
            None => Ok(directory),
        }
    }

    /// Builds a directory like [`Self::new`] but leaves the names its entries refer to (group
    /// members, owners, operators) unchecked, for a caller that then reports every dangling
    /// name at once with [`Self::check_references`].
    ///
    /// # Errors
    /// The first invalid entry (a service owning a service, two principals sharing an email
    /// address or Slack id, an integration without scopes or with a scope twice), naming its
    /// configuration key.
    pub fn unresolved(
        mut principals: BTreeMap<String, Principal>,
        groups: BTreeMap<String, Group>,
        mut integrations: BTreeMap<String, Integration>,
    ) -> Result<Self, DirectoryError> {
        let err = |key: String, message: String| DirectoryError { key, message };
        for (id, p) in &mut principals {
            p.id.clone_from(id);
            if p.name.is_empty() {
                p.name.clone_from(id);
            }
        }
        for (id, p) in &principals {
            if let Some(owner) = &p.owner
                && principals.get(owner).is_some_and(|o| o.kind != PrincipalKind::Person)
            {
                return Err(err(format!("principals.{id}.owner"), format!("owner {owner:?} must be a person")));
            }
        }
        check_shared_contacts(&principals)?;
        for (name, i) in &mut integrations {
            i.name.clone_from(name);
            if i.scopes.is_empty() {
                return Err(err(format!("integrations.{name}.scopes"), "at least one scope is required".to_owned()));
            }
            let mut seen = BTreeSet::new();
            for s in &i.scopes {
                if !seen.insert(&s.name) {
                    return Err(err(format!("integrations.{name}.scopes"), format!("duplicate scope {:?}", s.name)));
                }
            }
            // The oauth2 and github_app connectors mint only the integration's scopes.
            if let ConnectorConfig::Oauth2(o) = &mut i.connector {
                o.integration_scopes = i.scopes.iter().map(|s| s.name.clone()).collect();
            }
            if let ConnectorConfig::GithubApp(g) = &mut i.connector {
                g.integration_scopes = i.scopes.iter().map(|s| s.name.clone()).collect();
            }
        }
        Ok(Self { principals, groups, integrations })
    }

    /// Every name the directory's own entries give that it does not define: a principal's
    /// `owner`, a group's `members`, an integration's `owner` and its manual connector's
    /// `operator`. In configuration order (principals, groups, integrations, each by name).
    #[must_use]
    pub fn dangling(&self) -> Vec<ReferenceError> {
        let mut out = Vec::new();
        let mut principal = |field: String, id: &str| {
            if !self.principals.contains_key(id) {
                out.push(ReferenceError::in_config(field, format!("unknown principal {id:?}")));
            }
        };
        for (id, p) in &self.principals {
            if let Some(owner) = &p.owner {
                principal(format!("principals.{id}.owner"), owner);
            }
        }
        for (name, g) in &self.groups {
            for m in &g.members {
                principal(format!("groups.{name}.members"), m);
            }
        }
        for (name, i) in &self.integrations {
            principal(format!("integrations.{name}.owner"), &i.owner);
            if let ConnectorConfig::Manual(m) = &i.connector {
                principal(format!("integrations.{name}.connector.operator"), &m.operator);
            }
        }
        out
    }

    /// Every group and principal `workflow` names ([`WorkflowDefinition::references`]) that the
    /// directory does not define, each with its file (and line and column when the text is
    /// known), workflow and field path.
    #[must_use]
    pub fn dangling_in(&self, workflow: &WorkflowSourceRef<'_>) -> Vec<ReferenceError> {
        let def = workflow.definition;
        def.references()
            .into_iter()
            .filter(|r| match r.kind {
                ReferenceKind::Group => !self.groups.contains_key(r.name),
                ReferenceKind::Principal => !self.principals.contains_key(r.name),
            })
            .map(|r| {
                let at = workflow.text.and_then(|t| tollgate_workflows::locate(t, &r.item_path()));
                let source = match at {
                    Some((line, column)) => format!("{}:{line}:{column}", workflow.source),
                    None => workflow.source.to_owned(),
                };
                ReferenceError {
                    source,
                    workflow: Some(format!("{} v{}", def.key, def.version)),
                    field: r.field.clone(),
                    message: format!("unknown {} {:?}", r.kind.as_str(), r.name),
                }
            })
            .collect()
    }

    /// Checks every name the directory's own entries ([`Self::dangling`]) and the given workflow
    /// definitions ([`Self::dangling_in`]) refer to: a workflow naming a group or principal that
    /// does not exist would otherwise load, and its requests wait for nobody.
    ///
    /// # Errors
    /// Every dangling reference, the directory's first, then each workflow's in order.
    pub fn check_references<'a>(
        &self,
        workflows: impl IntoIterator<Item = WorkflowSourceRef<'a>>,
    ) -> Result<(), Vec<ReferenceError>> {
        let mut errors = self.dangling();
        for w in workflows {
            errors.extend(self.dangling_in(&w));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// A principal that exists and is enabled.
    #[must_use]
    pub fn active_principal(&self, id: &str) -> Option<&Principal> {
        self.principals.get(id).filter(|p| !p.disabled)
    }

    /// Whether `principal` is in any of `groups`.
    #[must_use]
    pub fn in_any_group(&self, principal: &str, groups: &[String]) -> bool {
        groups.iter().any(|g| self.groups.get(g).is_some_and(|g| g.members.iter().any(|m| m == principal)))
    }

    /// Whether `principal` may ask under a workflow's requester rule (empty rule: anyone).
    #[must_use]
    pub fn may_request(&self, principal: &str, rule: &Principals) -> bool {
        rule.is_empty() || rule.users.iter().any(|u| u == principal) || self.in_any_group(principal, &rule.groups)
    }

    /// Every enabled person named by `approvers` for `integration`, minus anyone who is (or is
    /// accountable for) `requester`. Sorted, deduplicated.
    #[must_use]
    pub fn eligible_approvers(&self, approvers: &Approvers, integration: &Integration, requester: &str) -> Vec<String> {
        let mut ids: BTreeSet<&str> = approvers.users.iter().map(String::as_str).collect();
        for g in &approvers.groups {
            if let Some(g) = self.groups.get(g) {
                ids.extend(g.members.iter().map(String::as_str));
            }
        }
        if approvers.owner {
            ids.insert(&integration.owner);
        }
        ids.into_iter()
            .filter(|id| self.is_eligible_approver(id, approvers, integration, requester))
            .map(str::to_owned)
            .collect()
    }

    /// Whether `approver` may decide, right now, on a request by `requester`.
    #[must_use]
    pub fn is_eligible_approver(
        &self,
        approver: &str,
        approvers: &Approvers,
        integration: &Integration,
        requester: &str,
    ) -> bool {
        let Some(p) = self.active_principal(approver) else { return false };
        if p.kind != PrincipalKind::Person || self.is_same_person(approver, requester) {
            return false;
        }
        approvers.users.iter().any(|u| u == approver)
            || self.in_any_group(approver, &approvers.groups)
            || (approvers.owner && integration.owner == approver)
    }

    /// The person behind principal `id`: a service's owner's person, a principal's declared
    /// `person`, or the id itself.
    #[must_use]
    pub fn person_of<'a>(&'a self, id: &'a str) -> &'a str {
        person_of(&self.principals, id)
    }

    /// Whether two principals are the same person: the same principal, one a service the other
    /// (or another principal of theirs) owns, or principals declaring the same `person`.
    #[must_use]
    pub fn is_same_person(&self, a: &str, b: &str) -> bool {
        a == b || self.person_of(a) == self.person_of(b)
    }
}

fn person_of<'a>(principals: &'a BTreeMap<String, Principal>, id: &'a str) -> &'a str {
    let Some(p) = principals.get(id) else { return id };
    match p.owner.as_deref().and_then(|o| principals.get(o)) {
        Some(owner) => owner.person(),
        None => p.person(),
    }
}

/// Refuses two principals that share an email address (compared case-insensitively) or a Slack
/// user id unless they declare the same person: otherwise one person could approve their own
/// request through a second principal, and one inbox or Slack user would receive another
/// principal's approval links and buttons.
fn check_shared_contacts(principals: &BTreeMap<String, Principal>) -> Result<(), DirectoryError> {
    let mut seen: BTreeMap<(&str, String), &str> = BTreeMap::new();
    for (id, p) in principals {
        let contacts = [
            ("email", p.email.as_deref().map(|e| e.trim().to_lowercase())),
            ("slack_user_id", p.slack_user_id.as_deref().map(|u| u.trim().to_owned())),
        ];
        for (field, value) in contacts {
            let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
            let display = value.clone();
            if let Some(first) = seen.insert((field, value), id.as_str())
                && person_of(principals, first) != person_of(principals, id)
            {
                return Err(DirectoryError {
                    key: format!("principals.{id}.{field}"),
                    message: format!(
                        "{display:?} is also the {field} of principal {first:?}: principals {first:?} and {id:?} \
                         would be one person to Slack or email but two to approval rules; declare them \
                         one person (person = \"...\" on both) or give each its own {field}"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(email: Option<&str>, slack: Option<&str>, person: Option<&str>, owner: Option<&str>) -> Principal {
        Principal {
            id: String::new(),
            kind: if owner.is_some() { PrincipalKind::Service } else { PrincipalKind::Person },
            name: String::new(),
            email: email.map(str::to_owned),
            slack_user_id: slack.map(str::to_owned),
            roles: Vec::new(),
            owner: owner.map(str::to_owned),
            disabled: false,
            person: person.map(str::to_owned),
        }
    }

    fn directory(entries: Vec<(&str, Principal)>) -> Result<Directory, DirectoryError> {
        let principals = entries.into_iter().map(|(id, p)| (id.to_owned(), p)).collect();
        Directory::new(principals, BTreeMap::new(), BTreeMap::new())
    }

    #[test]
    fn principals_sharing_an_email_or_slack_id_must_declare_one_person() {
        let shared_email = directory(vec![
            ("alice", principal(Some("alice@example.com"), None, None, None)),
            ("alice-alt", principal(Some(" Alice@Example.com"), None, None, None)),
        ]);
        let e = shared_email.expect_err("a shared email is refused");
        assert_eq!(e.key, "principals.alice-alt.email");
        assert!(e.message.contains("\"alice\"") && e.message.contains("\"alice-alt\""), "{e}");

        let shared_slack = directory(vec![
            ("alice", principal(None, Some("U1"), None, None)),
            ("bob", principal(None, Some("U2"), None, None)),
            ("mallory", principal(None, Some("U1"), Some("mallory"), None)),
        ]);
        assert_eq!(shared_slack.expect_err("refused").key, "principals.mallory.slack_user_id");

        // Declared as one person: accepted, and one person to every rule.
        let d = directory(vec![
            ("alice", principal(Some("alice@example.com"), Some("U1"), Some("alice"), None)),
            ("alice-alt", principal(Some("alice@example.com"), Some("U1"), Some("alice"), None)),
            ("ci", principal(Some("alice@example.com"), None, None, Some("alice-alt"))),
            ("bob", principal(Some("bob@example.com"), None, None, None)),
        ])
        .expect("one person, three principals");
        assert!(d.is_same_person("alice", "alice-alt"));
        assert!(d.is_same_person("ci", "alice"), "a service is its owner's person");
        assert!(!d.is_same_person("bob", "alice-alt"));
        assert!(d.is_same_person("nobody", "nobody") && !d.is_same_person("nobody", "alice"));
    }

    const WORKFLOW: &str = "key: standard-grant
version: 1
kind: grant
parameters:
  max_duration: 1h
  requesters: { groups: [staff, ghosts] }
steps:
  - approval:
      approvers: { owner: true, groups: [security, secops], users: [bob, zed] }
      timeout: 1h
      escalation: { after: 30m, to: { users: [cto] } }
  - action: { operation: grant }
  - wait: { until: expiry }
  - action: { operation: revoke }
";

    fn integration(owner: &str, operator: &str) -> Integration {
        serde_json::from_value(serde_json::json!({
            "app": "crm", "environment": "production", "owner": owner,
            "scopes": [{ "name": "write" }],
            "connector": { "type": "manual", "operator": operator },
        }))
        .expect("valid integration")
    }

    fn dangling_directory() -> Directory {
        let principals = [
            ("alice", principal(None, None, None, None)),
            ("bob", principal(None, None, None, None)),
            ("ci", principal(None, None, None, Some("nobody"))),
        ]
        .into_iter()
        .map(|(id, p)| (id.to_owned(), p))
        .collect();
        let group = |members: &[&str]| Group {
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            description: String::new(),
        };
        let groups = BTreeMap::from([
            ("security".to_owned(), group(&["bob", "ghost"])),
            ("staff".to_owned(), group(&["alice"])),
        ]);
        let integrations = BTreeMap::from([
            ("crm".to_owned(), integration("bob", "opsbot")),
            ("erp".to_owned(), integration("vacant", "bob")),
        ]);
        Directory::unresolved(principals, groups, integrations).expect("valid entries")
    }

    #[test]
    fn every_dangling_reference_is_reported_with_its_file_workflow_and_field() {
        let dir = dangling_directory();
        let def = tollgate_workflows::parse_definition("workflows/grant.yaml", WORKFLOW).expect("valid");
        let source = WorkflowSourceRef { source: "workflows/grant.yaml", text: Some(WORKFLOW), definition: &def };
        let errors = dir.check_references([source]).expect_err("dangling references");
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                r#"principals.ci.owner: unknown principal "nobody""#,
                r#"groups.security.members: unknown principal "ghost""#,
                r#"integrations.crm.connector.operator: unknown principal "opsbot""#,
                r#"integrations.erp.owner: unknown principal "vacant""#,
                r#"workflows/grant.yaml:6:33: workflow standard-grant v1: parameters.requesters.groups: unknown group "ghosts""#,
                r#"workflows/grant.yaml:9:52: workflow standard-grant v1: steps[0].approval.approvers.groups: unknown group "secops""#,
                r#"workflows/grant.yaml:9:74: workflow standard-grant v1: steps[0].approval.approvers.users: unknown principal "zed""#,
                r#"workflows/grant.yaml:11:47: workflow standard-grant v1: steps[0].approval.escalation.to.users: unknown principal "cto""#,
            ]
        );
        assert_eq!(errors[5].workflow.as_deref(), Some("standard-grant v1"));
        assert_eq!(errors[5].field, "steps[0].approval.approvers.groups");
        // Without the text (a version only the database holds), no line and column.
        let stored = WorkflowSourceRef { source: "stored", text: None, definition: &def };
        assert_eq!(dir.dangling_in(&stored)[0].source, "stored");
        // `new` refuses the first of the directory's own, naming its key.
        let e = Directory::new(dir.principals.clone(), dir.groups.clone(), dir.integrations.clone())
            .expect_err("dangling owner");
        assert_eq!((e.key.as_str(), e.message.as_str()), ("principals.ci.owner", r#"unknown principal "nobody""#));
    }

    #[test]
    fn a_directory_and_workflows_that_name_only_what_exists_pass() {
        let mut dir = dangling_directory();
        dir.principals.retain(|id, _| id != "ci");
        for p in ["ghost", "opsbot", "vacant", "zed", "cto"] {
            let mut person = principal(None, None, None, None);
            person.id = p.to_owned();
            dir.principals.insert(p.to_owned(), person);
        }
        dir.groups.insert("secops".to_owned(), Group::default());
        dir.groups.insert("ghosts".to_owned(), Group::default());
        let def = tollgate_workflows::parse_definition("grant.yaml", WORKFLOW).expect("valid");
        let source = WorkflowSourceRef { source: "grant.yaml", text: Some(WORKFLOW), definition: &def };
        assert_eq!(dir.check_references([source]), Ok(()));
        assert!(Directory::new(dir.principals.clone(), dir.groups.clone(), dir.integrations.clone()).is_ok());
    }
}
