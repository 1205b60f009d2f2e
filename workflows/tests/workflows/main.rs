//! Tests of the workflow language through its public API: parse errors, rules, catalog, examples.

mod bundled;
mod catalog;
mod duration;
mod files;
mod parse_errors;
mod text;
mod validation;

use tollgate_workflows::{DefinitionError, WorkflowDefinition, parse_definition};

/// The smallest valid grant workflow, with `{steps}` placed before its grant/wait/revoke steps.
const GRANT: &str = "\
key: t
version: 1
kind: grant
parameters:
  max_duration: 8h
steps:
{steps}  - action:
      operation: grant
  - wait:
      until: expiry
  - action:
      operation: revoke
";

/// A grant workflow with `steps` (YAML list items at two spaces) before the required ones.
fn grant_with(steps: &str) -> String {
    GRANT.replace("{steps}", steps)
}

fn accept(text: &str) -> WorkflowDefinition {
    parse_definition("test.yaml", text).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
}

fn reject(text: &str) -> DefinitionError {
    match parse_definition("test.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Rejects `text` and checks the path and that the message contains `fragment`.
fn reject_at(text: &str, path: &str, fragment: &str) -> DefinitionError {
    let e = reject(text);
    assert_eq!(e.path, path, "{e}");
    assert!(e.message.contains(fragment), "{fragment:?} not in {e}");
    assert!(e.line.is_some() && e.column.is_some(), "no position: {e}");
    e
}
