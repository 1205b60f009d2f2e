//! What completes the OpenAPI document after each handler's `#[utoipa::path]`: the errors every
//! operation answers by its shape, the schemas of constrained values, and the fill-ins the
//! linter asks for.
//!
//! A handler's attribute lists what is particular to it (its success, its domain errors such as
//! `self_approval`, its links). What its extractors answer is implied by the operation as
//! documented, and [`complete`] adds it, so that no operation can forget one:
//!
//! | the operation…                                | answers                                    |
//! |-----------------------------------------------|--------------------------------------------|
//! | requires a bearer token ([`Caller`])          | 401 `unauthenticated`, 503 `unavailable`   |
//! | has a UUID path parameter ([`IdPath`])        | 400 `invalid_id`                           |
//! | has query parameters ([`Query`])              | 400 `invalid_query`                        |
//! | takes a JSON body ([`Json`])                  | 415, 413, 400 `invalid_request`, 422 `validation_failed` |
//! | is a `POST` (a write, carried out by a job)   | 500 `internal`                             |
//!
//! `api/tests/router.rs` provokes each of these through the router and checks that the status
//! answered is one the document lists.
//!
//! The schema functions (`#[schema(schema_with = …)]`, `#[param(schema_with = …)]`) build
//! enums, lengths and ranges from the same constants and lists the server validates with.
//!
//! [`Caller`]: crate::extract::Caller
//! [`IdPath`]: crate::extract::IdPath
//! [`Query`]: crate::extract::Query
//! [`Json`]: crate::extract::Json

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_engine::policy::{
    self, MAX_COMMENT_CHARS, MAX_INTEGRATION_CHARS, MAX_JUSTIFICATION_CHARS, MAX_SCOPE_CHARS, MAX_SCOPES,
};
use tollgate_engine::run::{Decision, GrantStatus, RunStatus};
use tollgate_engine::token::TokenStatus;
use tollgate_workflows::WorkflowKind;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::dto::{DEFAULT_AUDIT_LIMIT, DEFAULT_PAGE_LIMIT, MAX_AUDIT_LIMIT, MAX_PAGE_LIMIT};
use crate::extract::MAX_JSON_DEPTH;

/// One error the server may answer: its status, its `error.code`, and when.
#[derive(Debug, Clone)]
pub struct ErrorCase {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code`.
    pub code: &'static str,
    /// When the server answers it.
    pub when: String,
    /// An `error.detail` the server may send, for the example.
    pub detail: String,
    /// The shared response (`#/components/responses/…`) used when this is the only error an
    /// operation answers with this status.
    pub component: Option<&'static str>,
}

impl ErrorCase {
    fn new(status: StatusCode, code: &'static str, when: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { status, code, when: when.into(), detail: detail.into(), component: None }
    }

    fn shared(mut self, component: &'static str) -> Self {
        self.component = Some(component);
        self
    }

    /// The markdown line describing it in a response.
    fn line(&self) -> String {
        format!("- `{}`: {}", self.code, self.when)
    }

    /// The example body.
    fn example(&self) -> Value {
        json!({ "error": { "code": self.code, "detail": self.detail } })
    }
}

/// 401 `unauthenticated` (the [`Caller`](crate::extract::Caller) extractor).
#[must_use]
pub fn unauthenticated() -> ErrorCase {
    ErrorCase::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "no `Authorization: Bearer` token, or one that is unknown, revoked or of a disabled principal",
        "a valid bearer token is required",
    )
    .shared("Unauthenticated")
}

/// 503 `unavailable`: the database failed or the engine is shutting down.
#[must_use]
pub fn unavailable() -> ErrorCase {
    ErrorCase::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the database failed or the engine is shutting down; nothing was done, retry later",
        "the service is temporarily unavailable",
    )
    .shared("Unavailable")
}

/// 500 `internal`: the job carrying out a write failed on a bug.
#[must_use]
pub fn internal() -> ErrorCase {
    ErrorCase::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the job carrying out the request failed on a bug (logged); it was rolled back, nothing was done",
        "internal error; the request was not carried out",
    )
    .shared("Internal")
}

/// 400 `invalid_id` (the [`IdPath`](crate::extract::IdPath) extractor).
#[must_use]
pub fn invalid_id() -> ErrorCase {
    ErrorCase::new(StatusCode::BAD_REQUEST, "invalid_id", "the id in the path is not a UUID", "ids are UUIDs")
}

