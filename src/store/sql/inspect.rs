//! What an operator looks at: leads searched by their keys, the events about a
//! lead, how its order looks in the export, leads per minute, the store's size.

use time::OffsetDateTime;

use super::crm::{ORDER_COLUMNS, order_from_row};
use super::reads::{EVENT, EVENT_WIDTH, EventReader};
use super::{to_db_sequence, to_micros};
use crate::domain::{EncodedEvent, FoundLead, LeadKey, LeadSearch, LeadSource, Order, SearchField};
use crate::store::db::{Arg, Conn, DbError, query_opt, scalar};

/// What a search reads of each lead: its event, the order and deal ids, the name key.
fn found_columns() -> String {
    format!("{EVENT}, l.order_id, l.deal_id, l.name_folded")
}

/// Above every name that starts with a prefix, in byte order.
const PAST_PREFIX: char = '\u{10FFFF}';

/// One query of a search: the condition on `leads l` (the term is `$1`, the cursor's
/// sequence `$2`; a name search's cursor name `$3` and upper bound `$4`), then the
/// integrations, and the order the results come in.
fn search_query(search: &LeadSearch, condition: &str) -> String {
    let by_name = search.field == SearchField::Name;
    let first_integration = if by_name { 5 } else { 3 };
    let integrations: Vec<String> = (0..search.integrations.len())
        .map(|n| format!("${}", n + first_integration))
        .collect();
    let (after, order) = if by_name {
        (
            "($2 = -1 OR l.name_folded > $3 OR (l.name_folded = $3 AND l.sequence < $2))",
            "l.name_folded, l.sequence DESC",
        )
    } else {
        ("($2 = -1 OR l.sequence < $2)", "l.sequence DESC")
    };
    // By a lead's or an order's id, the integration leads the index; by the other
    // keys, the key's own index must be the one used: the integration then only
    // filters (an expression no index serves).
    let integration = match search.field {
        SearchField::LeadId | SearchField::OrderId => "l.integration",
        _ => "(l.integration || '')",
    };
    format!(
        "SELECT {} FROM leads l JOIN events e ON e.sequence = l.sequence \
         WHERE {integration} IN ({}) AND {condition} AND {after} \
         ORDER BY {order} LIMIT {}",
        found_columns(),
        integrations.join(", "),
        search.limit
    )
}

/// Leads a search finds, a page of them.
pub(super) async fn search_leads<C: Conn>(
    conn: &mut C,
    search: &LeadSearch,
) -> Result<Vec<FoundLead>, DbError> {
    let upper = format!("{}{PAST_PREFIX}", search.term);
    let (cursor_sequence, cursor_name) = match &search.after {
        Some(cursor) => (to_db_sequence(cursor.sequence), cursor.name.as_str()),
        None => (-1, ""),
    };
    // A partial index serves a query only when the query says what the index's
    // condition says.
    let conditions: &[&str] = match search.field {
        SearchField::LeadId => &["l.lead_id = $1"],
        SearchField::OrderId => &[
            "l.order_id = $1 AND l.order_id <> l.lead_id",
            "l.deal_id = $1 AND l.deal_id IS NOT NULL",
            "l.lead_id = $1",
        ],
        SearchField::Phone => &["l.phone_digits = $1 AND l.phone_digits <> ''"],
        SearchField::Email => &["l.email_folded = $1 AND l.email_folded <> ''"],
        SearchField::Name => {
            &["l.name_folded >= $1 AND l.name_folded < $4 AND l.name_folded <> ''"]
        }
        SearchField::Visit => &["l.visit = $1 AND l.visit <> ''"],
    };
    let mut args: Vec<Arg> = vec![search.term.as_str().into(), cursor_sequence.into()];
    if search.field == SearchField::Name {
        args.extend([Arg::from(cursor_name), Arg::from(upper.as_str())]);
    }
    args.extend(search.integrations.iter().map(Arg::from));
    let mut found: Vec<FoundLead> = vec![];
    for condition in conditions {
        let mut reader = EventReader::default();
        let sql = search_query(search, condition);
        let rows = conn
            .query(&sql, &args, |row| {
                Ok(FoundLead {
                    event: reader.read(row)?,
                    order_id: row.opt_text(EVENT_WIDTH)?.map(str::to_owned),
                    deal_id: row.opt_text(EVENT_WIDTH + 1)?.map(str::to_owned),
                    name_key: row.text(EVENT_WIDTH + 2)?.to_owned(),
                })
            })
            .await?;
        for lead in rows {
            if !found
                .iter()
                .any(|seen| seen.event.sequence == lead.event.sequence)
            {
                found.push(lead);
            }
        }
    }
    if conditions.len() > 1 {
        found.sort_by_key(|lead| std::cmp::Reverse(lead.event.sequence));
        found.truncate(search.limit as usize);
    }
    Ok(found)
}

