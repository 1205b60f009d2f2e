//! The tamper-evident audit chain: record types, canonical encoding, hashing, verification and export.
//
// Everything here is pure: the store assigns `seq`, reads the head and persists the sealed record
// in the same transaction as the change it records; this module only encodes, hashes, verifies and
// exports. The byte-level format is specified in `docs/AUDIT.md` and pinned by the known-answer
// test below: changing `canonical_bytes` breaks verification of every stored chain.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first element of every canonical encoding; bumped if the encoding ever changes.
pub const CANONICAL_FORMAT_VERSION: u32 = 1;

/// What the runtime appends; sequencing and hashing happen at append time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened, e.g. `request_created`, `approval_recorded`, `grant_succeeded`.
    pub event_type: String,
    /// Where it came from: `api`, `cli`, `engine`, `config`, `slack`, `email`, `webhook`.
    pub channel: String,
    /// How it ended: `success`, `failure`, `denied`, `rejected`, ...
    pub outcome: String,
    /// Who did it: a principal id, or `system`.
    pub actor: String,
    /// What it was done to, e.g. `request:<uuid>`, `grant:<uuid>`, `principal:alice`.
    pub subject: String,
    /// The workflow run this event belongs to, if any.
    pub run_id: Option<Uuid>,
    /// The requester's justification, if the event concerns a request.
    pub justification: Option<String>,
    /// The key of the workflow definition involved, if any.
    pub workflow_key: Option<String>,
    /// The version of that workflow definition, if any.
    pub workflow_version: Option<i32>,
    /// Event-specific facts: a JSON object (or `Null`). Never secrets. Prefer strings and
    /// integers; [`seal`] turns floating-point numbers into strings (see there).
    pub details: Value,
}

/// One sealed, hash-chained entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain: 1, 2, 3, ... strictly increasing, no gaps.
    pub seq: i64,
    /// When it was recorded, in UTC, truncated to whole microseconds. Serialized as RFC 3339 with
    /// exactly six fractional digits and `Z`, the same text that is hashed.
    #[serde(with = "rfc3339_micros")]
    pub recorded_at: DateTime<Utc>,
    /// What was recorded.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The `hash` of the previous record (lowercase hex, 64 chars); [`GENESIS_HASH`] for `seq` 1.
    pub prev_hash: String,
    /// `SHA-256(canonical_bytes ‖ raw bytes of prev_hash)`, lowercase hex.
    pub hash: String,
}

/// Truncates `t` to whole microseconds, the precision PostgreSQL stores.
///
/// Callers store the truncated value; [`seal`] applies it, so the time that was hashed is exactly
/// the time that reads back from the database.
#[must_use]
pub fn truncate_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The canonical byte encoding of a record's content, the input to [`compute_hash`].
///
/// A compact JSON array, UTF-8:
/// `[1, seq, recorded_at, event_type, channel, outcome, actor, subject, run_id, justification,
/// workflow_key, workflow_version, details]` where `recorded_at` is RFC 3339 with exactly six
/// fractional digits (sub-microsecond digits are dropped) and `Z`, `run_id` is a hyphenated
/// lowercase UUID, absent values are `null`, and `details` has its object keys sorted
/// (recursively, by code point). Strings use serde_json's compact escaping.
#[must_use]
pub fn canonical_bytes(seq: i64, recorded_at: DateTime<Utc>, event: &AuditEvent) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    write_canonical(&mut out, seq, recorded_at, &Fields::of(event), |out| write_canonical_value(out, &event.details));
    out.into_bytes()
}

/// The fields of a record that [`canonical_bytes`] encodes before `details`, borrowed.
struct Fields<'a> {
    event_type: &'a str,
    channel: &'a str,
    outcome: &'a str,
    actor: &'a str,
    subject: &'a str,
    run_id: Option<Uuid>,
    justification: Option<&'a str>,
    workflow_key: Option<&'a str>,
    workflow_version: Option<i32>,
}

impl<'a> Fields<'a> {
    fn of(e: &'a AuditEvent) -> Self {
        Self {
            event_type: &e.event_type,
            channel: &e.channel,
            outcome: &e.outcome,
            actor: &e.actor,
            subject: &e.subject,
            run_id: e.run_id,
            justification: e.justification.as_deref(),
            workflow_key: e.workflow_key.as_deref(),
            workflow_version: e.workflow_version,
        }
    }
}

