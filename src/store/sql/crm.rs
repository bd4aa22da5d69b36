//! Deals, the scheme, clients and the export walks Roistat pages through.
//!
//! Deal details and clients are kept as versions, numbered from one counter in
//! commit order: an export walk reads the versions as of the number it started at,
//! so its pages stay consistent while the CRM goes on reporting.

use time::OffsetDateTime;

use super::writes::Tx;
use super::{from_json, from_micros, now_micros, to_db_sequence, to_json, to_micros};
use crate::codec;
use crate::domain::{Client, ClientRecord, Deal, DealReport, LeadKey, Order, OrderIdMode, Scheme};
use crate::store::db::{Arg, Conn, DbError, Row, query_opt, scalar};
use crate::store::{ExportKind, ExportWindow, StoreError};

/// The lead's event sequence and deal, if the lead is stored.
pub(super) async fn load_deal<C: Conn>(
    conn: &mut C,
    key: &LeadKey,
) -> Result<Option<(u64, Deal)>, DbError> {
    query_opt(
        conn,
        "SELECT l.sequence, l.deal_id, l.order_id, l.deal_update_time, \
           (SELECT v.payload FROM deal_versions v \
            WHERE v.integration = l.integration AND v.lead_id = l.lead_id \
            ORDER BY v.version DESC LIMIT 1) AS details \
         FROM leads l WHERE l.integration = $1 AND l.lead_id = $2",
        &[(&key.integration).into(), (&key.lead_id).into()],
        |row| {
            let sequence = row.int(0)? as u64;
            Ok((sequence, deal_from_row(key, row, 1)?))
        },
    )
    .await
}

/// A deal from columns `deal_id, order_id, update_time, details` starting at `first`.
fn deal_from_row(key: &LeadKey, row: &dyn Row, first: usize) -> Result<Deal, DbError> {
    Ok(Deal {
        key: key.clone(),
        deal_id: row.opt_text(first)?.map(str::to_owned),
        answered_order_id: row.opt_text(first + 1)?.map(str::to_owned),
        update_time: from_micros(row.int(first + 2)?),
        details: match row.opt_text(first + 3)? {
            Some(details) => from_json(details)?,
            None => Default::default(),
        },
    })
}

/// Fixes the order id of a deal that has none yet, as `mode` says; an order fixed
/// now enters the export.
pub(super) async fn assign<C: Conn>(
    conn: &mut C,
    deal: Deal,
    mode: OrderIdMode,
    tx: &mut Tx<'_>,
) -> Result<Deal, DbError> {
    if deal.answered_order_id.is_some() {
        return Ok(deal);
    }
    // One statement, on the row as it is now: the deal id reported last wins.
    let version = tx.counters.versions.peek();
    let updated = query_opt(
        conn,
        "UPDATE leads SET order_id = COALESCE(deal_id, $3), \
           order_version = COALESCE(order_version, $4), order_time = COALESCE(order_time, $5) \
         WHERE integration = $1 AND lead_id = $2 AND order_id IS NULL \
           AND COALESCE(deal_id, $3) IS NOT NULL \
         RETURNING deal_id, order_id, order_version",
        &[
            (&deal.key.integration).into(),
            (&deal.key.lead_id).into(),
            mode.without_deal_id(&deal.key.lead_id).into(),
            version.into(),
            now_micros().into(),
        ],
        |row| {
            Ok((
                row.opt_text(0)?.map(str::to_owned),
                row.opt_text(1)?.map(str::to_owned),
                row.opt_int(2)?,
            ))
        },
    )
    .await?;
    match updated {
        Some((deal_id, order_id, order_version)) => {
            if order_version == Some(version) {
                tx.counters.versions.take();
            }
            Ok(Deal {
                deal_id,
                answered_order_id: order_id,
                ..deal
            })
        }
        None => Ok(load_deal(conn, &deal.key)
            .await?
            .map_or(deal, |(_, current)| current)),
    }
}

