//! The log of requests refused after they passed the token check.

use super::{column_text, from_micros, to_db_sequence, to_micros};
use crate::domain::{DEFAULT_INTEGRATION, RejectedFilter, RejectedRequest};
use crate::store::db::{Conn, DbError, Row, scalar};

/// Stores a refused request and forgets its integration's oldest beyond `keep`;
/// returns its id.
pub(super) async fn record<C: Conn>(
    conn: &mut C,
    request: &RejectedRequest,
    keep: u32,
) -> Result<u64, DbError> {
    let (source, action) = (column_text(&request.source), column_text(&request.action));
    let reason = column_text(&request.reason);
    let id = scalar(
        conn,
        "INSERT INTO rejected_requests \
           (integration, time, source, action, reason, status, query, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        &[
            (&request.integration).into(),
            to_micros(request.time).into(),
            source.as_ref().into(),
            action.as_ref().into(),
            reason.as_ref().into(),
            i64::from(request.status).into(),
            request.query.as_slice().into(),
            request.body.as_slice().into(),
        ],
    )
    .await?;
    conn.execute(
        "DELETE FROM rejected_requests WHERE integration = $1 AND id < ( \
           SELECT id FROM rejected_requests WHERE integration = $1 \
           ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[
            (&request.integration).into(),
            i64::from(keep.saturating_sub(1)).into(),
        ],
    )
    .await?;
    Ok(id as u64)
}

fn request_from_row(row: &dyn Row) -> Result<RejectedRequest, DbError> {
    let integration = row.text(1)?.to_owned();
    Ok(RejectedRequest {
        id: row.int(0)? as u64,
        path: if integration == DEFAULT_INTEGRATION {
            "/webhook".to_owned()
        } else {
            format!("/webhook/{integration}")
        },
        integration,
        time: from_micros(row.int(2)?),
        source: row.text(3)?.to_owned(),
        authenticated: true,
        action: row.text(4)?.to_owned(),
        reason: row.text(5)?.to_owned(),
        status: u16::try_from(row.int(6)?).unwrap_or_default(),
        query: row.bytes(7)?.to_vec(),
        body: row.bytes(8)?.to_vec(),
    })
}

/// Stored refused requests, newest first, with an id below `before` (all when
/// `None`), at most `limit`.
pub(super) async fn list<C: Conn>(
    conn: &mut C,
    filter: &RejectedFilter,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<RejectedRequest>, DbError> {
    let integration = filter.integration.as_deref().unwrap_or_default();
    let before = before.map_or(i64::MAX, to_db_sequence);
    conn.query(
        "SELECT id, integration, time, source, action, reason, status, query, body \
         FROM rejected_requests WHERE id < $1 AND ($2 = '' OR integration = $2) \
         ORDER BY id DESC LIMIT $3",
        &[before.into(), integration.into(), i64::from(limit).into()],
        request_from_row,
    )
    .await
}
