//! Event-level YAML checks that serde cannot do: bounds before deserialization, positions after.

// `yaml_serde` loads every event before it deserializes anything, and that is quadratic in flow
// nesting (a 20,000-deep `[[[…` takes most of a second, a 256 KiB one half a minute), while its
// alias guard counts jumps, not the nodes a jump copies: `steps: [*big, *big, …]` can allocate
// gigabytes. So a streaming pass with `saphyr-parser` runs first and stops at the first
// violation, having read no more than the offending prefix. The same parser later maps a
// semantic error's field path back to a line and column.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScanError, Span};

/// Deepest nesting of mappings and sequences accepted. The model itself needs about seven.
pub(super) const MAX_DEPTH: usize = 64;

/// Most nodes a document may hold once every alias is expanded. Higher than any alias-free
/// document within the size limit can reach (a flow list of one-letter items has ~131,000).
pub(super) const MAX_NODES: u64 = 200_000;

/// A problem found by [`check`], at a 1-based line and column.
#[derive(Debug)]
pub(super) struct ScanProblem {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) message: String,
}

impl ScanProblem {
    fn at(marker: Marker, message: String) -> Self {
        let (line, column) = position(marker);
        Self { line, column, message }
    }
}

/// 1-based line and column of a marker (saphyr's columns are 0-based).
fn position(marker: Marker) -> (usize, usize) {
    (marker.line(), marker.col() + 1)
}

/// Checks syntax, nesting depth, alias expansion and the document count in one streaming pass.
pub(super) fn check(text: &str) -> Result<(), ScanProblem> {
    let mut documents = 0_usize;
    let mut nodes = 0_u64;
    // Open collections: (anchor id, node count before the collection started).
    let mut open: Vec<(usize, u64)> = Vec::new();
    // Expanded node count of each anchored node, by anchor id (0 means "no anchor").
    let mut anchored: HashMap<usize, u64> = HashMap::new();

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(scan_problem)?;
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(ScanProblem::at(
                        span.start,
                        "a definition is a single YAML document, but a second one starts here".to_owned(),
                    ));
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor > 0 {
                    anchored.insert(anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, nodes));
                nodes += 1;
                if open.len() > MAX_DEPTH {
                    return Err(ScanProblem::at(span.start, too_deep()));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, before)) = open.pop()
                    && anchor > 0
                {
                    anchored.insert(anchor, nodes - before);
                }
            }
            Event::Alias(anchor) => {
                // An alias of a collection that is still open (a recursive document) has no size
                // yet; yaml_serde's own recursion limit stops that one.
                nodes = nodes.saturating_add(anchored.get(&anchor).copied().unwrap_or(1));
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        if nodes > MAX_NODES {
            return Err(ScanProblem::at(
                span.start,
                format!(
                    "the document expands to more than {MAX_NODES} nodes through anchors and \
                     aliases; a workflow definition is never that large"
                ),
            ));
        }
    }
    if nodes == 0 {
        return Err(ScanProblem { line: 1, column: 1, message: "the document is empty".to_owned() });
    }
    Ok(())
}

fn too_deep() -> String {
    format!("the document nests mappings and sequences more than {MAX_DEPTH} levels deep")
}

fn scan_problem(error: ScanError) -> ScanProblem {
    // saphyr has its own, higher, limit on flow nesting, which it reports as a syntax error.
    let message = if error.info().contains("recursion limit") { too_deep() } else { error.info().to_owned() };
    ScanProblem::at(*error.marker(), message)
}

/// A character [`unprintable`] found where no definition may have it.
#[derive(Debug)]
pub(super) struct Unprintable {
    pub(super) line: usize,
    pub(super) column: usize,
    /// The field whose text holds the character; for a character in a key, the mapping holding
    /// the key; empty when the text around it does not parse.
    pub(super) path: String,
    pub(super) message: String,
}

