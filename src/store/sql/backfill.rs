//! The one-time conversion of a store written before events were stored encoded
//! (migration 0005): each event's JSON `payload` becomes its `body` in the form it
//! is sent, a lead's `source` is filled in, and leads get their search keys. SQL
//! cannot encode protobuf, so this runs in Rust when the store opens, after the
//! migrations, in batches of one transaction each; a store with nothing left to
//! convert costs one query.

use super::from_json;
use crate::codec;
use crate::domain::{EventBody, SearchKeys};
use crate::store::db::{Conn, DbError};

/// Events converted per transaction.
const BATCH: i64 = 1_000;

/// The next events still to convert: an index holds them (migration 0007), so with
/// none left this reads no more than the index's one empty page.
pub(in crate::store) const UNCONVERTED: &str = "SELECT sequence, payload FROM events \
     WHERE body IS NULL AND sequence > $1 ORDER BY sequence LIMIT $2";

/// Converts every event stored as JSON; returns how many were converted. `begin`
/// starts a write transaction on the backend. An event whose JSON cannot be read
/// is left as it is (and logged): reading it is then an error an operator sees.
pub(in crate::store) async fn convert_stored<C: Conn>(
    conn: &mut C,
    begin: &str,
) -> Result<u64, DbError> {
    let (mut after, mut converted) = (0_i64, 0_u64);
    loop {
        conn.execute(begin, &[]).await?;
        let batch = convert_batch(conn, after).await;
        let done = match batch {
            Ok(done) => conn.execute("COMMIT", &[]).await.map(|_| done),
            Err(error) => Err(error),
        };
        let (last, count) = match done {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(converted),
            Err(error) => {
                let _ = conn.execute("ROLLBACK", &[]).await;
                return Err(error);
            }
        };
        after = last;
        converted += count;
        tracing::info!(converted, "converting stored events to their protobuf form");
    }
}

/// Converts the next batch of events after the sequence `after`; the last
/// sequence it saw and how many it converted, `None` when there were none.
async fn convert_batch<C: Conn>(conn: &mut C, after: i64) -> Result<Option<(i64, u64)>, DbError> {
    let rows = conn
        .query(UNCONVERTED, &[after.into(), BATCH.into()], |row| {
            Ok((row.int(0)?, row.text(1)?.to_owned()))
        })
        .await?;
    let Some(&(last, _)) = rows.last() else {
        return Ok(None);
    };
    let mut converted = 0;
    for (sequence, payload) in rows {
        let body: EventBody = match from_json(&payload) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(sequence, %error, "a stored event cannot be read; left as it is");
                continue;
            }
        };
        let encoded = codec::encode_body(&body);
        let source = body.source().map(|source| source.as_str());
        conn.execute(
            "UPDATE events SET body = $2, source = $3, payload = '' WHERE sequence = $1",
            &[sequence.into(), encoded.as_slice().into(), source.into()],
        )
        .await?;
        if let EventBody::Lead(lead) = &body {
            let keys = SearchKeys::of(&lead.name, &lead.phone, &lead.email);
            conn.execute(
                "UPDATE leads SET name_folded = $3, phone_digits = $4, email_folded = $5 \
                 WHERE integration = $1 AND lead_id = $2",
                &[
                    (&lead.integration).into(),
                    (&lead.lead_id).into(),
                    super::column_text(&keys.name).as_ref().into(),
                    (&keys.phone).into(),
                    super::column_text(&keys.email).as_ref().into(),
                ],
            )
            .await?;
        }
        converted += 1;
    }
    Ok(Some((last, converted)))
}
