//! `limit`/`offset` pagination shared by the list endpoints.

use serde::Deserialize;
use utoipa::IntoParams;

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

/// `?limit=&offset=` of a list endpoint that takes no other filter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

/// One page of a short list read whole (an organization's integrations or
/// API keys, a user's organizations): the page, the total, and the bounds
/// used, validated as [`bounds`] does.
pub fn page<T>(items: Vec<T>, query: &PageQuery) -> Result<Page<T>, ApiError> {
    let (limit, offset) = bounds(query.limit, query.offset)?;
    let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(0);
    Ok(Page {
        items: items.into_iter().skip(skip).take(take).collect(),
        total,
        limit,
        offset,
    })
}

/// A page of a list.
#[derive(Debug)]
pub struct Page<T> {
    /// Items on this page.
    pub items: Vec<T>,
    /// Items in the whole list.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_slice_and_count() {
        let q = |limit, offset| PageQuery { limit, offset };
        let p = page((0..45).collect(), &q(None, None)).unwrap();
        assert_eq!((p.items.len(), p.total, p.limit, p.offset), (20, 45, 20, 0));
        let p = page((0..45).collect(), &q(Some(10), Some(40))).unwrap();
        assert_eq!(p.items, vec![40, 41, 42, 43, 44]);
        assert!(page((0..3).collect::<Vec<i32>>(), &q(Some(0), None)).is_err());
        assert!(page((0..3).collect::<Vec<i32>>(), &q(None, Some(-1))).is_err());
    }
}