/// 400 `invalid_query` (the [`Query`](crate::extract::Query) extractor and the handlers' checks).
#[must_use]
pub fn invalid_query() -> ErrorCase {
    ErrorCase::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        "an unknown query parameter, or one that does not parse or is out of its range",
        "limit must be between 1 and 200",
    )
}

/// The four errors of the [`Json`](crate::extract::Json) body extractor.
#[must_use]
pub fn body_errors() -> [ErrorCase; 4] {
    [
        ErrorCase::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "`Content-Type` is not `application/json` (or `application/…+json`), or names a charset other than UTF-8",
            "expected Content-Type: application/json",
        )
        .shared("UnsupportedMediaType"),
        ErrorCase::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than the server's `http.max_body_bytes`",
            "request body is too large",
        )
        .shared("PayloadTooLarge"),
        ErrorCase::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "the body is empty, not UTF-8, not one well-formed JSON value, or nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
            ),
            "request body is not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
        ErrorCase::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the body is not a JSON object, repeats a key, has an unknown field, or a field does not fit its schema",
            "request body must be a JSON object, not an array",
        ),
    ]
}

/// The errors `operation` answers by its shape (see the module's table).
fn implied_errors(method: &str, operation: &Operation) -> Vec<ErrorCase> {
    let mut cases = Vec::new();
    let parameters = operation.parameters.iter().flatten().filter_map(|p| match p {
        RefOr::T(p) => Some(p),
        RefOr::Ref(_) => None,
    });
    let mut uuid_path = false;
    let mut query = false;
    for p in parameters {
        match p.parameter_in {
            ParameterIn::Path => uuid_path |= is_uuid(p.schema.as_ref()),
            ParameterIn::Query => query = true,
            _ => {}
        }
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        cases.push(unauthenticated());
        cases.push(unavailable());
    }
    if uuid_path {
        cases.push(invalid_id());
    }
    if query {
        cases.push(invalid_query());
    }
    if operation.request_body.is_some() {
        cases.extend(body_errors());
    }
    if method == "post" {
        cases.push(internal());
    }
    cases
}

fn is_uuid(schema: Option<&RefOr<utoipa::openapi::Schema>>) -> bool {
    matches!(schema, Some(RefOr::T(utoipa::openapi::Schema::Object(o)))
        if o.format == Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// Completes the document (see the module documentation): implied errors, shared error
/// responses, descriptions the linter requires; schemas nothing refers to are dropped.
pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let shared = [unauthenticated(), unavailable(), internal()].into_iter().chain(body_errors());
    for case in shared {
        if let Some(name) = case.component {
            components.responses.insert(name.to_owned(), RefOr::T(shared_response(&case)));
        }
    }
    for item in doc.paths.paths.values_mut() {
        let ops =
            [("get", &mut item.get), ("post", &mut item.post), ("put", &mut item.put), ("delete", &mut item.delete)];
        for (method, op) in ops {
            if let Some(op) = op.as_mut() {
                complete_operation(method, op);
            }
        }
    }
    drop_unreferenced_schemas(doc);
}

/// Removes component schemas no `$ref` names: a generic page (`Page<T>`) inlines its item type,
/// which utoipa still registers on its own.
fn drop_unreferenced_schemas(doc: &mut OpenApi) {
    loop {
        let text = serde_json::to_string(&*doc).unwrap_or_default();
        let Some(components) = doc.components.as_mut() else { return };
        let unused: Vec<String> = components
            .schemas
            .keys()
            .filter(|name| !text.contains(&format!("\"#/components/schemas/{name}\"")))
            .cloned()
            .collect();
        if unused.is_empty() {
            return;
        }
        for name in unused {
            components.schemas.remove(&name);
        }
    }
}

fn complete_operation(method: &str, op: &mut Operation) {
    for case in implied_errors(method, op) {
        add_error(op, &case);
    }
    for (status, response) in &mut op.responses.responses {
        if let RefOr::T(r) = response
            && r.description.is_empty()
        {
            r.description = reason(status);
        }
    }
    if op.description.as_deref().is_none_or(str::is_empty) {
        op.description.clone_from(&op.summary);
    }
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(r) = response {
            add_listed_examples(r);
        }
    }
}