/// Records a deal report: a new deal id (unless Roistat was answered another one;
/// the first one reported fixes the order id in `crm` mode) and a new version of the
/// details.
pub(super) async fn report_deal<C: Conn>(
    conn: &mut C,
    key: &LeadKey,
    report: &DealReport,
    tx: &mut Tx<'_>,
) -> Result<Result<Deal, StoreError>, DbError> {
    let Some((_, mut deal)) = load_deal(conn, key).await? else {
        return Ok(Err(StoreError::NotFound));
    };
    let now = now_micros();
    let new_deal_id = report
        .deal_id
        .as_deref()
        .filter(|id| deal.deal_id.as_deref() != Some(*id));
    if let Some(deal_id) = new_deal_id {
        // Conditional, so that a concurrent answer on another replica is respected:
        // a deal id Roistat was answered as order_id never changes.
        let version = tx.counters.versions.peek();
        let updated = query_opt(
            conn,
            "UPDATE leads SET deal_id = $3, deal_update_time = $4, \
               order_version = COALESCE(order_version, $5), \
               order_time = COALESCE(order_time, $4) \
             WHERE integration = $1 AND lead_id = $2 \
               AND (order_id IS NULL OR deal_id IS NULL OR order_id <> deal_id) \
             RETURNING order_version",
            &[
                (&key.integration).into(),
                (&key.lead_id).into(),
                deal_id.into(),
                now.into(),
                version.into(),
            ],
            |row| row.opt_int(0),
        )
        .await?;
        if updated == Some(Some(version)) {
            tx.counters.versions.take();
        }
        if updated.is_none() {
            return Ok(match load_deal(conn, key).await? {
                None => Err(StoreError::NotFound),
                Some((_, current)) if current.deal_id.as_deref() == Some(deal_id) => Ok(current),
                Some((_, current)) => Err(StoreError::Conflict(format!(
                    "deal id {:?} was already answered to Roistat as order_id and cannot change",
                    current.deal_id.unwrap_or_default()
                ))),
            });
        }
        deal.deal_id = Some(deal_id.to_owned());
        deal.update_time = from_micros(now);
        tx.committed.deal_reports.push(key.clone());
    }
    if !report.update.is_empty() {
        let details = report.update.apply(std::mem::take(&mut deal.details));
        let version = tx.counters.versions.take();
        conn.execute(
            "INSERT INTO deal_versions (integration, lead_id, version, update_time, payload) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                (&key.integration).into(),
                (&key.lead_id).into(),
                version.into(),
                now.into(),
                (&to_json(&details)?).into(),
            ],
        )
        .await?;
        conn.execute(
            "UPDATE leads SET deal_update_time = $3 WHERE integration = $1 AND lead_id = $2",
            &[(&key.integration).into(), (&key.lead_id).into(), now.into()],
        )
        .await?;
        if let Some(client_id) = &details.client_id {
            // The CRM knows this person: its client is exported instead.
            conn.execute(
                "UPDATE persons SET client_id = $3 WHERE person_id = \
                 (SELECT person_id FROM leads WHERE integration = $1 AND lead_id = $2)",
                &[
                    (&key.integration).into(),
                    (&key.lead_id).into(),
                    client_id.as_str().into(),
                ],
            )
            .await?;
        }
        deal.details = details;
        deal.update_time = from_micros(now);
    }
    Ok(Ok(deal))
}

pub(super) async fn put_scheme<C: Conn>(
    conn: &mut C,
    integration: &str,
    scheme: &Scheme,
) -> Result<OffsetDateTime, DbError> {
    let now = now_micros();
    conn.execute(
        "INSERT INTO schemes (integration, payload, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT (integration) DO UPDATE SET \
           payload = excluded.payload, update_time = excluded.update_time",
        &[integration.into(), (&to_json(scheme)?).into(), now.into()],
    )
    .await?;
    Ok(from_micros(now))
}

pub(super) async fn get_scheme<C: Conn>(
    conn: &mut C,
    integration: &str,
) -> Result<Option<(Scheme, OffsetDateTime)>, DbError> {
    query_opt(
        conn,
        "SELECT payload, update_time FROM schemes WHERE integration = $1",
        &[integration.into()],
        |row| Ok((from_json(row.text(0)?)?, from_micros(row.int(1)?))),
    )
    .await
}