/// The messages, tasks and calls filed under a lead, newest first, at most `limit`.
pub(super) async fn events_about<C: Conn>(
    conn: &mut C,
    key: &LeadKey,
    limit: u32,
) -> Result<Vec<EncodedEvent>, DbError> {
    let mut reader = EventReader::default();
    conn.query(
        &format!(
            "SELECT {EVENT} FROM events e \
             WHERE e.integration = $1 AND e.lead_ref = $2 AND e.kind <> 'lead' \
             ORDER BY e.sequence DESC LIMIT $3"
        ),
        &[
            (&key.integration).into(),
            (&key.lead_id).into(),
            i64::from(limit).into(),
        ],
        |row| reader.read(row),
    )
    .await
}

/// A lead's order as Roistat's export lists it now; `None` while its id is not fixed.
pub(super) async fn export_order<C: Conn>(
    conn: &mut C,
    key: &LeadKey,
) -> Result<Option<Order>, DbError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM leads l \
         LEFT JOIN deal_versions v ON v.integration = l.integration AND v.lead_id = l.lead_id \
           AND v.version = (SELECT MAX(version) FROM deal_versions \
                            WHERE integration = $1 AND lead_id = $2) \
         WHERE l.integration = $1 AND l.lead_id = $2 AND l.order_version IS NOT NULL"
    );
    let args = [(&key.integration).into(), (&key.lead_id).into()];
    query_opt(conn, &sql, &args, |row| {
        order_from_row(&key.integration, row)
    })
    .await
}

/// The first sequence received at or after `since`, found by halving the log: events
/// are stored in the order they arrive, so their receive times only grow (to within
/// the clocks of replicas). `None` when every event is older.
async fn first_sequence_since<C: Conn>(
    conn: &mut C,
    since: OffsetDateTime,
) -> Result<Option<i64>, DbError> {
    let since = to_micros(since);
    let latest = scalar(conn, "SELECT last_sequence FROM event_counter", &[]).await?;
    let (mut low, mut high) = (1, latest + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let time = query_opt(
            conn,
            "SELECT receive_time FROM events WHERE sequence >= $1 ORDER BY sequence LIMIT 1",
            &[middle.into()],
            |row| row.int(0),
        )
        .await?;
        match time {
            Some(time) if time < since => low = middle + 1,
            _ => high = middle,
        }
    }
    Ok((low <= latest).then_some(low))
}

/// Leads per minute (Unix minutes) and source since `since`, in `integration` (all
/// when `None`).
pub(super) async fn lead_minutes<C: Conn>(
    conn: &mut C,
    since: OffsetDateTime,
    integration: Option<&str>,
) -> Result<Vec<(i64, Option<LeadSource>, u64)>, DbError> {
    let Some(first) = first_sequence_since(conn, since).await? else {
        return Ok(vec![]);
    };
    conn.query(
        "SELECT e.receive_time / 60000000 AS minute, e.source, COUNT(*) FROM events e \
         WHERE e.sequence >= $1 AND e.kind = 'lead' AND e.receive_time >= $2 \
           AND ($3 = '' OR e.integration = $3) \
         GROUP BY 1, 2 ORDER BY 1",
        &[
            first.into(),
            to_micros(since).into(),
            integration.unwrap_or_default().into(),
        ],
        |row| {
            Ok((
                row.int(0)?,
                row.opt_bytes(1)?.and_then(LeadSource::from_bytes),
                row.int(2)? as u64,
            ))
        },
    )
    .await
}

/// The bytes the database takes.
pub(super) async fn store_bytes<C: Conn>(conn: &mut C) -> Result<u64, DbError> {
    Ok(scalar(conn, C::SIZE_QUERY, &[]).await?.max(0) as u64)
}
