//! The credential inventory's model and its import files: every integration credential an
//! operator holds (OAuth clients and grants, refresh tokens, API keys, webhook secrets, app
//! installations, service-account keys, bot tokens), with its integration, owner, scopes,
//! lifetime and how it is revoked.
//!
//! Pure: parsing and checking a file's rows here needs neither the database nor the directory;
//! the writer job ([`crate::feature::credentials`]) checks names against the directory and
//! compares each row with what is stored. A secret value never appears in a `Debug` output, an
//! error or an audit record: it is a [`SecretString`] from the moment it is read.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use saphyr_parser::{Event, Parser, ScalarStyle};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Longest credential name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest description or revocation instructions, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest secret reference, in characters.
pub const MAX_REF_CHARS: usize = 1000;
/// Longest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most scopes one credential lists.
pub const MAX_SCOPES: usize = 100;
/// Longest scope, in characters.
pub const MAX_SCOPE_CHARS: usize = 200;
/// Most rows one import file may hold.
pub const MAX_ROWS: usize = 200_000;

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An OAuth client (id and secret).
    OauthClient,
    /// An OAuth grant (consent given to an app).
    OauthGrant,
    /// A refresh token.
    RefreshToken,
    /// An API key.
    ApiKey,
    /// A webhook signing secret.
    WebhookSecret,
    /// An app installation (GitHub App, Slack app, …).
    AppInstallation,
    /// A service account's key.
    ServiceAccountKey,
    /// A bot token.
    BotToken,
}

impl CredentialKind {
    /// Every kind, in the order documented.
    pub const ALL: [Self; 8] = [
        Self::OauthClient,
        Self::OauthGrant,
        Self::RefreshToken,
        Self::ApiKey,
        Self::WebhookSecret,
        Self::AppInstallation,
        Self::ServiceAccountKey,
        Self::BotToken,
    ];

    /// The kind's name in files and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OauthClient => "oauth_client",
            Self::OauthGrant => "oauth_grant",
            Self::RefreshToken => "refresh_token",
            Self::ApiKey => "api_key",
            Self::WebhookSecret => "webhook_secret",
            Self::AppInstallation => "app_installation",
            Self::ServiceAccountKey => "service_account_key",
            Self::BotToken => "bot_token",
        }
    }

    /// The kind named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Every name, comma-separated (for messages).
    #[must_use]
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// How a credential is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMethod {
    /// Through the integration's connector (a `revoke` action).
    Connector,
    /// By hand, following the instructions or the URL given.
    Manual,
}

impl RevocationMethod {
    /// Its name in files and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::Manual => "manual",
        }
    }

    /// The method named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connector" => Some(Self::Connector),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }
}

/// Whether a credential is still valid at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStatus {
    /// No expiry, or an expiry still ahead.
    Active,
    /// Past its expiry.
    Expired,
}

impl CredentialStatus {
    /// Its name in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }

    /// The status named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    /// The status of a credential expiring at `expires_at`, seen at `now`.
    #[must_use]
    pub fn at(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match expires_at {
            Some(e) if e <= now => Self::Expired,
            _ => Self::Active,
        }
    }
}

/// Where a credential's secret is: a reference to a secret store (not a secret itself), or the
/// value, which Tollgate stores sealed.
#[derive(Clone)]
pub enum SecretSource {
    /// A reference such as `vault:kv/data/github#token` (stored as is; it is not the secret).
    Reference(String),
    /// The secret itself: sealed before it is stored, never shown again.
    Value(SecretString),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reference(r) => f.debug_tuple("Reference").field(r).finish(),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl SecretSource {
    /// The hint shown for a value: its last four characters when it is long enough (16 or
    /// more) that they give nothing useful away; a reference shows itself.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Reference(_) => None,
            Self::Value(v) => {
                let chars: Vec<char> = v.expose_secret().chars().collect();
                (chars.len() >= 16).then(|| format!("…{}", chars[chars.len() - 4..].iter().collect::<String>()))
            }
        }
    }
}