/// Finds the first character that may not appear as such in a definition. YAML itself forbids
/// the C0 and C1 control characters other than tab and line breaks, and U+FFFE and U+FFFF; the two
/// YAML passes disagree on whether U+0085, U+2028 and U+2029 end a line and on a byte-order mark
/// (the caller removes the one at the very start); and a carriage return that is not part of a
/// CRLF line end is a line break nobody sees. Such text is refused before either pass reads it,
/// with the field it is in, so both passes always see the same text.
///
/// Escaped control characters (`"\0"`, `"\e"` in double quotes) are ordinary YAML; the rules on
/// names and human-facing text in `validate` deal with those.
pub(super) fn unprintable(text: &str) -> Option<Unprintable> {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().enumerate().peekable();
    while let Some((index, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        if let Some(what) = forbidden(c, next) {
            let (path, in_key) = path_at(text, index).unwrap_or_default();
            let message = if c == '\u{feff}' {
                format!("{what} is only allowed at the very start of the file")
            } else if in_key {
                format!("{what} is not allowed in a key")
            } else {
                format!("{what} is not allowed in a workflow definition")
            };
            return Some(Unprintable { line, column, path, message });
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}

/// What `c` (followed by `next`) is, if it may not appear as such in a definition.
fn forbidden(c: char, next: Option<char>) -> Option<String> {
    let code = format!("U+{:04X}", u32::from(c));
    match c {
        '\t' | '\n' => None,
        '\r' if next == Some('\n') => None,
        '\r' => Some(format!("a carriage return ({code}) without a line feed after it")),
        '\u{feff}' => Some(format!("a byte order mark ({code})")),
        '\u{2028}' | '\u{2029}' => {
            let name = if c == '\u{2028}' { "line" } else { "paragraph" };
            Some(format!("the {name} separator {code} (YAML readers disagree on whether it ends a line)"))
        }
        '\u{fffe}' | '\u{ffff}' => Some(format!("the non-character {code}")),
        c if c.is_control() => Some(format!("the control character {code}")),
        _ => None,
    }
}

/// The field path of the node holding the character at `index` (in characters), and whether it is
/// in a key (then the path is the mapping's). `None` when the text does not parse even with every
/// forbidden character replaced by a letter.
fn path_at(text: &str, index: usize) -> Option<(String, bool)> {
    /// Where the walk is inside one open collection.
    enum Frame {
        /// The current key, once read (`None`: a key comes next).
        Map(Option<String>),
        /// Index of the current item.
        Seq(usize),
    }
    fn path(stack: &[Frame]) -> String {
        let mut out = String::new();
        for frame in stack {
            match frame {
                Frame::Map(Some(key)) if out.is_empty() => out.push_str(key),
                Frame::Map(Some(key)) => {
                    out.push('.');
                    out.push_str(key);
                }
                Frame::Map(None) => {}
                Frame::Seq(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
    /// The parent moves on to its next key or item once a node is complete.
    fn done(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map(key)) => *key = None,
            Some(Frame::Seq(i)) => *i += 1,
            None => {}
        }
    }

    let chars: Vec<char> = text.chars().collect();
    let sanitized: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| if forbidden(c, chars.get(i + 1).copied()).is_some() { 'x' } else { c })
        .collect();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(&sanitized) {
        let (event, span) = item.ok()?;
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map(None)),
            Event::SequenceStart(..) => stack.push(Frame::Seq(0)),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                done(&mut stack);
            }
            Event::Scalar(value, ..) => {
                let inside = span.start.index() <= index && index < span.end.index();
                if let Some(Frame::Map(key @ None)) = stack.last_mut() {
                    if inside {
                        return Some((path(&stack), true));
                    }
                    *key = Some(value.into_owned());
                } else {
                    if inside {
                        return Some((path(&stack), false));
                    }
                    done(&mut stack);
                }
            }
            Event::Alias(_) => match stack.last_mut() {
                Some(Frame::Map(key @ None)) => *key = Some(String::new()),
                _ => done(&mut stack),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    // Outside every scalar: in a comment, or in the white space between nodes.
    Some((String::new(), false))
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `steps[1].approval.approvers` into segments; `""` and `"."` are the root.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            match inner[..end].parse() {
                Ok(index) => out.push(Segment::Index(index)),
                Err(_) => break,
            }
            rest = &inner[end + 1..];
        }
    }
    out
}

/// The 1-based line and column of the deepest node on `path` that exists in `text`: the key of
/// the last mapping segment, the item of the last sequence segment, or, when part of the path is
/// absent (a missing field), its nearest existing ancestor. `None` only for text that does not
/// parse, which [`check`] has already rejected.
pub(super) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    locate_occurrence(text, path, 1)
}

/// Like [`locate`], but when the path ends in a key that occurs more than once in its mapping (a
/// duplicate), finds its `occurrence`-th appearance (1-based).
pub(super) fn locate_occurrence(text: &str, path: &str, occurrence: usize) -> Option<(usize, usize)> {
    let mut events: Vec<(Event<'_>, Span)> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        if !matches!(event, Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd) {
            events.push((event, span));
        }
    }
    let (_, root_span) = events.first()?;
    let mut found = root_span.start;
    let mut node = 0_usize;
    let segments = segments(path);
    let last = segments.len().saturating_sub(1);
    for (depth, segment) in segments.into_iter().enumerate() {
        let Some((event, _)) = events.get(node) else {
            break;
        };
        match (segment, event) {
            (Segment::Key(wanted), Event::MappingStart(..)) => {
                let mut entry = node + 1;
                let mut value = None;
                let mut seen = 0;
                while let Some((key, span)) = events.get(entry) {
                    if matches!(key, Event::MappingEnd) {
                        break;
                    }
                    let next = skip(&events, entry);
                    if matches!(key, Event::Scalar(k, ..) if k == wanted) {
                        seen += 1;
                        found = span.start;
                        value = Some(next);
                        if depth < last || seen >= occurrence {
                            break;
                        }
                    }
                    entry = skip(&events, next);
                }
                let Some(value) = value else { break };
                node = value;
            }
            (Segment::Index(wanted), Event::SequenceStart(..)) => {
                let mut item = node + 1;
                for _ in 0..wanted {
                    if matches!(events.get(item), None | Some((Event::SequenceEnd, _))) {
                        break;
                    }
                    item = skip(&events, item);
                }
                match events.get(item) {
                    Some((Event::SequenceEnd, _)) | None => break,
                    Some((_, span)) => {
                        found = span.start;
                        node = item;
                    }
                }
            }
            // A scalar, an alias, or a shape that does not match: stop at what we have.
            _ => break,
        }
    }
    Some(position(found))
}