/// Appends the canonical encoding to `out`; `details` writes the canonical `details` text.
fn write_canonical(
    out: &mut String,
    seq: i64,
    recorded_at: DateTime<Utc>,
    f: &Fields<'_>,
    details: impl FnOnce(&mut String),
) {
    use fmt::Write as _;
    // Writing into a `String` cannot fail.
    let _ = write!(out, "[{CANONICAL_FORMAT_VERSION},{seq},");
    write_json_str(out, &format_time(recorded_at));
    for s in [f.event_type, f.channel, f.outcome, f.actor, f.subject] {
        out.push(',');
        write_json_str(out, s);
    }
    out.push(',');
    match f.run_id {
        Some(id) => {
            out.push('"');
            out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            out.push('"');
        }
        None => out.push_str("null"),
    }
    for s in [f.justification, f.workflow_key] {
        out.push(',');
        match s {
            Some(s) => write_json_str(out, s),
            None => out.push_str("null"),
        }
    }
    out.push(',');
    match f.workflow_version {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
    out.push(',');
    details(out);
    out.push(']');
}

/// `SHA-256(canonical ‖ raw 32 bytes of prev_hash_hex)`, as lowercase hex.
///
/// `prev_hash_hex` is the previous record's hash (or [`GENESIS_HASH`]). Should it not be 64 hex
/// digits (a caller bug), its text is hashed instead of its decoded bytes; such a record can never
/// verify, because the verifier first requires `prev_hash` to equal the previous record's hash.
#[must_use]
pub fn compute_hash(canonical: &[u8], prev_hash_hex: &str) -> String {
    hex::encode(hash_bytes(canonical, prev_hash_hex))
}

/// [`compute_hash`] before hex encoding.
fn hash_bytes(canonical: &[u8], prev_hash_hex: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(canonical);
    let mut prev = [0u8; 32];
    match hex::decode_to_slice(prev_hash_hex, &mut prev) {
        Ok(()) => hasher.update(prev),
        Err(_) => hasher.update(prev_hash_hex.as_bytes()),
    }
    hasher.finalize().into()
}

/// Seals `event` as record `seq`, chained to `prev_hash`.
///
/// Truncates `recorded_at` with [`truncate_time`] and replaces every floating-point number in
/// `details` by a string of its shortest decimal form (`0.25` → `"0.25"`): float text is neither
/// stable across JSON library versions nor guaranteed to read back bit-for-bit, and a value that
/// reads back differently would fail verification. The returned record is exactly what the store
/// must persist (with `details` as [`details_to_text`]).
#[must_use]
pub fn seal(seq: i64, recorded_at: DateTime<Utc>, mut event: AuditEvent, prev_hash: &str) -> AuditRecord {
    let recorded_at = truncate_time(recorded_at);
    stringify_floats(&mut event.details);
    let hash = compute_hash(&canonical_bytes(seq, recorded_at, &event), prev_hash);
    AuditRecord { seq, recorded_at, event, prev_hash: prev_hash.to_owned(), hash }
}

/// [`seal`], also returning the record's `details` as [`details_to_text`] writes them: what the
/// store persists, encoded once for both the hash and the row.
#[must_use]
pub fn seal_with_text(
    seq: i64,
    recorded_at: DateTime<Utc>,
    mut event: AuditEvent,
    prev_hash: &str,
) -> (AuditRecord, String) {
    let recorded_at = truncate_time(recorded_at);
    stringify_floats(&mut event.details);
    let details = details_to_text(&event.details);
    let mut canonical = String::with_capacity(256 + details.len());
    write_canonical(&mut canonical, seq, recorded_at, &Fields::of(&event), |out| out.push_str(&details));
    let hash = compute_hash(canonical.as_bytes(), prev_hash);
    (AuditRecord { seq, recorded_at, event, prev_hash: prev_hash.to_owned(), hash }, details)
}

/// The canonical JSON text of `details`: compact, object keys sorted recursively by code point.
///
/// The store persists this as TEXT, not `jsonb` (which would reorder keys and normalise numbers);
/// it is also the `details` part of [`canonical_bytes`].
#[must_use]
pub fn details_to_text(details: &Value) -> String {
    let mut out = String::new();
    write_canonical_value(&mut out, details);
    out
}

/// Parses `details` text written by [`details_to_text`].
///
/// # Errors
///
/// Returns the parse error if `text` is not valid JSON (or nests deeper than 128 levels).
pub fn details_from_text(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

/// What kind of damage a [`ChainBreak`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The recomputed hash differs from the stored one: the record's content was altered.
    HashMismatch,
    /// `prev_hash` is not the previous record's hash: a record was deleted, reordered, or
    /// rewritten together with its own hash.
    PrevHashMismatch,
    /// Sequence numbers were skipped: records are missing (or out of order).
    SequenceGap,
    /// The sequence number is not greater than the previous one: duplicated or reordered records.
    SequenceOrder,
    /// The first record is not `seq` 1 with [`GENESIS_HASH`] as `prev_hash`.
    BadStart,
}

impl BreakKind {
    /// A stable machine-readable code, e.g. `hash_mismatch`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HashMismatch => "hash_mismatch",
            Self::PrevHashMismatch => "prev_hash_mismatch",
            Self::SequenceGap => "sequence_gap",
            Self::SequenceOrder => "sequence_order",
            Self::BadStart => "bad_start",
        }
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first place where the chain fails verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("audit chain broken at sequence {seq}: {detail}")]
pub struct ChainBreak {
    /// The `seq` of the first record that failed a check, as found in the input.
    pub seq: i64,
    /// Which check failed.
    pub kind: BreakKind,
    /// A human explanation naming the expected and found values and the record's position.
    pub detail: String,
}

/// The outcome of verifying a chain (or the verified prefix of one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// How many records verified.
    pub records: u64,
    /// The `seq` of the last verified record, `None` for an empty chain.
    pub head_seq: Option<i64>,
    /// The `hash` of the last verified record, `None` for an empty chain. Compare it with an
    /// externally anchored head: the chain alone cannot reveal deleted trailing records.
    pub head_hash: Option<String>,
}

/// Streaming verifier: feed records in order with [`push`](Self::push), then [`finish`](Self::finish).
///
/// Checks every link: the first record is `seq` 1 chained to [`GENESIS_HASH`]; each following
/// `seq` is exactly one more than the previous; each `prev_hash` equals the previous record's
/// `hash`; and each `hash` is recomputed from the record's content. Memory use is constant.
///
/// After the first break the verifier stays broken: every later `push` returns that same break.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    records: u64,
    head: Option<(i64, String)>,
    broken: Option<ChainBreak>,
    /// The canonical encoding of the record being checked, reused across records.
    buf: String,
}