/// One credential as a file row or an API body gives it, checked field by field.
#[derive(Debug, Clone)]
pub struct CredentialInput {
    /// 1-based line of the row in its file (1 for an API body).
    pub line: usize,
    /// Unique name: the import key.
    pub name: String,
    /// Kind.
    pub kind: CredentialKind,
    /// Integration (must exist in the directory).
    pub integration: String,
    /// Owner (must be a principal of the directory).
    pub owner: String,
    /// Scopes it carries.
    pub scopes: Vec<String>,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was last rotated (without one, a change of secret sets it to the import's time).
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// How it is revoked.
    pub revocation: RevocationMethod,
    /// Instructions for a manual revocation.
    pub revocation_instructions: Option<String>,
    /// Where it is revoked by hand (an `https://` or `http://` URL).
    pub revocation_url: Option<String>,
    /// Free text.
    pub description: String,
    /// The secret: a reference, a value, or neither (inventory only).
    pub secret: Option<SecretSource>,
}

/// A row that cannot be imported: where, which field, why. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based line in the file.
    pub line: usize,
    /// The field at fault (`-` for the row or file as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RowError {
    /// A new error.
    #[must_use]
    pub fn new(line: usize, field: &str, message: impl Into<String>) -> Self {
        Self { line, field: field.to_owned(), message: message.into() }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

/// A stored credential as the API and the CLI show it (never a secret value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Id.
    pub id: uuid::Uuid,
    /// Unique name.
    pub name: String,
    /// Kind ([`CredentialKind`]).
    pub kind: String,
    /// Integration.
    pub integration: String,
    /// Owner.
    pub owner: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The integration's environment.
    pub environment: String,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was last rotated.
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// How it is revoked ([`RevocationMethod`]).
    pub revocation: String,
    /// Instructions for a manual revocation.
    pub revocation_instructions: Option<String>,
    /// Where it is revoked by hand.
    pub revocation_url: Option<String>,
    /// Free text.
    pub description: String,
    /// The current version's number (0: no secret recorded).
    pub current_version: i32,
    /// Versions, newest first: the current one (`active`) and the previous ones (`retired`).
    pub versions: Vec<CredentialVersion>,
    /// When it was first recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One version of a credential's secret, as shown: never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialVersion {
    /// 1, 2, 3, …
    pub version: i32,
    /// `active` or `retired`.
    pub state: String,
    /// The last four characters of a stored value, when it is long enough.
    pub hint: Option<String>,
    /// The reference, for a secret kept elsewhere.
    pub secret_ref: Option<String>,
    /// Whether Tollgate holds the value (sealed).
    pub has_value: bool,
    /// When this version was recorded.
    pub created_at: DateTime<Utc>,
    /// When a newer version replaced it.
    pub retired_at: Option<DateTime<Utc>>,
}

/// What became of one row of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOutcome {
    /// A new credential.
    Created,
    /// A stored credential changed.
    Updated,
    /// Stored exactly so already.
    Unchanged,
}

impl RowOutcome {
    /// Its name in reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Line in the file.
    pub line: usize,
    /// Credential name.
    pub name: String,
    /// What became of it.
    pub outcome: RowOutcome,
    /// Its current secret version after the import.
    pub version: i32,
}

/// What an import did, or, with invalid rows, why it did nothing.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Every valid row's outcome, in file order (with invalid rows, what it would have been).
    pub rows: Vec<RowReport>,
    /// Invalid rows: when there is one, nothing was stored.
    pub invalid: Vec<RowError>,
    /// Whether the changes were stored (false for a dry run or with invalid rows).
    pub applied: bool,
}

impl ImportReport {
    /// How many rows had `outcome`.
    #[must_use]
    pub fn count(&self, outcome: RowOutcome) -> usize {
        self.rows.iter().filter(|r| r.outcome == outcome).count()
    }
}

/// The formats an import file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// A YAML sequence of mappings, one per credential.
    Yaml,
    /// CSV with a header line naming the columns.
    Csv,
}

impl ImportFormat {
    /// The format named `s` (`yaml`, `yml`, `csv`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The format a file name's extension says.
    #[must_use]
    pub fn of_path(path: &std::path::Path) -> Option<Self> {
        path.extension().and_then(|e| e.to_str()).and_then(Self::parse)
    }
}

