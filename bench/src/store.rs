//! Stores: filling one, the disk it takes, a fresh PostgreSQL database.

use std::time::Instant;

use roistat_leads::own_crm::{Params, parse_lead};
use roistat_leads::relay::{LeadRelay, RelayOptions};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;

use crate::lead_query;

/// Leads a year at 10 leads a second.
const LEADS_A_YEAR: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

pub async fn fill(database_url: &str, events: usize) -> anyhow::Result<()> {
    const WRITERS: usize = 256;
    let store = roistat_leads::store::open(database_url, 1024).await?;
    let relay = LeadRelay::new(store.clone(), RelayOptions::default(), Default::default());
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let relay = relay.clone();
        let count = events / WRITERS + usize::from(writer < events % WRITERS);
        writers.spawn(async move {
            for n in 0..count {
                let params: Params = lead_query(&format!("fill-{writer}-{n}"))
                    .into_iter()
                    .collect();
                let lead = parse_lead("default", &params).expect("a valid lead");
                relay.receive_lead(lead).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    store.close().await;
    println!(
        "fill events={events} seconds={:.1} leads_per_s={:.0}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Bytes the store takes per lead: the whole database (tables and indexes, the
/// SQLite log checkpointed into it first), divided by the leads in it.
pub async fn disk(database_url: &str) -> anyhow::Result<()> {
    let (leads, bytes, largest) = if database_url.starts_with("sqlite:") {
        let path = database_url.trim_start_matches("sqlite://");
        let conn = rusqlite::Connection::open(path.split('?').next().unwrap_or(path))?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        let leads: i64 = conn.query_row("SELECT COUNT(*) FROM leads", [], |row| row.get(0))?;
        let bytes: i64 = conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |row| row.get(0),
        )?;
        let mut largest = conn.prepare(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6",
        )?;
        let largest = largest
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<(String, i64)>, _>>()?;
        (leads, bytes, largest)
    } else {
        let mut conn = PgConnection::connect(database_url).await?;
        let leads: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leads")
            .fetch_one(&mut conn)
            .await?;
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC",
        )
        .fetch_all(&mut conn)
        .await?;
        let bytes = sizes.iter().map(|(_, size)| size).sum();
        (leads, bytes, sizes.into_iter().take(6).collect())
    };
    anyhow::ensure!(leads > 0, "the store holds no leads");
    let per_lead = bytes as f64 / leads as f64;
    let largest: Vec<String> = largest
        .iter()
        .map(|(name, size)| format!("{name}:{:.0}", *size as f64 / leads as f64))
        .collect();
    println!(
        "disk leads={leads} bytes={bytes} bytes_per_lead={per_lead:.0} \
         year_at_10_leads_per_s_gib={:.0} per_lead_by_table={}",
        per_lead * LEADS_A_YEAR / (1024.0 * 1024.0 * 1024.0),
        largest.join(",")
    );
    Ok(())
}

pub async fn createdb(admin_url: &str, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "a plain database name"
    );
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    println!("createdb name={name}");
    Ok(())
}