/// Gives each code a handler's attribute lists in an error response (lines "- `code`: when"
/// or "- `a`, `b`: when") an example, unless it has one.
fn add_listed_examples(response: &mut Response) {
    let Some(RefOr::T(content)) = response.content.get_mut("application/json") else { return };
    let is_envelope = matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/ErrorBody"));
    if !is_envelope {
        return;
    }
    for line in response.description.lines() {
        let Some((codes, when)) = line.strip_prefix("- ").and_then(|l| l.split_once(": ")) else { continue };
        for code in codes.split(", ").map(|c| c.trim_matches('`')) {
            if !content.examples.contains_key(code) {
                let value = json!({ "error": { "code": code, "detail": when } });
                let example = ExampleBuilder::new().summary(code).value(Some(value)).build();
                content.examples.insert(code.to_owned(), RefOr::T(example));
            }
        }
    }
}

fn reason(status: &str) -> String {
    status
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
        .to_owned()
}

/// Adds `case` to the operation's responses: as the shared response if the status is free and
/// the case has one, else merged into the status's response (description line and example).
fn add_error(op: &mut Operation, case: &ErrorCase) {
    let key = case.status.as_u16().to_string();
    let entry = op.responses.responses.get_mut(&key);
    match (entry, case.component) {
        (None, Some(name)) => {
            op.responses.responses.insert(key, RefOr::Ref(Ref::from_response_name(name)));
        }
        (None, None) => {
            let response = error_response(&reason(&key), std::slice::from_ref(case));
            op.responses.responses.insert(key, RefOr::T(response));
        }
        (Some(RefOr::T(existing)), _) => merge(existing, case),
        // Shared responses carry one code each; a second one for their status would be a bug here.
        (Some(RefOr::Ref(_)), _) => {}
    }
}

fn merge(response: &mut Response, case: &ErrorCase) {
    if response.description.lines().any(|l| l.starts_with(&format!("- `{}`:", case.code))) {
        return;
    }
    let sep = if response.description.is_empty() { "" } else { "\n" };
    response.description = format!("{}{sep}{}", response.description, case.line());
    let content = response
        .content
        .entry("application/json".to_owned())
        .or_insert_with(|| RefOr::T(ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build()));
    if let RefOr::T(content) = content {
        content.examples.insert(case.code.to_owned(), RefOr::T(example(case)));
    }
}

fn example(case: &ErrorCase) -> utoipa::openapi::example::Example {
    ExampleBuilder::new().summary(case.code).value(Some(case.example())).build()
}

/// A response in the error envelope for `cases`, with one example per code.
fn error_response(title: &str, cases: &[ErrorCase]) -> Response {
    let mut response = ResponseBuilder::new().build();
    for case in cases {
        merge(&mut response, case);
    }
    response.description = format!("{title}. `error.code`:\n{}", response.description);
    response
}

fn shared_response(case: &ErrorCase) -> Response {
    let mut response = error_response(&reason(case.status.as_str()), std::slice::from_ref(case));
    if case.status == StatusCode::UNAUTHORIZED {
        let header = HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["Bearer"])).build()))
            .description(Some("The scheme to authenticate with."))
            .build();
        response.headers.insert("WWW-Authenticate".to_owned(), RefOr::T(header));
    }
    response
}