/// A file's rows: those that are valid and those that are not (the import happens only when
/// there are none of the latter).
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Valid rows, in file order.
    pub rows: Vec<CredentialInput>,
    /// Invalid rows and file-level problems, by line.
    pub invalid: Vec<RowError>,
}

/// The fields a row may have (YAML keys, CSV columns).
pub const FIELDS: [&str; 16] = [
    "name",
    "kind",
    "integration",
    "owner",
    "scopes",
    "issued_at",
    "expires_at",
    "last_used_at",
    "last_rotated_at",
    "revocation",
    "revocation_instructions",
    "revocation_url",
    "description",
    "secret_ref",
    "value",
    "environment",
];

/// A field's raw value: text (YAML scalar, CSV cell) or a list (YAML sequence of scalars).
#[derive(Debug, Clone)]
enum Raw {
    Text(String),
    List(Vec<String>),
    Null,
}

/// One row's raw fields, its line, and the line of each known field (0: the row's).
#[derive(Default)]
struct RawRow {
    line: usize,
    /// The known fields' values, by their position in [`FIELDS`].
    fields: [Option<Raw>; FIELDS.len()],
    lines: [usize; FIELDS.len()],
    /// Keys that are no field (a YAML row's), refused by [`check_row`].
    unknown: Vec<String>,
}

impl RawRow {
    /// The line `field` is on.
    fn at(&self, field: &str) -> usize {
        field_index(field).map(|i| self.lines[i]).filter(|l| *l > 0).unwrap_or(self.line)
    }

    /// Whether the row has `key` already.
    fn has(&self, key: &str) -> bool {
        match field_index(key) {
            Some(i) => self.fields[i].is_some(),
            None => self.unknown.iter().any(|k| k == key),
        }
    }

    fn insert(&mut self, field: String, value: Raw, line: usize) {
        match field_index(&field) {
            Some(i) => {
                self.lines[i] = line;
                self.fields[i] = Some(value);
            }
            None => self.unknown.push(field),
        }
    }

    fn take(&mut self, field: &str) -> Option<Raw> {
        field_index(field).and_then(|i| self.fields[i].take())
    }
}

/// `field`'s position in [`FIELDS`].
fn field_index(field: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == field)
}

impl fmt::Debug for RawRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRow").field("line", &self.line).finish_non_exhaustive()
    }
}

/// Parses `content` as `format`, checking every row; `progress` is called with the number of
/// rows read so far (for a progress bar) every 1,000 rows and at the end.
#[must_use]
pub fn parse(format: ImportFormat, content: &str, progress: &mut dyn FnMut(usize)) -> ParsedFile {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let rows = Vec::with_capacity(expected_rows(format, content));
    let mut checker =
        Checker { out: ParsedFile { rows, invalid: Vec::new() }, seen: HashMap::new(), read: 0, progress };
    let read = match format {
        ImportFormat::Yaml => read_yaml(content, |row| checker.row(row)),
        ImportFormat::Csv => read_csv(content, |row| checker.row(row)),
    };
    match read {
        Ok(()) => checker.finish(),
        Err(e) => ParsedFile { rows: Vec::new(), invalid: vec![e] },
    }
}

/// About how many rows `content` holds, to size the list of rows once: they are most of an
/// import's memory, and a list grown by doubling holds its old and new storage at once, then up
/// to twice what it needs. CSV: its lines; YAML: its items at the start of a line (`- `).
fn expected_rows(format: ImportFormat, content: &str) -> usize {
    let n = match format {
        ImportFormat::Csv => content.bytes().filter(|b| *b == b'\n').count(),
        ImportFormat::Yaml => content.matches("\n- ").count() + usize::from(content.starts_with("- ")),
    };
    n.min(MAX_ROWS)
}

/// Checks each row as it is read, so that a large file's raw rows never pile up: only the
/// checked ones are kept.
struct Checker<'p> {
    out: ParsedFile,
    /// Each valid row's name and line, for names repeated within the file.
    seen: HashMap<String, usize>,
    /// Rows read.
    read: usize,
    progress: &'p mut dyn FnMut(usize),
}

