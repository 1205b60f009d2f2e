//! Turns YAML text into a validated [`WorkflowDefinition`], or into one error with a position.

// Four passes, each stopping at the first problem:
// 1. the size limit, then the characters: one leading byte-order mark is dropped, and characters
//    the two YAML readers below would read differently (control characters, U+2028, a second
//    byte-order mark, …) are refused, so both read exactly the same text;
// 2. a streaming `saphyr-parser` pass for syntax, nesting depth, alias expansion and the document
//    count (`scan` explains why `yaml_serde` cannot be trusted with those bounds);
// 3. `yaml_serde` deserialization, tracked by `serde_path_to_error` for the field path: serde
//    rejects unknown keys, wrong types and non-positive durations here, with line and column;
// 4. the semantic rules in `validate`, whose field paths are mapped back to a line and column by
//    walking the YAML events.

mod scan;

use std::fmt;

use serde_path_to_error::Track;

use crate::model::WorkflowDefinition;
use crate::validate;

/// Largest definition accepted, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

/// Why a definition was rejected, and where.
///
/// Displays as `{source}:{line}:{column}: {path}: {message}`, leaving out the parts that are
/// unknown, like a compiler diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The name the caller gave the text, usually a file name.
    pub source: String,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column, in characters, when the problem has a position.
    pub column: Option<usize>,
    /// Field path such as `steps[1].approval.timeout`; empty for syntax errors and for problems
    /// with the document as a whole.
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

// Not derived with thiserror: it would take the field named `source` for the error's cause.
impl std::error::Error for DefinitionError {}

/// The 1-based line and column of the field at `path` (e.g.
/// `steps[0].approval.approvers.groups[1]`, as [`DefinitionError::path`] and
/// [`crate::Reference::item_path`] write paths) in a definition's text, or of its nearest
/// ancestor when the field is absent. `None` when the text does not parse.
#[must_use]
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    scan::locate(text.strip_prefix('\u{feff}').unwrap_or(text), path)
}

/// Parses and validates one workflow definition.
///
/// `source` names the text in errors (a file name, `"api"`, …); it is not read. Steps are written
/// as single-key maps (`- approval: {...}`), the form the model documents.
///
/// # Errors
/// The first problem found: text over [`MAX_DEFINITION_BYTES`], a character no definition may
/// hold as such (a control character other than tab and line ends, U+2028, a byte-order mark
/// other than one at the very start, which is accepted), invalid YAML, nesting deeper than 64
/// levels or an alias bomb, an unknown key, a wrong type or an invalid duration, or a broken
/// workflow rule (see `examples/README.md`). Every error except the size limit has a line and
/// column; every error about a field has its path. Paths and messages never contain control
/// characters (a quoted one is written `\u{1b}`).
pub fn parse_definition(source: &str, text: &str) -> Result<WorkflowDefinition, DefinitionError> {
    // Paths and messages can quote the text (an unknown key, a bad value): never pass a control
    // character on to a terminal or a log.
    let error = |line, column, path: String, message: String| DefinitionError {
        source: source.to_owned(),
        line,
        column,
        path: printable(&path),
        message: printable(&message),
    };

    if text.len() > MAX_DEFINITION_BYTES {
        return Err(error(
            None,
            None,
            String::new(),
            format!("the definition is {} bytes; the limit is {MAX_DEFINITION_BYTES} (256 KiB)", text.len()),
        ));
    }

    // Editors on Windows like to start UTF-8 files with a byte-order mark. saphyr skips it and
    // yaml_serde does not (it reads the first key as `\u{feff}key`), so drop it for both.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(u) = scan::unprintable(text) {
        return Err(error(Some(u.line), Some(u.column), u.path, u.message));
    }

    scan::check(text).map_err(|p| error(Some(p.line), Some(p.column), String::new(), p.message))?;

    let definition = deserialize(text).map_err(|(path, e)| {
        let message = bare_message(&e, &path);
        // serde reports a repeated field at the start of the mapping; point at the repetition.
        if let Some(field) = message.strip_prefix("duplicate field `").and_then(|rest| rest.strip_suffix('`')) {
            let path = if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
            let (line, column) = scan::locate_occurrence(text, &path, 2).unzip();
            return error(line, column, path, format!("duplicate key `{field}`"));
        }
        let location = e.location();
        let line = location.as_ref().map(yaml_serde::Location::line);
        let column = location.as_ref().map(yaml_serde::Location::column);
        error(line, column, path, message)
    })?;

    if let Err(problems) = validate::validate(&definition) {
        // Problems come top-level fields first, then step by step: report the first, as a
        // compiler would.
        if let Some(problem) = problems.into_iter().next() {
            let (line, column) = scan::locate(text, &problem.path).unzip();
            return Err(error(line, column, problem.path, problem.message));
        }
    }
    Ok(definition)
}