// ---- schemas of constrained values --------------------------------------------------------

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>, nullable: bool) -> ObjectBuilder {
    let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
    let schema_type = if nullable {
        values.push(Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new().schema_type(schema_type).enum_values(Some(values))
}

/// Every request kind: [`kind_index`] fails to compile when a kind is added and not listed.
pub const KINDS: [WorkflowKind; 4] =
    [WorkflowKind::Grant, WorkflowKind::Renew, WorkflowKind::Rotate, WorkflowKind::Revoke];

/// Position of `kind` in [`KINDS`] (an exhaustive match: the compile-time completeness check).
#[must_use]
pub const fn kind_index(kind: WorkflowKind) -> usize {
    match kind {
        WorkflowKind::Grant => 0,
        WorkflowKind::Renew => 1,
        WorkflowKind::Rotate => 2,
        WorkflowKind::Revoke => 3,
    }
}

/// Every grant status: [`grant_status_index`] fails to compile when one is added and not listed.
pub const GRANT_STATUSES: [GrantStatus; 6] = [
    GrantStatus::Provisioning,
    GrantStatus::Active,
    GrantStatus::Revoking,
    GrantStatus::Revoked,
    GrantStatus::RevokeFailed,
    GrantStatus::Failed,
];

/// Position of `status` in [`GRANT_STATUSES`] (exhaustive, as [`kind_index`]).
#[must_use]
pub const fn grant_status_index(status: GrantStatus) -> usize {
    match status {
        GrantStatus::Provisioning => 0,
        GrantStatus::Active => 1,
        GrantStatus::Revoking => 2,
        GrantStatus::Revoked => 3,
        GrantStatus::RevokeFailed => 4,
        GrantStatus::Failed => 5,
    }
}

/// Every decision: [`decision_index`] fails to compile when one is added and not listed.
pub const DECISIONS: [Decision; 2] = [Decision::Approve, Decision::Deny];

/// Position of `decision` in [`DECISIONS`] (exhaustive, as [`kind_index`]).
#[must_use]
pub const fn decision_index(decision: Decision) -> usize {
    match decision {
        Decision::Approve => 0,
        Decision::Deny => 1,
    }
}

/// Outcomes of a manual task as `POST /v1/tasks/{id}/complete` takes them, with whether each
/// means done; absent means `done`.
pub const TASK_OUTCOMES: [(&str, bool); 2] = [("done", true), ("failed", false)];

/// `RequestIn.kind`: a request kind, or null for `grant`.
#[must_use]
pub fn request_kind_in() -> ObjectBuilder {
    string_enum(KINDS.map(WorkflowKind::as_str), true)
        .description(Some("The kind of request; absent or null means `grant`."))
        .default(Some(json!("grant")))
}

/// `RequestOut.kind`.
#[must_use]
pub fn request_kind_out() -> ObjectBuilder {
    string_enum(KINDS.map(WorkflowKind::as_str), false).description(Some("The kind of request."))
}

/// A request's status, in responses.
#[must_use]
pub fn run_status() -> ObjectBuilder {
    string_enum(RunStatus::ALL.map(RunStatus::as_str), false).description(Some("Where the request stands."))
}

/// The `status` filter of `GET /v1/requests`.
#[must_use]
pub fn run_status_filter() -> ObjectBuilder {
    string_enum(RunStatus::ALL.map(RunStatus::as_str), false).description(Some("Only requests with this status."))
}

/// A grant's status, in responses.
#[must_use]
pub fn grant_status() -> ObjectBuilder {
    string_enum(GRANT_STATUSES.map(GrantStatus::as_str), false).description(Some("Where the grant stands."))
}

/// The `status` filter of `GET /v1/grants`.
#[must_use]
pub fn grant_status_filter() -> ObjectBuilder {
    string_enum(GRANT_STATUSES.map(GrantStatus::as_str), false).description(Some("Only grants with this status."))
}

/// `TokenOut.status` and the `status` filter of `GET /v1/tokens`.
#[must_use]
pub fn token_status() -> ObjectBuilder {
    string_enum(TokenStatus::ALL.map(TokenStatus::as_str), false)
        .description(Some("`active` (authenticates), `expired` or `revoked`."))
}

/// A credential's kind (`CredentialIn.kind`, `CredentialOut.kind`, the `kind` filter).
#[must_use]
pub fn credential_kind() -> ObjectBuilder {
    use tollgate_engine::credential::CredentialKind;
    string_enum(CredentialKind::ALL.map(CredentialKind::as_str), false).description(Some("What the credential is."))
}

/// `CredentialOut.status` and the `status` filter of `GET /v1/credentials`.
#[must_use]
pub fn credential_status() -> ObjectBuilder {
    string_enum(["active", "expired"], false).description(Some("`active` (not past `expires_at`) or `expired`."))
}

/// `CredentialImportIn.format`.
#[must_use]
pub fn import_format() -> ObjectBuilder {
    string_enum(["yaml", "csv"], false)
}

/// `ImportRowOut.outcome`.
#[must_use]
pub fn import_outcome() -> ObjectBuilder {
    string_enum(["created", "updated"], false)
}

/// `TokenIn.label`.
#[must_use]
pub fn token_label() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(tollgate_engine::token::MAX_LABEL_CHARS))
        .description(Some("What the token is for."))
}

/// `DecisionIn.decision` and `ApprovalOut.decision`.
#[must_use]
pub fn decision() -> ObjectBuilder {
    string_enum(DECISIONS.map(Decision::as_str), false).description(Some("`approve` or `deny`."))
}

/// `DirectoryChangeOut.kind`.
#[must_use]
pub fn directory_kind() -> ObjectBuilder {
    string_enum(["principal", "group", "integration"], false)
}

/// `DirectoryChangeOut.change`.
#[must_use]
pub fn directory_change() -> ObjectBuilder {
    string_enum(["added", "changed", "removed"], false)
}

/// `TaskCompleteIn.outcome`.
#[must_use]
pub fn task_outcome() -> ObjectBuilder {
    string_enum(TASK_OUTCOMES.map(|(name, _)| name), true)
        .description(Some("How the task ended; absent or null means `done`."))
        .default(Some(json!("done")))
}

