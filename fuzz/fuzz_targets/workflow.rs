//! Workflow YAML parser and validator (`tollgate_workflows::parse_definition`).
//!
//! Properties: never panics; the same text gives the same result twice; every error except the
//! size limit carries a line and a column (1-based), and no path or message holds a control
//! character; a definition that validates, written back out (as JSON, which is YAML: the model
//! implements `Serialize` but the crate has no YAML writer of its own), parses and validates to
//! an equal definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_workflows::parse::MAX_DEFINITION_BYTES;
use tollgate_workflows::{WorkflowDefinition, parse_definition};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = parse_definition("fuzz.yaml", text);
    let second = parse_definition("fuzz.yaml", text);
    assert_eq!(first, second, "parsing the same text twice gave different results");
    match first {
        Ok(definition) => round_trip(text, &definition),
        Err(e) => {
            assert_eq!(e.source, "fuzz.yaml");
            assert!(!e.message.is_empty(), "empty message: {e:?}");
            for s in [&e.path, &e.message] {
                assert!(!s.chars().any(char::is_control), "control character in an error: {e:?}");
            }
            if text.len() <= MAX_DEFINITION_BYTES {
                assert!(e.line.is_some() && e.column.is_some(), "an error without a position: {e:?}");
                assert!(e.line >= Some(1) && e.column >= Some(1), "positions are 1-based: {e:?}");
                // The position points into the text (a line after the last one is allowed: the
                // end of the input).
                let lines = text.split('\n').count() + 1;
                assert!(e.line <= Some(lines), "line {:?} past the end ({lines} lines): {e:?}", e.line);
            }
        }
    }
});

/// Writes `definition` back as JSON (a YAML flow mapping) and parses that text.
fn round_trip(original: &str, definition: &WorkflowDefinition) {
    let json = serde_json::to_string_pretty(definition).expect("a definition serializes");
    // serde_json writes these verbatim; YAML readers treat them as line breaks or refuse them,
    // and `parse_definition` refuses them as such. Escaped, they are the same string in JSON and
    // in YAML.
    let json: String = json
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_owned(),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                format!("\\u{:04x}", u32::from(c))
            }
            c => c.to_string(),
        })
        .collect();
    match parse_definition("roundtrip.json", &json) {
        Ok(again) => assert_eq!(
            &again, definition,
            "the definition written back reads differently\n--- original\n{original}\n--- written\n{json}"
        ),
        Err(e) => panic!("the definition written back does not validate: {e}\n--- original\n{original}\n--- written\n{json}"),
    }
}