/// A record as the store holds it, borrowed: `details` is the stored canonical text
/// ([`details_to_text`]), hashed as stored, so verifying does not parse it.
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord<'a> {
    /// See [`AuditRecord::seq`].
    pub seq: i64,
    /// See [`AuditRecord::recorded_at`].
    pub recorded_at: DateTime<Utc>,
    /// See [`AuditEvent::event_type`].
    pub event_type: &'a str,
    /// See [`AuditEvent::channel`].
    pub channel: &'a str,
    /// See [`AuditEvent::outcome`].
    pub outcome: &'a str,
    /// See [`AuditEvent::actor`].
    pub actor: &'a str,
    /// See [`AuditEvent::subject`].
    pub subject: &'a str,
    /// See [`AuditEvent::run_id`].
    pub run_id: Option<Uuid>,
    /// See [`AuditEvent::justification`].
    pub justification: Option<&'a str>,
    /// See [`AuditEvent::workflow_key`].
    pub workflow_key: Option<&'a str>,
    /// See [`AuditEvent::workflow_version`].
    pub workflow_version: Option<i32>,
    /// The stored `details` text. Text that is not the canonical form of what was sealed fails
    /// the hash check, as any other altered byte does.
    pub details: &'a str,
    /// See [`AuditRecord::prev_hash`].
    pub prev_hash: &'a str,
    /// See [`AuditRecord::hash`].
    pub hash: &'a str,
}

impl ChainVerifier {
    /// A verifier expecting the chain's first record.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next record of the chain.
    ///
    /// # Errors
    ///
    /// Returns the [`ChainBreak`] for this record if it does not continue the chain verified so
    /// far, or the earlier break if one was already found.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let fields = Fields::of(&record.event);
        self.push_with(record.seq, record.recorded_at, &fields, &record.prev_hash, &record.hash, |out| {
            write_canonical_value(out, &record.event.details);
        })
    }

    /// Checks the next record of the chain, as stored (see [`StoredRecord`]).
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub fn push_stored(&mut self, r: &StoredRecord<'_>) -> Result<(), ChainBreak> {
        let fields = Fields {
            event_type: r.event_type,
            channel: r.channel,
            outcome: r.outcome,
            actor: r.actor,
            subject: r.subject,
            run_id: r.run_id,
            justification: r.justification,
            workflow_key: r.workflow_key,
            workflow_version: r.workflow_version,
        };
        self.push_with(r.seq, r.recorded_at, &fields, r.prev_hash, r.hash, |out| out.push_str(r.details))
    }

    fn push_with(
        &mut self,
        seq: i64,
        recorded_at: DateTime<Utc>,
        fields: &Fields<'_>,
        prev_hash: &str,
        hash: &str,
        details: impl FnOnce(&mut String),
    ) -> Result<(), ChainBreak> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        write_canonical(&mut buf, seq, recorded_at, fields, details);
        let checked = self.check(seq, prev_hash, hash, buf.as_bytes());
        self.buf = buf;
        match checked {
            Ok(()) => {
                self.records += 1;
                match &mut self.head {
                    Some((head_seq, head_hash)) => {
                        *head_seq = seq;
                        head_hash.clear();
                        head_hash.push_str(hash);
                    }
                    None => self.head = Some((seq, hash.to_owned())),
                }
                Ok(())
            }
            Err(b) => {
                self.broken = Some(b.clone());
                Err(b)
            }
        }
    }

    /// The report for the records verified so far.
    ///
    /// If a [`push`](Self::push) failed, this covers only the prefix before the break: callers
    /// must act on `push`'s error (or use [`verify_all`]).
    #[must_use]
    pub fn finish(self) -> VerifyReport {
        let (head_seq, head_hash) = match self.head {
            Some((seq, hash)) => (Some(seq), Some(hash)),
            None => (None, None),
        };
        VerifyReport { records: self.records, head_seq, head_hash }
    }

    fn check(&self, seq: i64, prev_hash: &str, hash: &str, canonical: &[u8]) -> Result<(), ChainBreak> {
        let position = self.records + 1;
        let brk = |kind, detail: String| ChainBreak { seq, kind, detail };
        match &self.head {
            None => {
                if seq != 1 {
                    return Err(brk(BreakKind::BadStart, format!("the first record has sequence {seq}, expected 1")));
                }
                if prev_hash != GENESIS_HASH {
                    return Err(brk(
                        BreakKind::BadStart,
                        format!("the first record's prev_hash is {prev_hash:?}, expected the genesis hash (64 zeros)"),
                    ));
                }
            }
            Some((last_seq, last_hash)) => {
                if seq <= *last_seq {
                    return Err(brk(
                        BreakKind::SequenceOrder,
                        format!(
                            "record at position {position} has sequence {seq}, not greater than the previous record's {last_seq} (duplicated or reordered records)"
                        ),
                    ));
                }
                // `seq > last_seq`, so `last_seq < i64::MAX` and this cannot overflow.
                let expected = last_seq + 1;
                if seq != expected {
                    return Err(brk(
                        BreakKind::SequenceGap,
                        format!(
                            "record at position {position} has sequence {seq}, expected {expected} (records missing or out of order)"
                        ),
                    ));
                }
                if prev_hash != *last_hash {
                    return Err(brk(
                        BreakKind::PrevHashMismatch,
                        format!(
                            "prev_hash {prev_hash:?} is not the hash {last_hash} of record {last_seq} (a record was deleted, reordered or rewritten)"
                        ),
                    ));
                }
            }
        }
        let mut computed = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(hash_bytes(canonical, prev_hash), &mut computed);
        if hash.as_bytes() != computed {
            let computed = String::from_utf8_lossy(&computed);
            return Err(brk(
                BreakKind::HashMismatch,
                format!("stored hash {hash:?} does not match the recomputed {computed} (record content altered)"),
            ));
        }
        Ok(())
    }
}

/// Verifies a whole chain, in order, starting from `seq` 1.
///
/// An empty input verifies (with `records: 0`). Deleting trailing records is not detectable here:
/// compare the report's head with an externally anchored one.
///
/// # Errors
///
/// Returns the first [`ChainBreak`].
pub fn verify_all<I: IntoIterator<Item = AuditRecord>>(records: I) -> Result<VerifyReport, ChainBreak> {
    let mut verifier = ChainVerifier::new();
    for record in records {
        verifier.push(&record)?;
    }
    Ok(verifier.finish())
}