pub(super) async fn put_client<C: Conn>(
    conn: &mut C,
    integration: &str,
    client: &Client,
    tx: &mut Tx<'_>,
) -> Result<OffsetDateTime, DbError> {
    let now = now_micros();
    let version = tx.counters.versions.take();
    conn.execute(
        "INSERT INTO client_versions (integration, client_id, version, update_time, payload) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            integration.into(),
            (&client.id).into(),
            version.into(),
            now.into(),
            (&to_json(client)?).into(),
        ],
    )
    .await?;
    Ok(from_micros(now))
}

/// The snapshot of the walk under way for this query, if there is one.
pub(super) async fn walk_snapshot<C: Conn>(
    conn: &mut C,
    integration: &str,
    kind: ExportKind,
    since: OffsetDateTime,
) -> Result<Option<u64>, DbError> {
    query_opt(
        conn,
        "SELECT snapshot FROM export_walks WHERE integration = $1 AND kind = $2 AND since = $3",
        &[
            integration.into(),
            kind.name().into(),
            to_micros(since).into(),
        ],
        |row| row.int(0).map(|snapshot| snapshot as u64),
    )
    .await
}

/// Starts a walk at the `latest` version, unless one is under way and `restart` is
/// not asked for.
pub(super) async fn start_walk<C: Conn>(
    conn: &mut C,
    integration: &str,
    kind: ExportKind,
    since: OffsetDateTime,
    restart: bool,
    latest: i64,
) -> Result<u64, DbError> {
    if !restart && let Some(snapshot) = walk_snapshot(conn, integration, kind, since).await? {
        return Ok(snapshot);
    }
    conn.execute(
        "INSERT INTO export_walks (integration, kind, since, snapshot) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (integration, kind, since) DO UPDATE SET snapshot = excluded.snapshot",
        &[
            integration.into(),
            kind.name().into(),
            to_micros(since).into(),
            latest.into(),
        ],
    )
    .await?;
    Ok(latest as u64)
}

/// Every order whose id was fixed by the snapshot, with the latest version of its
/// deal as of the snapshot, if it changed at or after `since` (its id was fixed, or
/// its deal reported, then); the same set for the count and every page.
const ORDERS_WALK: &str = "WITH latest AS ( \
       SELECT lead_id, MAX(version) AS version FROM deal_versions \
       WHERE integration = $1 AND version <= $2 GROUP BY lead_id) \
     SELECT l.lead_id, l.deal_id, l.order_id, \
       COALESCE(v.update_time, l.order_time) AS update_time, v.payload, \
       l.receive_time, l.visit, l.title, l.create_time, l.order_time, \
       (SELECT e.body FROM events e WHERE e.sequence = l.sequence) AS lead_body \
     FROM leads l \
     LEFT JOIN latest ON latest.lead_id = l.lead_id \
     LEFT JOIN deal_versions v ON v.integration = $1 AND v.lead_id = l.lead_id \
       AND v.version = latest.version \
     WHERE l.integration = $1 AND l.order_version <= $2 \
       AND COALESCE(v.update_time, l.order_time) >= $3";

pub(super) async fn export_orders<C: Conn>(
    conn: &mut C,
    integration: &str,
    window: ExportWindow,
) -> Result<(u64, Vec<Order>), DbError> {
    let order = "update_time, l.lead_id";
    export_walk(conn, ORDERS_WALK, order, integration, window, |row| {
        order_from_row(integration, row)
    })
    .await
}

/// The columns of an order: lead id, deal id, order id, update time, deal details,
/// receive time, visit, title, create time, when its id was fixed, the lead's body
/// (for what only it holds: the lead's own manager).
pub(super) const ORDER_COLUMNS: &str = "l.lead_id, l.deal_id, l.order_id, \
       COALESCE(v.update_time, l.order_time) AS update_time, v.payload, \
       l.receive_time, l.visit, l.title, l.create_time, l.order_time, \
       (SELECT e.body FROM events e WHERE e.sequence = l.sequence) AS lead_body";

