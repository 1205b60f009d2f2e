//! Query parameters every listing shares: `limit`, `cursor` and a `status` filter, each refused
//! as a 400 `invalid_query` with the reason.

use std::str::FromStr;

use axum::http::StatusCode;

use crate::dto::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::error::ApiError;

/// A 400 `invalid_query`.
pub(crate) fn invalid_query(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail)
}

/// `limit`, defaulting to [`DEFAULT_PAGE_LIMIT`], at most [`MAX_PAGE_LIMIT`].
pub(crate) fn limit(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if (1..=MAX_PAGE_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid_query(format!("limit must be between 1 and {MAX_PAGE_LIMIT}")))
    }
}

/// `cursor`, an id from the previous page.
pub(crate) fn cursor<T: FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    cursor.map(|c| c.parse::<T>().map_err(|_| invalid_query("invalid cursor"))).transpose()
}

/// A `status` filter, read by `parse`.
pub(crate) fn status<T>(status: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    status.map(|s| parse(s).ok_or_else(|| invalid_query(format!("unknown status {s:?}")))).transpose()
}
