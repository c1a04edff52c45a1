//! `limit`/`offset` pagination shared by the list endpoints.

use super::error::{ApiError, FieldErrors};

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page size.
pub const MAX_LIMIT: i64 = 100;

/// Validate `limit` (1–100, default 20) and `offset` (≥ 0, default 0).
pub fn bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or(0);
    let mut errors = FieldErrors::new();
    errors.check(
        (1..=MAX_LIMIT).contains(&limit),
        "limit",
        "must be between 1 and 100",
    );
    errors.check(offset >= 0, "offset", "must not be negative");
    errors.finish()?;
    Ok((limit, offset))
}