/// An order from the columns of [`ORDER_COLUMNS`].
pub(super) fn order_from_row(integration: &str, row: &dyn Row) -> Result<Order, DbError> {
    let key = LeadKey::new(integration, row.text(0)?);
    let deal = deal_from_row(&key, row, 1)?;
    let order_id = deal.answered_order_id.as_ref().or(deal.deal_id.as_ref());
    Ok(Order {
        order_id: order_id.unwrap_or(&key.lead_id).clone(),
        deal,
        lead_receive_time: from_micros(row.int(5)?),
        visit: row.text(6)?.to_owned(),
        title: row.text(7)?.to_owned(),
        lead_create_time: row.opt_int(8)?.map(from_micros),
        fixed_time: row.opt_int(9)?.map(from_micros),
        lead_manager_id: row
            .opt_bytes(10)?
            .map(codec::lead_manager_id)
            .unwrap_or_default(),
    })
}

/// The clients the CRM reported, then (ranked after them) the persons it has no client for (by their
/// first seen time: `person-<id>`, the phone and e-mail of their latest lead that
/// has one, the name of their latest lead).
const CLIENTS_WALK: &str = "WITH latest AS ( \
       SELECT client_id, MAX(version) AS version FROM client_versions \
       WHERE integration = $1 AND version <= $2 GROUP BY client_id) \
     SELECT v.client_id AS client_id, v.update_time AS update_time, v.payload AS payload, \
       NULL AS phone, NULL AS email, NULL AS body, 0 AS rank FROM latest \
     JOIN client_versions v ON v.integration = $1 AND v.client_id = latest.client_id \
       AND v.version = latest.version \
     WHERE v.update_time >= $3 \
     UNION ALL \
     SELECT 'person-' || p.person_id, p.first_seen, NULL, \
       (SELECT l.phone_e164 FROM leads l WHERE l.person_id = p.person_id \
          AND l.phone_e164 <> '' ORDER BY l.sequence DESC LIMIT 1), \
       (SELECT l.email_folded FROM leads l WHERE l.person_id = p.person_id \
          AND l.email_folded <> '' ORDER BY l.sequence DESC LIMIT 1), \
       (SELECT e.body FROM leads l JOIN events e ON e.sequence = l.sequence \
          WHERE l.person_id = p.person_id ORDER BY l.sequence DESC LIMIT 1), 1 \
     FROM persons p WHERE p.integration = $1 AND p.merged_into IS NULL \
       AND p.client_id IS NULL AND p.first_seen >= $3";

pub(super) async fn export_clients<C: Conn>(
    conn: &mut C,
    integration: &str,
    window: ExportWindow,
) -> Result<(u64, Vec<ClientRecord>), DbError> {
    let order = "rank, update_time, client_id";
    export_walk(conn, CLIENTS_WALK, order, integration, window, |row| {
        let client = match row.opt_text(2)? {
            Some(payload) => from_json::<Client>(payload)?,
            None => Client {
                id: row.text(0)?.to_owned(),
                name: row.opt_bytes(5)?.map(codec::lead_name).unwrap_or_default(),
                phone: row.opt_text(3)?.unwrap_or_default().to_owned(),
                email: row.opt_text(4)?.unwrap_or_default().to_owned(),
                ..Client::default()
            },
        };
        Ok(ClientRecord {
            client,
            update_time: from_micros(row.int(1)?),
        })
    })
    .await
}

/// Runs an export walk's query (`walk` binds $1 integration, $2 snapshot, $3
/// since): the whole walk's count, and one page of it in `order`.
async fn export_walk<C, T, F>(
    conn: &mut C,
    walk: &str,
    order: &str,
    integration: &str,
    window: ExportWindow,
    map: F,
) -> Result<(u64, Vec<T>), DbError>
where
    C: Conn,
    T: Send,
    F: FnMut(&dyn Row) -> Result<T, DbError> + Send,
{
    let snapshot = to_db_sequence(window.snapshot);
    let since = to_micros(window.since);
    let args = [Arg::from(integration), snapshot.into(), since.into()];
    let count = format!("SELECT COUNT(*) FROM ({walk}) walk");
    let total = scalar(conn, &count, &args).await?;
    let page = format!("{walk} ORDER BY {order} LIMIT $4 OFFSET $5");
    let limit = to_db_sequence(window.limit);
    let offset = to_db_sequence(window.offset);
    let args = [args[0], args[1], args[2], limit.into(), offset.into()];
    let records = conn.query(&page, &args, map).await?;
    Ok((total as u64, records))
}