/// The file formats of an audit export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// One [`AuditRecord`] JSON object per line; re-verifiable.
    Jsonl,
    /// RFC 4180 CSV with a header row, for spreadsheets; cells are escaped against formula
    /// injection, so it is not meant for re-verification.
    Csv,
}

impl ExportFormat {
    /// The name accepted by [`FromStr`]: `jsonl` or `csv`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
        }
    }

    /// The HTTP `Content-Type` of an export in this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An export format name other than `jsonl` or `csv`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit export format {0:?}: expected \"jsonl\" or \"csv\"")]
pub struct UnknownExportFormat(pub String);

impl FromStr for ExportFormat {
    type Err = UnknownExportFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            other => Err(UnknownExportFormat(other.to_owned())),
        }
    }
}

/// Writing an audit export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination could not be written.
    #[error("failed to write the audit export")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded as JSON.
    #[error("failed to encode audit record {seq} as JSON")]
    Json {
        /// The record's sequence number.
        seq: i64,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV row could not be written.
    #[error("failed to write the audit export as CSV")]
    Csv(#[from] csv::Error),
}

/// The CSV header row, in column order.
pub const CSV_HEADER: [&str; 14] = [
    "seq",
    "recorded_at",
    "event_type",
    "channel",
    "outcome",
    "actor",
    "subject",
    "run_id",
    "justification",
    "workflow_key",
    "workflow_version",
    "details",
    "prev_hash",
    "hash",
];

/// Streams `records` to `w` in `format`, one record at a time, and flushes.
///
/// JSONL: one [`AuditRecord`] JSON object per line (`\n`). CSV: the [`CSV_HEADER`] row then one row
/// per record, RFC 4180 quoting and CRLF line ends; absent values are empty cells, `details` is
/// its canonical text, and any cell starting with `=`, `+`, `-`, `@`, tab, CR or `'` gets a `'`
/// prepended so spreadsheets do not evaluate it as a formula (strip one leading `'` to undo). This
/// changes only the export, never the hashed content.
///
/// # Errors
///
/// Returns [`ExportError`] if writing to `w` fails or a record cannot be encoded; what was written
/// before the failure stays written.
pub fn write_export<W: Write>(
    w: W,
    format: ExportFormat,
    records: impl IntoIterator<Item = AuditRecord>,
) -> Result<(), ExportError> {
    match format {
        ExportFormat::Jsonl => {
            let mut w = std::io::BufWriter::new(w);
            for record in records {
                let line =
                    serde_json::to_vec(&record).map_err(|source| ExportError::Json { seq: record.seq, source })?;
                w.write_all(&line)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        ExportFormat::Csv => {
            let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(w);
            w.write_record(CSV_HEADER)?;
            for AuditRecord { seq, recorded_at, event: e, prev_hash, hash } in records {
                let mut row: [String; 14] = [
                    seq.to_string(),
                    format_time(recorded_at),
                    e.event_type,
                    e.channel,
                    e.outcome,
                    e.actor,
                    e.subject,
                    e.run_id.map(|id| id.hyphenated().to_string()).unwrap_or_default(),
                    e.justification.unwrap_or_default(),
                    e.workflow_key.unwrap_or_default(),
                    e.workflow_version.map(|v| v.to_string()).unwrap_or_default(),
                    details_to_text(&e.details),
                    prev_hash,
                    hash,
                ];
                row.iter_mut().for_each(defuse_formula);
                w.write_record(&row)?;
            }
            w.flush()?;
        }
    }
    Ok(())
}

/// Prefixes `'` to a cell a spreadsheet would read as a formula (OWASP "CSV injection"); a cell
/// already starting with `'` is prefixed too, so exactly one leading `'` can always be stripped.
fn defuse_formula(cell: &mut String) {
    if let Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') = cell.as_bytes().first() {
        cell.insert(0, '\'');
    }
}

/// RFC 3339, UTC, exactly six fractional digits, `Z`: `2026-01-02T03:04:05.123456Z`.
fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Writes `s` as a JSON string exactly as serde_json does: `"` `\` and control characters
/// escaped (`\b \f \n \r \t`, otherwise `\u00xx` lowercase), everything else verbatim UTF-8.
fn write_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // Only ASCII bytes are ever escaped, so cutting at them keeps every run valid UTF-8.
    let mut run_start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        run_start = i + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Compact JSON with object keys sorted by code point at every level. Sorting here rather than
/// relying on `serde_json::Map` keeps the encoding independent of the `preserve_order` feature,
/// which any crate in a build can switch on.
fn write_canonical_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // `str` ordering is byte order, which for UTF-8 is code point order.
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(out, k);
                out.push(':');
                write_canonical_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Replaces every non-integer JSON number by its decimal string.
fn stringify_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => *v = Value::String(n.to_string()),
        Value::Array(items) => items.iter_mut().for_each(stringify_floats),
        Value::Object(map) => map.values_mut().for_each(stringify_floats),
        _ => {}
    }
}

/// Serde for `recorded_at`: writes the canonical form, reads any RFC 3339 time.
mod rfc3339_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000, 0).single().unwrap() + chrono::Duration::microseconds(micros)
    }

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            event_type: "approval_recorded".to_owned(),
            channel: "slack".to_owned(),
            outcome: "approved".to_owned(),
            actor: format!("approver-{n}"),
            subject: "request:0190f0e1-7c2a-7d3e-8f40-123456789abc".to_owned(),
            run_id: Some(Uuid::from_u128(0x0190_f0e1_7c2a_7d3e_8f40_1234_5678_9abc)),
            justification: Some("INC-42: restore prod access".to_owned()),
            workflow_key: Some("grant-github".to_owned()),
            workflow_version: Some(3),
            details: json!({ "step": n, "scopes": ["repo:read"], "note": "ok" }),
        }
    }

    /// A valid chain of `n` records.
    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = out.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            out.push(seal(i64::from(i), at(i64::from(i) * 1_000_001), event(i), &prev));
        }
        out
    }

    fn break_of(records: Vec<AuditRecord>) -> ChainBreak {
        verify_all(records).unwrap_err()
    }

    #[test]
    fn known_answer_encoding_and_hashes_are_pinned() {
        // If this test fails, the canonical encoding changed and every stored chain would stop
        // verifying. Do not update the constants; version the encoding instead.
        let first = seal(
            1,
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap() + chrono::Duration::nanoseconds(123_456_789),
            AuditEvent {
                event_type: "request_created".to_owned(),
                channel: "api".to_owned(),
                outcome: "success".to_owned(),
                actor: "alice".to_owned(),
                subject: "request:0190f0e1-7c2a-7d3e-8f40-123456789abc".to_owned(),
                run_id: Some(Uuid::from_u128(0x0190_F0E1_7C2A_7D3E_8F40_1234_5678_9ABC)),
                justification: Some("Ünïcödé \"quoted\"\n\ttab\u{1} 🚀 / \\".to_owned()),
                workflow_key: Some("grant-github".to_owned()),
                workflow_version: Some(7),
                details: json!({ "z": 1, "a": { "y": [true, null, -5], "b": "x" }, "big": 18_446_744_073_709_551_615_u64 }),
            },
            GENESIS_HASH,
        );
        let canonical = String::from_utf8(canonical_bytes(first.seq, first.recorded_at, &first.event)).unwrap();
        assert_eq!(
            canonical,
            "[1,1,\"2026-01-02T03:04:05.123456Z\",\"request_created\",\"api\",\"success\",\"alice\",\
             \"request:0190f0e1-7c2a-7d3e-8f40-123456789abc\",\"0190f0e1-7c2a-7d3e-8f40-123456789abc\",\
             \"Ünïcödé \\\"quoted\\\"\\n\\ttab\\u0001 🚀 / \\\\\",\"grant-github\",7,\
             {\"a\":{\"b\":\"x\",\"y\":[true,null,-5]},\"big\":18446744073709551615,\"z\":1}]"
        );
        assert_eq!(first.hash, "364269fea2ea56340560665574fc3ace79fd5f6fac0bb49905fc3503580485ee");

        let second = seal(
            2,
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).single().unwrap(),
            AuditEvent {
                event_type: "principal_added".to_owned(),
                channel: "config".to_owned(),
                outcome: "success".to_owned(),
                actor: "system".to_owned(),
                subject: "principal:bob".to_owned(),
                run_id: None,
                justification: None,
                workflow_key: None,
                workflow_version: None,
                details: Value::Null,
            },
            &first.hash,
        );
        assert_eq!(
            String::from_utf8(canonical_bytes(second.seq, second.recorded_at, &second.event)).unwrap(),
            "[1,2,\"2026-01-02T03:04:06.000000Z\",\"principal_added\",\"config\",\"success\",\"system\",\
             \"principal:bob\",null,null,null,null,null]"
        );
        assert_eq!(second.hash, "c6bc7abd24cd08ce8c976fd02ccf3f6f2ad310e90df25fd1a9750c8f40bdcad1");
        assert_eq!(verify_all([first, second]).unwrap().records, 2);
    }

    #[test]
    fn intact_chain_verifies_and_reports_its_head() {
        let c = chain(10);
        let report = verify_all(c.clone()).unwrap();
        assert_eq!(report, VerifyReport { records: 10, head_seq: Some(10), head_hash: Some(c[9].hash.clone()) });

        let mut streaming = ChainVerifier::new();
        for r in &c {
            streaming.push(r).unwrap();
        }
        assert_eq!(streaming.finish(), report);
        assert_eq!(verify_all(Vec::new()).unwrap(), VerifyReport::default());
    }

    #[test]
    fn editing_any_field_breaks_the_chain_at_that_record() {
        let edits: [fn(&mut AuditRecord); 12] = [
            |r| r.event.event_type = "request_denied".to_owned(),
            |r| r.event.channel = "api".to_owned(),
            |r| r.event.outcome = "denied".to_owned(),
            |r| r.event.actor = "mallory".to_owned(),
            |r| r.event.details["step"] = json!(99),
            |r| r.event.details = json!({}),
            |r| r.event.run_id = None,
            |r| r.event.justification = Some(String::new()),
            |r| r.event.workflow_key = None,
            |r| r.event.workflow_version = Some(4),
            |r| r.recorded_at += chrono::Duration::microseconds(1),
            |r| r.hash = r.hash.to_uppercase(),
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut c = chain(10);
            edit(&mut c[4]);
            let b = break_of(c);
            assert_eq!((b.seq, b.kind), (5, BreakKind::HashMismatch), "edit #{i}: {b}");
        }
    }

    #[test]
    fn deleting_a_record_breaks_the_chain_at_the_next_one() {
        let mut c = chain(10);
        c.remove(4);
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (6, BreakKind::SequenceGap));
        assert_eq!(
            b.to_string(),
            "audit chain broken at sequence 6: record at position 5 has sequence 6, expected 5 (records missing or out of order)"
        );

        // Renumbering the rest to hide the gap does not help: the link to the deleted record stays.
        let mut c = chain(10);
        c.remove(4);
        c[4..].iter_mut().for_each(|r| r.seq -= 1);
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (5, BreakKind::PrevHashMismatch));
    }

    #[test]
    fn reordering_records_is_reported_at_the_first_position_out_of_order() {
        // Contents of 5 and 6 swapped, sequence numbers kept.
        let mut c = chain(10);
        c.swap(4, 5);
        c[4].seq = 5;
        c[5].seq = 6;
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (5, BreakKind::PrevHashMismatch));

        // Only the events swapped, chain fields kept.
        let mut c = chain(10);
        let e5 = c[4].event.clone();
        c[4].event = c[5].event.clone();
        c[5].event = e5;
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (5, BreakKind::HashMismatch));

        // Whole records swapped, sequence numbers too: 1 2 3 4 6 5 7 ...
        let mut c = chain(10);
        c.swap(4, 5);
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (6, BreakKind::SequenceGap));
        assert!(b.detail.contains("position 5"), "{b}");

        // A duplicated record: 1 2 3 4 5 5 6 ...
        let mut c = chain(10);
        c.insert(5, c[4].clone());
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (5, BreakKind::SequenceOrder));
        assert!(b.detail.contains("position 6"), "{b}");
    }

    #[test]
    fn rewriting_a_record_with_a_recomputed_hash_breaks_at_the_next_record() {
        let mut c = chain(10);
        let r = c[4].clone();
        let mut forged = r.event.clone();
        forged.outcome = "denied".to_owned();
        c[4] = seal(r.seq, r.recorded_at, forged, &r.prev_hash);
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (6, BreakKind::PrevHashMismatch));
    }

    #[test]
    fn a_chain_must_start_at_one_from_genesis() {
        let mut c = chain(3);
        c.remove(0);
        assert_eq!((break_of(c).seq, BreakKind::BadStart), (2, BreakKind::BadStart));

        let mut c = chain(3);
        let r = c[0].clone();
        c[0] = seal(1, r.recorded_at, r.event, &"ab".repeat(32));
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (1, BreakKind::BadStart));

        let c = vec![seal(0, at(0), event(0), GENESIS_HASH)];
        let b = break_of(c);
        assert_eq!((b.seq, b.kind), (0, BreakKind::BadStart));
    }

    #[test]
    fn deleting_trailing_records_is_only_visible_against_an_anchored_head() {
        let c = chain(10);
        let anchored = (Some(c[9].seq), Some(c[9].hash.clone()));
        let mut truncated = c;
        truncated.pop();
        // The chain alone cannot tell: what is left is a valid chain.
        let report = verify_all(truncated).unwrap();
        assert_eq!(report.records, 9);
        assert_ne!((report.head_seq, report.head_hash), anchored);
    }

    #[test]
    fn verifier_stays_broken_after_the_first_break() {
        let mut c = chain(4);
        c[1].event.actor = "mallory".to_owned();
        let mut v = ChainVerifier::new();
        v.push(&c[0]).unwrap();
        let first = v.push(&c[1]).unwrap_err();
        assert_eq!(v.push(&c[2]).unwrap_err(), first);
        assert_eq!(v.finish(), VerifyReport { records: 1, head_seq: Some(1), head_hash: Some(c[0].hash.clone()) });
    }

    #[test]
    fn seal_truncates_time_to_microseconds_and_serializes_it_as_hashed() {
        let t = Utc.timestamp_opt(1_790_000_000, 123_456_999).single().unwrap();
        assert_eq!(truncate_time(t).timestamp_subsec_nanos(), 123_456_000);
        let r = seal(1, t, event(1), GENESIS_HASH);
        assert_eq!(r.recorded_at, truncate_time(t));
        assert_eq!(format_time(r.recorded_at), "2026-09-21T14:13:20.123456Z");
        assert_eq!(format_time(Utc.timestamp_opt(0, 0).single().unwrap()), "1970-01-01T00:00:00.000000Z");

        let json: Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["recorded_at"], "2026-09-21T14:13:20.123456Z");
        // Any RFC 3339 spelling of the same instant reads back.
        let mut other = json;
        other["recorded_at"] = json!("2026-09-21T16:13:20.123456+02:00");
        let back: AuditRecord = serde_json::from_value(other).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn details_text_is_sorted_compact_and_round_trips() {
        let v = json!({ "b": { "d": 1, "c": [{ "z": 0, "y": "é\u{7f}" }] }, "a": null, "é": true, "Z": -1.5, "": "" });
        let text = details_to_text(&v);
        assert_eq!(
            text,
            "{\"\":\"\",\"Z\":-1.5,\"a\":null,\"b\":{\"c\":[{\"y\":\"é\u{7f}\",\"z\":0}],\"d\":1},\"é\":true}"
        );
        assert_eq!(details_from_text(&text).unwrap(), v);
        assert_eq!(details_to_text(&Value::Null), "null");
        assert!(details_from_text("{\"a\":").is_err());
    }

    #[test]
    fn seal_stores_floats_as_strings_so_chains_survive_storage() {
        let mut ev = event(1);
        ev.details = json!({ "ratio": 0.1, "nested": [1.0715660391465826e-75, 2, { "x": -0.0 }], "n": u64::MAX });
        let r = seal(1, at(0), ev, GENESIS_HASH);
        assert_eq!(
            r.event.details,
            json!({ "ratio": "0.1", "nested": ["1.0715660391465826e-75", 2, { "x": "-0.0" }], "n": u64::MAX })
        );
        let mut stored = r.clone();
        stored.event.details = details_from_text(&details_to_text(&r.event.details)).unwrap();
        assert_eq!(stored, r);
        verify_all([stored]).unwrap();
    }

    /// A chain with every optional field absent somewhere and hostile strings everywhere.
    fn varied_chain() -> Vec<AuditRecord> {
        let mut events = vec![event(1), event(2)];
        events.push(AuditEvent {
            event_type: "principal_added".to_owned(),
            channel: "config".to_owned(),
            outcome: "success".to_owned(),
            actor: "system".to_owned(),
            subject: "principal:alice".to_owned(),
            run_id: None,
            justification: None,
            workflow_key: None,
            workflow_version: None,
            details: Value::Null,
        });
        events.push(AuditEvent {
            event_type: "token_created".to_owned(),
            channel: "cli".to_owned(),
            outcome: "success".to_owned(),
            actor: "=HYPERLINK(\"http://evil.example\",\"x\")".to_owned(),
            subject: "@SUM(A1:A9)".to_owned(),
            run_id: None,
            justification: Some("line one,\r\n\"line two\"\t✓ 🚀".to_owned()),
            workflow_key: Some("+cmd".to_owned()),
            workflow_version: Some(-1),
            details: json!({ "name": "-2+3", "note": "'quoted", "tab": "\tx", "cr": "\rx", "ctl": "\u{0}\u{1f}" }),
        });
        let mut out: Vec<AuditRecord> = Vec::new();
        for (i, ev) in events.into_iter().enumerate() {
            let prev = out.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            out.push(seal(i64::try_from(i).unwrap() + 1, at(i64::try_from(i).unwrap() * 7), ev, &prev));
        }
        out
    }

    #[test]
    fn jsonl_export_round_trips_and_verifies() {
        let c = varied_chain();
        let mut buf = Vec::new();
        write_export(&mut buf, ExportFormat::Jsonl, c.clone()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), c.len());
        assert!(text.ends_with("}\n"));

        let first: serde_json::Map<String, Value> = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        let mut expected = CSV_HEADER.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected, "one flat object per record, same fields as the CSV");

        let parsed: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(parsed, c);
        assert_eq!(verify_all(parsed).unwrap().head_hash.as_ref(), Some(&c[3].hash));
    }

    #[test]
    fn csv_export_quotes_per_rfc4180_and_defuses_formulas() {
        let c = varied_chain();
        let mut buf = Vec::new();
        write_export(&mut buf, ExportFormat::Csv, c.clone()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with(
            "seq,recorded_at,event_type,channel,outcome,actor,subject,run_id,justification,workflow_key,workflow_version,details,prev_hash,hash\r\n"
        ));

        let rows: Vec<csv::StringRecord> =
            csv::Reader::from_reader(text.as_bytes()).records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), c.len());
        let plain = &rows[0];
        assert_eq!(&plain[0], "1");
        assert_eq!(&plain[1], format_time(c[0].recorded_at));
        assert_eq!(&plain[7], "0190f0e1-7c2a-7d3e-8f40-123456789abc");
        assert_eq!(&plain[11], details_to_text(&c[0].event.details));
        assert_eq!((&plain[12], &plain[13]), (GENESIS_HASH, c[0].hash.as_str()));

        let absent = &rows[2];
        assert_eq!([&absent[7], &absent[8], &absent[9], &absent[10], &absent[11]], ["", "", "", "", "null"]);

        let hostile = &rows[3];
        assert_eq!(&hostile[5], "'=HYPERLINK(\"http://evil.example\",\"x\")");
        assert_eq!(&hostile[6], "'@SUM(A1:A9)");
        assert_eq!(&hostile[8], "line one,\r\n\"line two\"\t✓ 🚀", "quoted, not altered");
        assert_eq!(&hostile[9], "'+cmd");
        assert_eq!(&hostile[10], "'-1");
        assert!(hostile[11].starts_with('{'), "details text starts with {{ and needs no prefix");

        for (cell, escaped) in [
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@x", "'@x"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'x", "''x"),
            ("x=1", "x=1"),
            ("", ""),
        ] {
            let mut cell = cell.to_owned();
            defuse_formula(&mut cell);
            assert_eq!(cell, escaped);
        }
    }

    #[test]
    fn export_format_parses_its_two_names() {
        assert_eq!("jsonl".parse::<ExportFormat>().unwrap(), ExportFormat::Jsonl);
        assert_eq!("csv".parse::<ExportFormat>().unwrap(), ExportFormat::Csv);
        let err = "json".parse::<ExportFormat>().unwrap_err();
        assert_eq!(err.to_string(), "unknown audit export format \"json\": expected \"jsonl\" or \"csv\"");
        assert_eq!(ExportFormat::Csv.to_string(), "csv");
    }

    #[test]
    fn export_reports_write_failures() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(write_export(Full, ExportFormat::Jsonl, chain(2)), Err(ExportError::Io(_))));
        // The CSV writer buffers too, so the error surfaces from a row write or the final flush.
        assert!(matches!(
            write_export(Full, ExportFormat::Csv, chain(2)),
            Err(ExportError::Csv(_) | ExportError::Io(_))
        ));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[a-z_:=+@' -]{0,12}", 1 => any::<String>()]
    }

    fn arb_details() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            arb_text().prop_map(Value::from),
        ];
        let tree = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((arb_text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        });
        prop_oneof![
            1 => Just(Value::Null),
            4 => prop::collection::vec((arb_text(), tree), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    }

    prop_compose! {
        fn arb_event()(
            strings in prop::array::uniform5(arb_text()),
            run_id in any::<Option<u128>>(),
            justification in prop::option::of(arb_text()),
            workflow_key in prop::option::of(arb_text()),
            workflow_version in any::<Option<i32>>(),
            details in arb_details(),
        ) -> AuditEvent {
            let [event_type, channel, outcome, actor, subject] = strings;
            AuditEvent {
                event_type, channel, outcome, actor, subject,
                run_id: run_id.map(Uuid::from_u128),
                justification, workflow_key, workflow_version, details,
            }
        }
    }

    prop_compose! {
        fn arb_chain()(
            events in prop::collection::vec((arb_event(), 0i64..4_102_444_800, 0u32..1_000_000_000), 1..8),
        ) -> Vec<AuditRecord> {
            let mut out: Vec<AuditRecord> = Vec::new();
            for (i, (ev, secs, nanos)) in events.into_iter().enumerate() {
                let prev = out.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
                let t = Utc.timestamp_opt(secs, nanos).single().unwrap();
                out.push(seal(i64::try_from(i).unwrap() + 1, t, ev, &prev));
            }
            out
        }
    }

    /// The first string value inside `v`, depth first.
    fn first_string(v: &mut Value) -> Option<&mut String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Array(items) => items.iter_mut().find_map(first_string),
            Value::Object(map) => map.values_mut().find_map(first_string),
            _ => None,
        }
    }

    /// Field `f` of `r` as a mutable, non-empty string, if it is one.
    fn string_field(r: &mut AuditRecord, f: usize) -> Option<&mut String> {
        let e = &mut r.event;
        let s = match f {
            0 => &mut e.event_type,
            1 => &mut e.channel,
            2 => &mut e.outcome,
            3 => &mut e.actor,
            4 => &mut e.subject,
            5 => e.justification.as_mut()?,
            6 => e.workflow_key.as_mut()?,
            7 => &mut r.prev_hash,
            8 => &mut r.hash,
            _ => return first_string(&mut e.details),
        };
        (!s.is_empty()).then_some(s)
    }

    proptest! {
        #[test]
        fn escaping_matches_serde_json(s in any::<String>()) {
            let mut ours = String::new();
            write_json_str(&mut ours, &s);
            prop_assert_eq!(ours, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn seal_with_text_seals_as_seal_does(ev in arb_event(), secs in 0i64..4_102_444_800, nanos in 0u32..1_000_000_000) {
            let t = Utc.timestamp_opt(secs, nanos).single().unwrap();
            let (record, details) = seal_with_text(3, t, ev.clone(), GENESIS_HASH);
            prop_assert_eq!(&details, &details_to_text(&record.event.details));
            prop_assert_eq!(record, seal(3, t, ev, GENESIS_HASH));
        }

        #[test]
        fn details_text_is_serde_json_with_sorted_keys(v in arb_details()) {
            let mut sorted = v.clone();
            sorted.sort_all_objects();
            prop_assert_eq!(details_to_text(&v), serde_json::to_string(&sorted).unwrap());
        }

        #[test]
        fn sealed_chains_survive_storage_and_jsonl_round_trips(c in arb_chain()) {
            // What the store does: details as canonical TEXT, time at microsecond precision.
            let stored: Vec<AuditRecord> = c.iter().cloned().map(|mut r| {
                r.event.details = details_from_text(&details_to_text(&r.event.details)).unwrap();
                r.recorded_at = truncate_time(r.recorded_at);
                r
            }).collect();
            prop_assert_eq!(&stored, &c);
            prop_assert_eq!(verify_all(stored).unwrap().records, c.len() as u64);

            let mut buf = Vec::new();
            write_export(&mut buf, ExportFormat::Jsonl, c.clone()).unwrap();
            let parsed: Vec<AuditRecord> =
                std::str::from_utf8(&buf).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            prop_assert_eq!(&parsed, &c);
            prop_assert!(verify_all(parsed).is_ok());
        }

        #[test]
        fn stored_records_verify_as_sealed_and_any_other_details_text_breaks(c in arb_chain(), at in any::<prop::sample::Index>()) {
            let texts: Vec<String> = c.iter().map(|r| details_to_text(&r.event.details)).collect();
            fn stored<'a>(r: &'a AuditRecord, details: &'a str) -> StoredRecord<'a> {
                StoredRecord {
                    seq: r.seq,
                    recorded_at: r.recorded_at,
                    event_type: &r.event.event_type,
                    channel: &r.event.channel,
                    outcome: &r.event.outcome,
                    actor: &r.event.actor,
                    subject: &r.event.subject,
                    run_id: r.event.run_id,
                    justification: r.event.justification.as_deref(),
                    workflow_key: r.event.workflow_key.as_deref(),
                    workflow_version: r.event.workflow_version,
                    details,
                    prev_hash: &r.prev_hash,
                    hash: &r.hash,
                }
            }
            let mut v = ChainVerifier::new();
            for (r, t) in c.iter().zip(&texts) {
                prop_assert!(v.push_stored(&stored(r, t)).is_ok());
            }
            prop_assert_eq!(v.finish(), verify_all(c.clone()).unwrap());

            // The same JSON written differently (a space after the first byte) is not what was sealed.
            let i = at.index(c.len());
            let mut v = ChainVerifier::new();
            for (j, (r, t)) in c.iter().zip(&texts).enumerate() {
                let text = if j == i { format!("{} {}", &t[..1], &t[1..]) } else { t.clone() };
                let pushed = v.push_stored(&stored(r, &text));
                if j == i {
                    prop_assert_eq!(pushed.unwrap_err().kind, BreakKind::HashMismatch);
                    break;
                }
                prop_assert!(pushed.is_ok());
            }
        }

        #[test]
        fn any_single_byte_change_to_a_string_field_is_detected_at_that_record(
            mut c in arb_chain(),
            record in any::<prop::sample::Index>(),
            field in any::<prop::sample::Index>(),
            byte in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let i = record.index(c.len());
            let fields: Vec<usize> = (0..10).filter(|&f| string_field(&mut c[i], f).is_some()).collect();
            let f = fields[field.index(fields.len())];
            let s = string_field(&mut c[i], f).unwrap();
            let original = s.clone();
            let at = byte.index(original.len());
            // Flip bits of one byte; try other masks until the result is still UTF-8.
            let changed = (0..=255u8).map(|k| mask.wrapping_add(k)).filter(|&m| m != 0).find_map(|m| {
                let mut bytes = original.clone().into_bytes();
                bytes[at] ^= m;
                String::from_utf8(bytes).ok()
            });
            prop_assume!(changed.is_some());
            *s = changed.unwrap();

            let seq = c[i].seq;
            let b = verify_all(c).unwrap_err();
            prop_assert_eq!(b.seq, seq, "{}", b);
            let expected = match f {
                7 if seq == 1 => BreakKind::BadStart,
                7 => BreakKind::PrevHashMismatch,
                _ => BreakKind::HashMismatch,
            };
            prop_assert_eq!(b.kind, expected);
        }
    }
}
