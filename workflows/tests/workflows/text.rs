//! The text itself: a byte-order mark, control characters and line separators. Both YAML passes
//! (positions and decoding) must read the same text, and nothing unprintable reaches a name, a
//! description, a message or an error message.

use crate::{accept, grant_with, reject, reject_at};

const BOM: &str = "\u{feff}";

#[test]
fn a_leading_byte_order_mark_is_accepted() {
    let plain = grant_with("");
    assert_eq!(accept(&format!("{BOM}{plain}")), accept(&plain));
    // CRLF line ends too, with and without the mark.
    let crlf = plain.replace('\n', "\r\n");
    assert_eq!(accept(&crlf), accept(&plain));
    assert_eq!(accept(&format!("{BOM}{crlf}")), accept(&plain));
}

#[test]
fn a_byte_order_mark_does_not_move_error_positions() {
    for text in ["key: k\nversion: one\n", "key: k\nversion: 1\nkind: revoke\nsteps: abc\n"] {
        let plain = reject(text);
        let marked = reject(&format!("{BOM}{text}"));
        assert_eq!(marked, plain, "{marked} / {plain}");
    }
    // A semantic error on the first line, located by the position pass.
    let text = grant_with("").replace("key: t", "key: Bad");
    let e = reject_at(&format!("{BOM}{text}"), "key", "invalid key");
    assert_eq!((e.line, e.column), (Some(1), Some(1)));
}

#[test]
fn a_byte_order_mark_anywhere_else_is_rejected() {
    let e = reject(&format!("{BOM}{BOM}{}", grant_with("")));
    assert_eq!((e.line, e.column), (Some(1), Some(1)), "{e}");
    assert!(e.message.contains("byte order mark (U+FEFF)"), "{e}");

    let text = grant_with("").replace("key: t", &format!("key: t\ndescription: a{BOM}b"));
    let e = reject_at(&text, "description", "byte order mark (U+FEFF)");
    assert_eq!((e.line, e.column), (Some(2), Some(15)), "{e}");
}

/// A valid grant with `description: {value}` on line 2.
fn described(value: &str) -> String {
    grant_with("").replace("key: t", &format!("key: t\ndescription: {value}"))
}

#[test]
fn raw_control_characters_are_rejected_with_line_column_and_field() {
    for (c, name) in [
        ('\0', "U+0000"),
        ('\u{7}', "U+0007"),
        ('\u{1b}', "U+001B"),
        ('\u{7f}', "U+007F"),
        ('\u{85}', "U+0085"),
        ('\u{9b}', "U+009B"),
        ('\u{fffe}', "U+FFFE"),
        // Line breaks to one YAML pass and not to the other: refused, not misread.
        ('\u{2028}', "U+2028"),
        ('\u{2029}', "U+2029"),
        // A lone carriage return (not followed by a line feed).
        ('\r', "U+000D"),
    ] {
        let e = reject_at(&described(&format!("abc{c}def")), "description", name);
        assert_eq!((e.line, e.column), (Some(2), Some(17)), "{name}: {e}");
        assert!(!e.to_string().contains(c), "the error repeats the character: {e:?}");
    }

    // In a step, in a block scalar.
    let text = grant_with("  - notify:\n      to: [owner]\n      message: |\n        line one\n        bell\u{7}\n");
    let e = reject_at(&text, "steps[0].notify.message", "U+0007");
    assert_eq!((e.line, e.column), (Some(11), Some(13)), "{e}");

    // In a key: the mapping that holds it is named.
    let text = grant_with("  - wait: {duration: 1m, \u{1b}when: {environments: [a]}}\n");
    let e = reject_at(&text, "steps[0].wait", "U+001B");
    assert!(e.message.contains("in a key"), "{e}");
    assert_eq!((e.line, e.column), (Some(7), Some(26)), "{e}");
}

#[test]
fn tabs_and_line_breaks_are_fine_in_descriptions_and_messages() {
    let def = accept(&described("\"a\\tb\\nc\""));
    assert_eq!(def.description, "a\tb\nc");
    let def = accept(&described("|\n  first\tcolumn\n  second line"));
    assert_eq!(def.description, "first\tcolumn\nsecond line\n");
    accept(&grant_with("  - notify:\n      to: [owner]\n      message: \"one\\ttwo\\nthree\"\n"));
}

#[test]
fn escaped_control_characters_are_rejected_in_descriptions_and_messages() {
    for (escape, name) in [("\\0", "U+0000"), ("\\e", "U+001B"), ("\\r", "U+000D"), ("\\x7f", "U+007F")] {
        let e = reject_at(&described(&format!("\"abc{escape}def\"")), "description", name);
        assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
        assert!(e.message.contains("control character"), "{e}");
        assert!(e.message.contains("character 4"), "{e}");
    }
    let text = grant_with("  - notify:\n      to: [owner]\n      message: \"\\e[2J granted\"\n");
    let e = reject_at(&text, "steps[0].notify.message", "U+001B");
    assert_eq!((e.line, e.column), (Some(9), Some(7)), "{e}");
    assert_eq!(e.to_string(), format!("test.yaml:9:7: steps[0].notify.message: {}", e.message));
}

#[test]
fn names_are_single_lines_of_printable_text() {
    let cases = [
        ("applies_to: {environments: [\"prod\\n\"]}\n", "applies_to.environments[0]"),
        ("applies_to: {integrations: [a, \"b\\0\"]}\n", "applies_to.integrations[1]"),
        ("applies_to: {apps: [\"git\\thub\"]}\n", "applies_to.apps[0]"),
    ];
    for (applies_to, path) in cases {
        let text = grant_with("").replace("version: 1\n", &format!("version: 1\n{applies_to}"));
        let e = reject_at(&text, path, "control character");
        assert!(e.message.contains("name"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
    }
    let text =
        grant_with("").replace("  max_duration: 8h\n", "  max_duration: 8h\n  requesters: {groups: [\"ops\\a\"]}\n");
    reject_at(&text, "parameters.requesters.groups[0]", "U+0007");

    let approval = |body: &str| grant_with(&format!("  - approval:\n      timeout: 1h\n{body}"));
    reject_at(
        &approval("      approvers: {users: [ann, \"bob\\n\"]}\n"),
        "steps[0].approval.approvers.users[1]",
        "U+000A",
    );
    reject_at(
        &approval("      approvers: {owner: true}\n      escalation: {after: 30m, to: {groups: [\"sec\\0\"]}}\n"),
        "steps[0].approval.escalation.to.groups[0]",
        "U+0000",
    );
    reject_at(
        &approval("      approvers: {owner: true}\n      when: {environments: [\"prod\\e\"]}\n"),
        "steps[0].approval.when.environments[0]",
        "U+001B",
    );
    // Non-ASCII printable text is fine.
    accept(&grant_with("").replace("version: 1\n", "version: 1\napplies_to: {environments: [producción]}\n"));
}

#[test]
fn error_messages_never_carry_raw_control_characters() {
    // An escaped control character in an unknown key comes back in serde's message.
    let e = reject("key: t\n\"bad\\ekey\": 1\n");
    assert_eq!(e.path.chars().filter(char::is_ascii_control).count(), 0, "{e:?}");
    assert!(!e.message.contains('\u{1b}'), "{e:?}");
    assert!(e.message.contains("bad\\u{1b}key"), "{e:?}");
}