impl Checker<'_> {
    fn row(&mut self, row: RawRow) {
        self.read += 1;
        if self.read > MAX_ROWS {
            // The file is refused whole; it is read to its end only for a syntax error.
            if self.read == MAX_ROWS + 1 {
                self.out = ParsedFile::default();
                self.seen = HashMap::new();
            }
            return;
        }
        let line = row.line;
        match check_row(row) {
            Ok(input) => {
                if let Some(first) = self.seen.insert(input.name.clone(), line) {
                    self.out.invalid.push(RowError::new(
                        line,
                        "name",
                        format!("{:?} is already on line {first}", input.name),
                    ));
                } else {
                    self.out.rows.push(input);
                }
            }
            Err(e) => self.out.invalid.push(e),
        }
        if self.read.is_multiple_of(1000) {
            (self.progress)(self.read);
        }
    }

    fn finish(self) -> ParsedFile {
        if self.read > MAX_ROWS {
            return ParsedFile {
                rows: Vec::new(),
                invalid: vec![RowError::new(1, "-", format!("at most {MAX_ROWS} rows per file"))],
            };
        }
        (self.progress)(self.out.rows.len() + self.out.invalid.len());
        self.out
    }
}

/// Checks one credential given as a JSON object (`POST /v1/credentials`) by the rules of a file
/// row: the same fields, strings or (for `scopes`) a list of strings.
///
/// # Errors
/// The first problem, at line 1.
pub fn check_json(fields: &serde_json::Map<String, serde_json::Value>) -> Result<CredentialInput, RowError> {
    let mut row = RawRow { line: 1, ..RawRow::default() };
    for (k, v) in fields {
        let raw = match v {
            serde_json::Value::Null => Raw::Null,
            serde_json::Value::String(s) => Raw::Text(s.clone()),
            serde_json::Value::Array(items) => Raw::List(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| RowError::new(1, k, "a list of strings")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(RowError::new(1, k, "must be a string")),
        };
        row.insert(k.clone(), raw, 1);
    }
    check_row(row)
}

/// Reads a YAML sequence of mappings with `saphyr-parser`'s events, so that each row keeps the
/// line it starts on, handing each row to `sink` as it ends. Anchors and aliases, nested mappings
/// and several documents are refused.
fn read_yaml(text: &str, mut sink: impl FnMut(RawRow)) -> Result<(), RowError> {
    #[derive(PartialEq)]
    enum At {
        Top,
        Rows,
        Row,
        Value,
        List,
        Done,
    }
    let mut at = At::Top;
    let mut row = RawRow::default();
    let mut key: Option<String> = None;
    let mut key_line = 0;
    let mut list: Vec<String> = Vec::new();
    let mut documents = 0;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| RowError::new(e.marker().line(), "-", e.info().to_owned()))?;
        let line = span.start.line();
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(RowError::new(line, "-", "one YAML document per file"));
                }
            }
            Event::Alias(_) => return Err(RowError::new(line, "-", "anchors and aliases are not allowed")),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if anchor > 0 => {
                return Err(RowError::new(line, "-", "anchors and aliases are not allowed"));
            }
            Event::SequenceStart(..) => match at {
                At::Top => at = At::Rows,
                At::Value => {
                    list.clear();
                    at = At::List;
                }
                _ => return Err(RowError::new(line, key.as_deref().unwrap_or("-"), "a list is not allowed here")),
            },
            Event::SequenceEnd => match at {
                At::List => {
                    let k = key.take().unwrap_or_default();
                    row.insert(k, Raw::List(std::mem::take(&mut list)), key_line);
                    at = At::Row;
                }
                At::Rows => at = At::Done,
                _ => return Err(RowError::new(line, "-", "unexpected end of list")),
            },
            Event::MappingStart(..) => match at {
                At::Rows => {
                    row = RawRow { line, ..RawRow::default() };
                    at = At::Row;
                }
                At::Top => {
                    return Err(RowError::new(
                        line,
                        "-",
                        "the file must be a list of credentials (`- name: …` items), not a mapping",
                    ));
                }
                _ => {
                    return Err(RowError::new(line, key.as_deref().unwrap_or("-"), "a mapping is not allowed here"));
                }
            },
            Event::MappingEnd => {
                if at != At::Row {
                    return Err(RowError::new(line, "-", "unexpected end of mapping"));
                }
                sink(std::mem::take(&mut row));
                at = At::Rows;
            }
            Event::Scalar(value, style, anchor, _) => {
                if anchor > 0 {
                    return Err(RowError::new(line, "-", "anchors and aliases are not allowed"));
                }
                let null = style == ScalarStyle::Plain && matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                match at {
                    At::Row => {
                        let k = value.into_owned();
                        if row.has(&k) {
                            return Err(RowError::new(line, &k, "duplicate key"));
                        }
                        key = Some(k);
                        key_line = line;
                        at = At::Value;
                    }
                    At::Value => {
                        let k = key.take().unwrap_or_default();
                        row.insert(k, if null { Raw::Null } else { Raw::Text(value.into_owned()) }, key_line);
                        at = At::Row;
                    }
                    At::List => list.push(value.into_owned()),
                    At::Top if null => at = At::Done,
                    _ => {
                        return Err(RowError::new(
                            line,
                            "-",
                            "the file must be a list of credentials (`- name: …` items)",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads CSV with a header line; every other line is a row (empty cells are absent fields),
/// handed to `sink` as it is read.
fn read_csv(text: &str, mut sink: impl FnMut(RawRow)) -> Result<(), RowError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| RowError::new(1, "-", e.to_string()))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    for (i, h) in headers.iter().enumerate() {
        if !FIELDS.contains(&h.as_str()) {
            return Err(RowError::new(1, h, format!("unknown column; the columns are {}", FIELDS.join(", "))));
        }
        if headers[..i].contains(h) {
            return Err(RowError::new(1, h, "column named twice"));
        }
    }
    // Every header is a field (checked above).
    let columns: Vec<usize> = headers.iter().filter_map(|h| field_index(h)).collect();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
                let mut row = RawRow { line, ..RawRow::default() };
                for (&i, cell) in columns.iter().zip(record.iter()) {
                    if !cell.is_empty() {
                        row.fields[i] = Some(Raw::Text(cell.to_owned()));
                    }
                }
                sink(row);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} fields where the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
                    _ => e.to_string(),
                };
                return Err(RowError::new(line, "-", message));
            }
        }
    }
    Ok(())
}

