//! The names a definition gives that only the directory can resolve: groups and principals.
//!
//! A definition is valid on its own terms without them (the workflow crate knows no directory);
//! the engine checks each [`Reference`] against its directory at start-up and in
//! `tollgate workflows validate --config`, so that a workflow naming someone who does not exist
//! is refused instead of waiting for nobody.

use crate::model::{ApprovalStep, Principals, Step, WorkflowDefinition};

/// What a name in a definition must be in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceKind {
    /// A group (`groups: [...]`).
    Group,
    /// A principal (`users: [...]`).
    Principal,
}

impl ReferenceKind {
    /// `group` or `principal`, as error messages say it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Principal => "principal",
        }
    }
}

/// A group or principal named by a definition, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    /// Group or principal.
    pub kind: ReferenceKind,
    /// The name as written.
    pub name: &'a str,
    /// Field path of the list holding it, as validation errors write paths:
    /// `steps[0].approval.approvers.groups`, `break_glass.review.escalation.to.users`.
    pub field: String,
    /// Its position in that list, so that `{field}[{index}]` locates the item itself.
    pub index: usize,
}

impl Reference<'_> {
    /// The path of the item itself, e.g. `steps[0].approval.approvers.groups[1]`.
    #[must_use]
    pub fn item_path(&self) -> String {
        format!("{}[{}]", self.field, self.index)
    }
}

impl WorkflowDefinition {
    /// Every group and principal the definition names, in the order they are written: who may
    /// ask (`parameters.requesters`), each approval step's `approvers` and `escalation.to`, and
    /// `break_glass`'s `requesters` and review. Notify steps name roles (`requester`, `owner`,
    /// `approvers`), never people, so they name nothing here.
    #[must_use]
    pub fn references(&self) -> Vec<Reference<'_>> {
        let mut out = Vec::new();
        principals(&mut out, "parameters.requesters", &self.parameters.requesters);
        for (i, step) in self.steps.iter().enumerate() {
            if let Step::Approval(a) = step {
                approval(&mut out, &format!("steps[{i}].approval"), a);
            }
        }
        if let Some(b) = &self.break_glass {
            principals(&mut out, "break_glass.requesters", &b.requesters);
            approval(&mut out, "break_glass.review", &b.review);
        }
        out
    }
}

fn approval<'a>(out: &mut Vec<Reference<'a>>, at: &str, a: &'a ApprovalStep) {
    lists(out, &format!("{at}.approvers"), &a.approvers.groups, &a.approvers.users);
    if let Some(e) = &a.escalation {
        lists(out, &format!("{at}.escalation.to"), &e.to.groups, &e.to.users);
    }
}

fn principals<'a>(out: &mut Vec<Reference<'a>>, at: &str, p: &'a Principals) {
    lists(out, at, &p.groups, &p.users);
}

fn lists<'a>(out: &mut Vec<Reference<'a>>, at: &str, groups: &'a [String], users: &'a [String]) {
    for (kind, field, names) in [(ReferenceKind::Group, "groups", groups), (ReferenceKind::Principal, "users", users)] {
        for (index, name) in names.iter().enumerate() {
            out.push(Reference { kind, name, field: format!("{at}.{field}"), index });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_definition;

    const WORKFLOW: &str = r"
key: refs
version: 1
kind: grant
parameters:
  max_duration: 1h
  requesters: { groups: [staff], users: [ci] }
steps:
  - notify: { to: [owner, approvers], message: hello }
  - approval:
      approvers: { owner: true, groups: [security, sre], users: [bob] }
      timeout: 1h
      escalation: { after: 30m, to: { users: [cto] } }
  - action: { operation: grant }
  - wait: { until: expiry }
  - action: { operation: revoke }
break_glass:
  requesters: { users: [alice] }
  review:
    approvers: { groups: [security] }
    timeout: 1h
";

    #[test]
    fn every_group_and_principal_a_definition_names_is_listed_with_its_path() {
        let def = parse_definition("refs.yaml", WORKFLOW).expect("valid");
        let got: Vec<(ReferenceKind, &str, String)> =
            def.references().iter().map(|r| (r.kind, r.name, r.item_path())).collect();
        let (g, p) = (ReferenceKind::Group, ReferenceKind::Principal);
        let want = [
            (g, "staff", "parameters.requesters.groups[0]"),
            (p, "ci", "parameters.requesters.users[0]"),
            (g, "security", "steps[1].approval.approvers.groups[0]"),
            (g, "sre", "steps[1].approval.approvers.groups[1]"),
            (p, "bob", "steps[1].approval.approvers.users[0]"),
            (p, "cto", "steps[1].approval.escalation.to.users[0]"),
            (p, "alice", "break_glass.requesters.users[0]"),
            (g, "security", "break_glass.review.approvers.groups[0]"),
        ];
        let want: Vec<(ReferenceKind, &str, String)> =
            want.into_iter().map(|(k, n, path)| (k, n, path.to_owned())).collect();
        assert_eq!(got, want);
        // Each path leads back to the name in the text.
        for r in def.references() {
            let (line, column) = crate::parse::locate(WORKFLOW, &r.item_path()).expect("located");
            let at = WORKFLOW.lines().nth(line - 1).expect("line");
            let rest: String = at.chars().skip(column - 1).collect();
            assert!(rest.starts_with(r.name), "{} at {line}:{column}: {at:?}", r.item_path());
        }
    }

    #[test]
    fn a_definition_naming_only_roles_names_nothing() {
        let def = parse_definition(
            "roles.yaml",
            "key: roles\nversion: 1\nkind: revoke\nsteps:\n  - approval: { approvers: { owner: true }, timeout: 1h }\n  - action: { operation: revoke }\n",
        )
        .expect("valid");
        assert!(def.references().is_empty());
        assert_eq!(ReferenceKind::Group.as_str(), "group");
        assert_eq!(ReferenceKind::Principal.as_str(), "principal");
    }
}