/// `RequestIn.integration`.
#[must_use]
pub fn integration_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_INTEGRATION_CHARS))
        .description(Some("Integration name (`GET /v1/integrations`)."))
}

/// `RequestIn.scopes`.
#[must_use]
pub fn scopes() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_SCOPE_CHARS)))
        .max_items(Some(MAX_SCOPES))
        .description(Some(
            "Scopes of the integration. For renew, rotate and revoke: exactly the grant's, or none \
             (meaning the grant's); any other set is refused (422 `scope_mismatch`).",
        ))
}

/// `CredentialIn.scopes`: words (no whitespace), at most 100.
#[must_use]
pub fn credential_scopes() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).pattern(Some(r"^\S+$")))
        .max_items(Some(tollgate_engine::credential::MAX_SCOPES))
        .description(Some("Scopes the credential carries: each one word (no whitespace), at most 100."))
}

/// `RequestIn.justification`.
#[must_use]
pub fn justification() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_JUSTIFICATION_CHARS))
        .pattern(Some(policy::free_text_pattern()))
        .description(Some(
            "Why (a workflow may require one). No control characters other than tab and line breaks, \
             no bidirectional-override or invisible (zero-width) characters.",
        ))
        .default(Some(json!("")))
}

/// A decision's or a task's comment.
#[must_use]
pub fn comment() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_COMMENT_CHARS))
        .pattern(Some(policy::free_text_pattern()))
        .description(Some(
            "Comment; for a denial, the reason. No control characters other than tab and line breaks, \
             no bidirectional-override or invisible (zero-width) characters.",
        ))
}

fn limit(max: u64, default: u64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(max))
        .default(Some(json!(default)))
        .description(Some(format!("Page size (1–{max}, default {default}).")))
}

/// `limit` of `GET /v1/requests` and `GET /v1/grants`.
#[must_use]
pub fn page_limit() -> ObjectBuilder {
    limit(MAX_PAGE_LIMIT, DEFAULT_PAGE_LIMIT)
}

/// `limit` of `GET /v1/audit`.
#[must_use]
pub fn audit_limit() -> ObjectBuilder {
    limit(MAX_AUDIT_LIMIT, DEFAULT_AUDIT_LIMIT)
}

/// `cursor` of `GET /v1/requests` and `GET /v1/grants`: the id of the previous page's last item.
#[must_use]
pub fn id_cursor() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .description(Some("The previous page's `next_cursor` (the id of its last item)."))
}

/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Idempotency-Key` header: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters.
#[must_use]
pub fn idempotency_key() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY))
        .pattern(Some(format!("^[\\x21-\\x7E]{{1,{MAX_IDEMPOTENCY_KEY}}}$")))
        .description(Some(format!(
            "1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters. The same key with the same body returns \
             the first response again (with `Idempotent-Replayed: true`) and creates nothing; the same \
             key with another body is a 422 `idempotency_key_reused`. Keys are per caller."
        )))
        .examples([json!("3f9c2a7e-create-crm-read")])
}

/// Whether `key` is a valid `Idempotency-Key` (what [`idempotency_key`] documents).
#[must_use]
pub fn is_idempotency_key(key: &[u8]) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7E).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listed_values_are_every_value() {
        for (i, k) in KINDS.into_iter().enumerate() {
            assert_eq!(kind_index(k), i);
            assert_eq!(WorkflowKind::parse(k.as_str()), Some(k));
        }
        for (i, s) in GRANT_STATUSES.into_iter().enumerate() {
            assert_eq!(grant_status_index(s), i);
            assert_eq!(GrantStatus::parse(s.as_str()), Some(s));
        }
        for (i, d) in DECISIONS.into_iter().enumerate() {
            assert_eq!(decision_index(d), i);
        }
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(is_idempotency_key(b"a"));
        assert!(is_idempotency_key("~!".repeat(MAX_IDEMPOTENCY_KEY / 2).as_bytes()));
        for bad in ["", "a b", "a\tb", "é", "\u{7f}"] {
            assert!(!is_idempotency_key(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_idempotency_key("k".repeat(MAX_IDEMPOTENCY_KEY + 1).as_bytes()));
        let pattern = format!("^[\\x21-\\x7E]{{1,{MAX_IDEMPOTENCY_KEY}}}$");
        assert_eq!(pattern, r"^[\x21-\x7E]{1,255}$");
    }
}