fn text(row: &mut RawRow, field: &'static str) -> Result<Option<String>, RowError> {
    match row.take(field) {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::Text(t)) => Ok(Some(t)),
        Some(Raw::List(_)) => Err(RowError::new(row.at(field), field, "must be text, not a list")),
    }
}

/// `t` without leading and trailing white space (copied only when it has some).
fn trimmed(t: String) -> String {
    if t.trim().len() == t.len() { t } else { t.trim().to_owned() }
}

fn required(row: &mut RawRow, field: &'static str) -> Result<String, RowError> {
    match text(row, field)? {
        Some(t) if !t.trim().is_empty() => Ok(trimmed(t)),
        _ => Err(RowError::new(row.at(field), field, "required")),
    }
}

fn time(row: &mut RawRow, field: &'static str) -> Result<Option<DateTime<Utc>>, RowError> {
    text(row, field)?
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            // Kept to the microsecond, as PostgreSQL stores it: an import read back compares equal.
            DateTime::parse_from_rfc3339(t.trim())
                .map(|d| d.with_timezone(&Utc).trunc_subsecs(6))
                .map_err(|_| RowError::new(row.line, field, "must be an RFC 3339 time, e.g. 2026-12-31T00:00:00Z"))
        })
        .transpose()
}

fn plain_text(line: usize, field: &'static str, value: &str, max: usize) -> Result<(), RowError> {
    if value.chars().count() > max {
        return Err(RowError::new(line, field, format!("at most {max} characters")));
    }
    if value.chars().any(|c| crate::policy::is_deceptive(c) || crate::policy::is_invisible_format(c)) {
        return Err(RowError::new(
            line,
            field,
            "control, bidirectional-override and invisible (zero-width) characters are not allowed",
        ));
    }
    Ok(())
}