/// `text` with every control character written as a `\u{…}` escape.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// Deserializes with `yaml_serde`, returning the field path of any error.
fn deserialize(text: &str) -> Result<WorkflowDefinition, (String, yaml_serde::Error)> {
    let mut track = Track::new();
    let yaml = yaml_serde::Deserializer::from_str(text);
    // yaml_serde reads externally tagged enums from `!approval {...}` tags unless told to accept
    // the single-key map form that the model (and serde_json) use.
    yaml_serde::with::singleton_map_recursive::deserialize(serde_path_to_error::Deserializer::new(yaml, &mut track))
        .map_err(|e| {
            let path = track.path().to_string();
            (if path == "." { String::new() } else { path }, e)
        })
}

/// The error's message without the position and path yaml_serde writes into its `Display`: the
/// [`DefinitionError`] carries those in fields of its own.
fn bare_message(error: &yaml_serde::Error, path: &str) -> String {
    let mut message = error.to_string();
    if let Some(location) = error.location() {
        let at = format!(" at line {} column {}", location.line(), location.column());
        message = message.replacen(&at, "", 1);
    }
    // yaml_serde prefixes messages with its own path, which is ours or, for an unknown field,
    // our parent.
    let mut prefix = path;
    loop {
        if let Some(rest) = message.strip_prefix(prefix).and_then(|m| m.strip_prefix(": ")) {
            message = rest.to_owned();
            break;
        }
        match prefix.rfind(['.', '[']) {
            Some(end) if end > 0 => prefix = &prefix[..end],
            _ => break,
        }
    }
    if message == "invalid type: unit variant, expected newtype variant" {
        // `- wait` with nothing after it.
        return "a step needs its settings, e.g. `- wait: {duration: 1h}`".to_owned();
    }
    if message.ends_with("expected map with a single key") {
        // A step written with two type keys, typically an indentation slip.
        return "a step is a map with exactly one key: approval, action, wait or notify".to_owned();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> DefinitionError {
        parse_definition("test.yaml", text).expect_err("definition should be rejected")
    }

    #[test]
    fn display_omits_unknown_parts() {
        let mut e = DefinitionError {
            source: "a.yaml".to_owned(),
            line: Some(3),
            column: Some(7),
            path: "steps[0].wait".to_owned(),
            message: "boom".to_owned(),
        };
        assert_eq!(e.to_string(), "a.yaml:3:7: steps[0].wait: boom");
        e.path.clear();
        assert_eq!(e.to_string(), "a.yaml:3:7: boom");
        e.column = None;
        assert_eq!(e.to_string(), "a.yaml:3: boom");
        e.line = None;
        assert_eq!(e.to_string(), "a.yaml: boom");
    }

    #[test]
    fn oversized_text_is_rejected_before_parsing() {
        let text = format!("description: {}\n", "x".repeat(MAX_DEFINITION_BYTES));
        let e = err(&text);
        assert_eq!((e.line, e.column), (None, None));
        assert!(e.message.contains("256 KiB"), "{e}");
    }

    #[test]
    fn messages_lose_yaml_serde_position_and_path() {
        let e = err("key: k\nversion: one\nkind: grant\nsteps: []\n");
        assert_eq!(e.path, "version");
        assert_eq!((e.line, e.column), (Some(2), Some(10)));
        assert_eq!(e.message, "invalid type: string \"one\", expected u32");
    }

    #[test]
    fn two_type_keys_in_one_step_get_a_plain_message() {
        let e = err(
            "key: k\nversion: 1\nkind: revoke\nsteps:\n  - action:\n      operation: revoke\n    notify:\n      to: [owner]\n      message: hi\n",
        );
        assert_eq!(e.path, "steps[0]");
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("exactly one key"), "{e}");
    }
}