/// Index of the event just after the node that starts at `start`.
fn skip(events: &[(Event<'_>, Span)], start: usize) -> usize {
    let mut depth = 0_usize;
    let mut i = start;
    while let Some((event, _)) = events.get(i) {
        i += 1;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 {
            break;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
key: k
steps:
  - notify:
      to: [requester]
      message: hi
  - approval:
      approvers:
        owner: true
      timeout: 1h
parameters:
  require_justification: true
";

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            segments("steps[1].approval.approvers"),
            [Segment::Key("steps"), Segment::Index(1), Segment::Key("approval"), Segment::Key("approvers")]
        );
        assert_eq!(segments("a[0][2]"), [Segment::Key("a"), Segment::Index(0), Segment::Index(2)]);
        assert!(segments(".").is_empty());
        assert!(segments("").is_empty());
    }

    #[test]
    fn locate_points_at_the_key_of_the_last_segment() {
        assert_eq!(locate(DOC, "steps[1].approval.approvers"), Some((7, 7)));
        assert_eq!(locate(DOC, "steps[1].approval.timeout"), Some((9, 7)));
        assert_eq!(locate(DOC, "steps[0].notify.message"), Some((5, 7)));
        assert_eq!(locate(DOC, "key"), Some((1, 1)));
    }

    #[test]
    fn locate_points_at_the_item_of_a_trailing_index() {
        assert_eq!(locate(DOC, "steps[1]"), Some((6, 5)));
        assert_eq!(locate(DOC, "steps[0].notify.to[0]"), Some((4, 12)));
    }

    #[test]
    fn locate_falls_back_to_the_nearest_existing_ancestor() {
        assert_eq!(locate(DOC, "parameters.max_duration"), Some((10, 1)));
        assert_eq!(locate(DOC, "steps[1].approval.reminder"), Some((6, 5)));
        assert_eq!(locate(DOC, "steps[7].wait"), Some((2, 1)));
        assert_eq!(locate(DOC, "applies_to.apps"), Some((1, 1)));
        assert_eq!(locate(DOC, ""), Some((1, 1)));
    }

    #[test]
    fn locate_finds_later_occurrences_of_a_duplicate_key() {
        let doc = "a: 1\nb:\n  c: 1\n  c: 2\n  c: 3\n";
        assert_eq!(locate_occurrence(doc, "b.c", 1), Some((3, 3)));
        assert_eq!(locate_occurrence(doc, "b.c", 2), Some((4, 3)));
        // Past the last one: the last one found.
        assert_eq!(locate_occurrence(doc, "b.c", 9), Some((5, 3)));
    }

    #[test]
    fn locate_stops_at_aliases() {
        let doc = "a: &x {b: 1}\nc: *x\n";
        assert_eq!(locate(doc, "c.b"), Some((2, 1)));
        assert_eq!(locate(doc, "a.b"), Some((1, 8)));
    }

    #[test]
    fn path_at_names_the_scalar_holding_a_character() {
        let doc =
            "key: k\nsteps:\n  - notify:\n      to: [requester, owner]\n      message: |\n        hi\n        there\n";
        let at = |needle: &str| {
            let byte = doc.find(needle).unwrap_or_else(|| panic!("{needle}"));
            path_at(doc, doc[..byte].chars().count())
        };
        assert_eq!(at("k\n"), Some(("key".to_owned(), false)));
        assert_eq!(at("ey:"), Some((String::new(), true)));
        assert_eq!(at("owner"), Some(("steps[0].notify.to[1]".to_owned(), false)));
        assert_eq!(at("to:"), Some(("steps[0].notify".to_owned(), true)));
        assert_eq!(at("there"), Some(("steps[0].notify.message".to_owned(), false)));
        assert_eq!(at("  - "), Some((String::new(), false)));
    }

    #[test]
    fn unprintable_allows_tabs_and_line_ends_only() {
        assert!(unprintable("a: \"x\ty\"\r\nb: |\n  \tz\n").is_none());
        for (text, line, column) in [("a: b\r\nc: d\x00\n", 2, 5), ("a: b\rc: d\n", 1, 5), ("# \u{85}\n", 1, 3)] {
            let found = unprintable(text).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!((found.line, found.column), (line, column), "{text:?}: {}", found.message);
        }
        assert_eq!(unprintable("a: b\x00\n").map(|u| u.path), Some("a".to_owned()));
        assert_eq!(unprintable("# \x1b\na: b\n").map(|u| u.path), Some(String::new()));
    }

    #[test]
    fn check_rejects_a_second_document() {
        let problem = check("key: a\n---\nkey: b\n").unwrap_err();
        assert_eq!((problem.line, problem.column), (2, 1));
        assert!(problem.message.contains("single YAML document"), "{}", problem.message);
    }

    #[test]
    fn check_rejects_empty_documents() {
        for text in ["", "\n\n", "# only a comment\n"] {
            assert_eq!(check(text).unwrap_err().message, "the document is empty");
        }
    }

    #[test]
    fn check_counts_nodes_behind_aliases() {
        let mut doc = String::from("big: &big [");
        doc.push_str(&"x,".repeat(1_000));
        doc.push_str("]\nrefs: [");
        doc.push_str(&"*big,".repeat(250));
        doc.push_str("]\n");
        let problem = check(&doc).unwrap_err();
        assert!(problem.message.contains("expands to more than"), "{}", problem.message);
        assert_eq!(problem.line, 2);
    }
}