/// Whether `name` may name a credential: 1–200 of `A–Z a–z 0–9 . _ - : / @`.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/@".contains(c))
}

/// Checks one row's fields.
fn check_row(mut row: RawRow) -> Result<CredentialInput, RowError> {
    let line = row.line;
    let at = |f: &str, lines: &[usize; FIELDS.len()]| {
        FIELDS.iter().position(|x| *x == f).map(|i| lines[i]).filter(|l| *l > 0).unwrap_or(line)
    };
    let lines = row.lines;
    // The first unknown key in sorted order, whatever order the row gave them in.
    if let Some(unknown) = row.unknown.iter().min() {
        return Err(RowError::new(line, unknown, format!("unknown field; the fields are {}", FIELDS.join(", "))));
    }
    let name = required(&mut row, "name")?;
    if !valid_name(&name) {
        return Err(RowError::new(
            at("name", &lines),
            "name",
            format!("1–{MAX_NAME_CHARS} characters of A–Z, a–z, 0–9 and . _ - : / @"),
        ));
    }
    let kind_text = required(&mut row, "kind")?;
    let kind = CredentialKind::parse(&kind_text).ok_or_else(|| {
        RowError::new(at("kind", &lines), "kind", format!("must be one of {}", CredentialKind::names()))
    })?;
    let integration = required(&mut row, "integration")?;
    plain_text(at("integration", &lines), "integration", &integration, crate::policy::MAX_INTEGRATION_CHARS)?;
    let owner = required(&mut row, "owner")?;
    plain_text(at("owner", &lines), "owner", &owner, MAX_NAME_CHARS)?;
    let scopes = match row.take("scopes") {
        None | Some(Raw::Null) => Vec::new(),
        Some(Raw::List(l)) => l,
        // CSV (or a YAML string): separated by spaces or commas.
        Some(Raw::Text(t)) => t.split([' ', ',', '\t']).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    };
    if scopes.len() > MAX_SCOPES {
        return Err(RowError::new(at("scopes", &lines), "scopes", format!("at most {MAX_SCOPES} scopes")));
    }
    for s in &scopes {
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(RowError::new(at("scopes", &lines), "scopes", "a scope is one word, not empty"));
        }
        plain_text(at("scopes", &lines), "scopes", s, MAX_SCOPE_CHARS)?;
    }
    let issued_at = time(&mut row, "issued_at")?;
    let expires_at = time(&mut row, "expires_at")?;
    let last_used_at = time(&mut row, "last_used_at")?;
    let last_rotated_at = time(&mut row, "last_rotated_at")?;
    if let (Some(i), Some(e)) = (issued_at, expires_at)
        && e < i
    {
        return Err(RowError::new(at("expires_at", &lines), "expires_at", "before issued_at"));
    }
    let revocation = match text(&mut row, "revocation")?.map(trimmed) {
        None => RevocationMethod::Manual,
        Some(t) if t.is_empty() => RevocationMethod::Manual,
        Some(t) => RevocationMethod::parse(&t)
            .ok_or_else(|| RowError::new(at("revocation", &lines), "revocation", "must be `connector` or `manual`"))?,
    };
    let revocation_instructions = text(&mut row, "revocation_instructions")?.filter(|t| !t.trim().is_empty());
    if let Some(t) = &revocation_instructions {
        plain_text(at("revocation_instructions", &lines), "revocation_instructions", t, MAX_TEXT_CHARS)?;
    }
    let revocation_url = text(&mut row, "revocation_url")?.map(trimmed).filter(|t| !t.is_empty());
    if let Some(u) = &revocation_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) || u.chars().any(char::is_whitespace) {
            return Err(RowError::new(
                at("revocation_url", &lines),
                "revocation_url",
                "must be an http:// or https:// URL",
            ));
        }
        plain_text(at("revocation_url", &lines), "revocation_url", u, MAX_REF_CHARS)?;
    }
    let description = text(&mut row, "description")?.unwrap_or_default();
    plain_text(at("description", &lines), "description", &description, MAX_TEXT_CHARS)?;
    // Taken from the integration; accepted in files for readability and checked by the import.
    let _environment = text(&mut row, "environment")?;
    let secret_ref = text(&mut row, "secret_ref")?.map(trimmed).filter(|t| !t.is_empty());
    let value = text(&mut row, "value")?.filter(|t| !t.is_empty()).map(SecretString::from);
    let secret = match (secret_ref, value) {
        (Some(_), Some(_)) => {
            return Err(RowError::new(at("value", &lines), "value", "give either secret_ref or value, not both"));
        }
        (Some(r), None) => {
            if !valid_reference(&r) {
                return Err(RowError::new(
                    at("secret_ref", &lines),
                    "secret_ref",
                    "must be `scheme:location` (e.g. vault:kv/data/github#token), at most 1000 characters, \
                     without spaces or control characters",
                ));
            }
            Some(SecretSource::Reference(r))
        }
        (None, Some(v)) => {
            if v.expose_secret().len() > MAX_VALUE_BYTES {
                return Err(RowError::new(at("value", &lines), "value", format!("at most {MAX_VALUE_BYTES} bytes")));
            }
            Some(SecretSource::Value(v))
        }
        (None, None) => None,
    };
    Ok(CredentialInput {
        line,
        name,
        kind,
        integration,
        owner,
        scopes,
        issued_at,
        expires_at,
        last_used_at,
        last_rotated_at,
        revocation,
        revocation_instructions,
        revocation_url,
        description,
        secret,
    })
}

/// A secret reference: `scheme:location`, the scheme lowercase letters, digits and `+-.`.
#[must_use]
pub fn valid_reference(r: &str) -> bool {
    let Some((scheme, rest)) = r.split_once(':') else { return false };
    !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && !rest.is_empty()
        && r.chars().count() <= MAX_REF_CHARS
        && !r.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(format: ImportFormat, text: &str) -> ParsedFile {
        parse(format, text, &mut |_| {})
    }

    const YAML: &str = "\
# inventory
- name: gh-deploy-key
  kind: api_key
  integration: github-staging
  owner: bob
  scopes: [contents:read, contents:write]
  expires_at: 2027-01-01T00:00:00Z
  secret_ref: vault:kv/data/github#deploy

- name: sf-client
  kind: oauth_client
  integration: salesforce-prod
  owner: alice
  scopes:
    - api
    - refresh_token
  revocation: manual
  revocation_url: https://login.salesforce.com/
  value: s3cr3t-value-0123456789
";

    #[test]
    fn yaml_rows_keep_their_lines() {
        let parsed = parse_all(ImportFormat::Yaml, YAML);
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!((parsed.rows[0].line, parsed.rows[1].line), (2, 10));
        assert_eq!(parsed.rows[0].scopes, ["contents:read", "contents:write"]);
        assert_eq!(parsed.rows[1].scopes, ["api", "refresh_token"]);
        assert!(
            matches!(parsed.rows[0].secret, Some(SecretSource::Reference(ref r)) if r == "vault:kv/data/github#deploy")
        );
        assert_eq!(parsed.rows[1].secret.as_ref().and_then(SecretSource::hint).as_deref(), Some("…6789"));
        let debug = format!("{:?}", parsed.rows[1]);
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn yaml_errors_name_the_line_and_field() {
        let bad = YAML.replace("kind: oauth_client", "kind: oauth_thing");
        let parsed = parse_all(ImportFormat::Yaml, &bad);
        assert_eq!(parsed.invalid, [RowError::new(11, "kind", format!("must be one of {}", CredentialKind::names()))]);
        assert_eq!(parsed.rows.len(), 1);

        let dup = format!("{YAML}- name: gh-deploy-key\n  kind: api_key\n  integration: x\n  owner: y\n");
        let parsed = parse_all(ImportFormat::Yaml, &dup);
        assert_eq!(parsed.invalid.len(), 1);
        assert_eq!((parsed.invalid[0].line, parsed.invalid[0].field.as_str()), (20, "name"));

        let unknown = YAML.replace("  owner: bob\n", "  owner: bob\n  colour: red\n");
        assert_eq!(parse_all(ImportFormat::Yaml, &unknown).invalid[0].field, "colour");
        let missing = YAML.replace("  owner: alice\n", "");
        assert_eq!(parse_all(ImportFormat::Yaml, &missing).invalid, [RowError::new(10, "owner", "required")]);
        assert_eq!(parse_all(ImportFormat::Yaml, "name: x\n").invalid[0].line, 1);
        assert!(parse_all(ImportFormat::Yaml, "- &a {name: x}\n- *a\n").invalid[0].message.contains("anchors"));
        assert_eq!(parse_all(ImportFormat::Yaml, "- name: [x\n").invalid.len(), 1);
        let both = YAML.replace("  secret_ref: vault", "  value: plain\n  secret_ref: vault");
        assert_eq!(parse_all(ImportFormat::Yaml, &both).invalid[0].field, "value");
        assert!(parse_all(ImportFormat::Yaml, "").rows.is_empty());
    }

    #[test]
    fn csv_rows_keep_their_lines_and_errors_name_them() {
        let text = "name,kind,integration,owner,scopes,expires_at,secret_ref\n\
                    a,api_key,github-staging,bob,contents:read contents:write,2027-01-01T00:00:00Z,vault:kv/a\n\
                    b,bot_token,github-staging,bob,,,\n\
                    c,api_key,github-staging,bob,,next week,\n";
        let parsed = parse_all(ImportFormat::Csv, text);
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].scopes, ["contents:read", "contents:write"]);
        assert_eq!((parsed.rows[0].line, parsed.rows[1].line), (2, 3));
        assert_eq!(parsed.invalid.len(), 1);
        assert_eq!((parsed.invalid[0].line, parsed.invalid[0].field.as_str()), (4, "expires_at"));

        let quoted = "name,kind,integration,owner,description\n\"a\",api_key,i,o,\"two\nlines\"\nb,api_key,i,o,x\n";
        let parsed = parse_all(ImportFormat::Csv, quoted);
        assert_eq!(parsed.rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4]);

        assert_eq!(parse_all(ImportFormat::Csv, "name,colour\n").invalid[0].field, "colour");
        let short = parse_all(ImportFormat::Csv, "name,kind,integration,owner\na,api_key,i\n");
        assert_eq!(short.invalid[0].line, 2);
    }

    #[test]
    fn a_file_over_the_row_limit_is_refused_whole_unless_it_is_malformed() {
        let mut text = String::from("name,kind,integration,owner\n");
        for i in 0..=MAX_ROWS {
            text.push_str(&format!("c{i},api_key,i,o\n"));
        }
        let parsed = parse_all(ImportFormat::Csv, &text);
        assert!(parsed.rows.is_empty());
        assert_eq!(parsed.invalid, [RowError::new(1, "-", format!("at most {MAX_ROWS} rows per file"))]);
        // A syntax error anywhere is what is reported, as for a file within the limit.
        text.push_str("late,api_key\n");
        let parsed = parse_all(ImportFormat::Csv, &text);
        assert!(parsed.rows.is_empty());
        assert_eq!((parsed.invalid.len(), parsed.invalid[0].line), (1, MAX_ROWS + 3));
    }

    #[test]
    fn names_and_references_are_checked() {
        assert!(valid_name("github/deploy-key@prod"));
        assert!(!valid_name("has space") && !valid_name("") && !valid_name(&"x".repeat(201)));
        assert!(valid_reference("vault:kv/data/x#y") && valid_reference("aws-sm:arn:aws:secretsmanager:x"));
        assert!(!valid_reference("novalue") && !valid_reference("Vault:x") && !valid_reference("vault:"));
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(CredentialStatus::at(None, t), CredentialStatus::Active);
        assert_eq!(CredentialStatus::at(Some(t), t), CredentialStatus::Expired);
        assert!(CredentialKind::ALL.iter().all(|k| CredentialKind::parse(k.as_str()) == Some(*k)));
    }
}
