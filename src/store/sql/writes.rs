//! The writer's transactions: a batch of writes applied in one transaction, with
//! the counters it hands sequences and versions from.

use super::person_cache::{Learnt, PersonCache};
use super::{WriteSide, consumers, crm, events, leads, person_store, rejected};
use crate::store::StoreError;
use crate::store::db::{Conn, DbError, query_one};
use crate::store::writer::{Committed, Transactor, Write};

/// Numbers a write transaction hands out from a one-row counter table: read once
/// when the transaction first needs one, written back before it commits.
#[derive(Debug, Default)]
pub(super) struct Counter {
    /// The last number allocated.
    last: i64,
    /// Whether any was allocated, so the counter must be written back.
    allocated: bool,
}

impl Counter {
    fn starting_after(last: i64) -> Self {
        Self {
            last,
            allocated: false,
        }
    }

    /// The number the next allocation would get.
    pub fn peek(&self) -> i64 {
        self.last + 1
    }

    /// Takes the next number.
    pub fn take(&mut self) -> i64 {
        self.last += 1;
        self.allocated = true;
        self.last
    }

    /// The last number allocated (or read).
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The counter's new value, if numbers were allocated.
    fn written_back(&self) -> Option<i64> {
        self.allocated.then_some(self.last)
    }
}

/// The counters of one write transaction.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Event sequences (`event_counter.last_sequence`).
    pub sequences: Counter,
    /// Versions of deals, clients and fixed order ids (`event_counter.last_version`):
    /// an export walk reads what was committed up to a version.
    pub versions: Counter,
}

/// What the writes of one transaction share.
pub(super) struct Tx<'a> {
    pub counters: &'a mut Counters,
    pub committed: &'a mut Committed,
    /// What the writer knows of persons, when it is the store's only writer.
    pub persons: Option<&'a PersonCache>,
    /// What the cache learns if the transaction commits.
    pub learnt: &'a mut Learnt,
}

/// The writer's transactor for any backend.
pub(in crate::store) struct SqlTransactor<W> {
    side: W,
    /// Kept by a store's only writer.
    persons: Option<PersonCache>,
}

impl<W: WriteSide> SqlTransactor<W> {
    pub fn new(side: W) -> Self {
        let persons = W::SOLE_WRITER.then(PersonCache::default);
        Self { side, persons }
    }
}

impl<W: WriteSide> Transactor for SqlTransactor<W> {
    const BACKEND: &'static str = W::NAME;
    fn apply_batch(
        &mut self,
        batch: &mut [Write],
    ) -> impl Future<Output = Result<Committed, DbError>> + Send {
        apply_batch(&mut self.side, self.persons.as_mut(), batch)
    }

    fn announce(&mut self, committed: Committed) {
        self.side.announce(committed);
    }

    fn upkeep(&mut self, idle: bool) {
        self.side.upkeep(idle);
    }
}

/// Applies a batch in one transaction on the writer's connection and commits it,
/// setting each write's reply; `persons` learns what committed.
pub(super) async fn apply_batch<W: WriteSide>(
    side: &mut W,
    mut persons: Option<&mut PersonCache>,
    batch: &mut [Write],
) -> Result<Committed, DbError> {
    let conn = side.connection().await?;
    if let Some(persons) = persons.as_mut()
        && !persons.loaded()
    {
        super::person_keys::load(conn, persons).await;
    }
    let mut learnt = Learnt::default();
    let result = transaction::<W>(conn, persons.as_deref(), &mut learnt, batch).await;
    match &result {
        Ok(_) => {
            if let Some(persons) = persons.as_mut() {
                persons.learn(learnt);
            }
        }
        // The connection may be what failed: the next batch connects afresh.
        Err(DbError::Unavailable(_)) => side.discard(),
        Err(_) => {}
    }
    result
}

async fn transaction<W: WriteSide>(
    conn: &mut W::Conn,
    persons: Option<&PersonCache>,
    learnt: &mut Learnt,
    batch: &mut [Write],
) -> Result<Committed, DbError> {
    conn.execute(W::BEGIN, &[]).await?;
    let applied = match writes::<W>(conn, persons, learnt, batch).await {
        Ok(applied) => conn.execute("COMMIT", &[]).await.map(|_| applied),
        Err(error) => Err(error),
    };
    if applied.is_err() {
        // Nothing of the batch stays; the error says why.
        let _ = conn.execute("ROLLBACK", &[]).await;
    }
    applied
}

async fn writes<W: WriteSide>(
    conn: &mut W::Conn,
    persons: Option<&PersonCache>,
    learnt: &mut Learnt,
    batch: &mut [Write],
) -> Result<Committed, DbError> {
    let locked = W::begin_writes(conn, batch).await?;
    let mut counters = Counters::default();
    let numbered = batch
        .iter()
        .any(|write| write.appends_events() || write.uses_versions());
    let last = match locked {
        Some(last) => Some(last),
        None if numbered => Some(read_counters(conn).await?),
        None => None,
    };
    if let Some((last_sequence, last_version)) = last {
        counters.sequences = Counter::starting_after(last_sequence);
        counters.versions = Counter::starting_after(last_version);
    }
    let mut committed = Committed::default();
    let mut tx = Tx {
        counters: &mut counters,
        committed: &mut committed,
        persons,
        learnt,
    };
    let mut rest = batch;
    while !rest.is_empty() {
        // Consecutive new leads, the bulk of any busy batch, go in together.
        let run = leads::leading_leads(rest);
        let (first, after) = rest.split_at_mut(run.max(1));
        if run >= 1 {
            leads::insert_leads(conn, first, &mut tx).await?;
        } else {
            apply(conn, &mut first[0], &mut tx).await?;
        }
        rest = after;
    }
    let allocated =
        counters.sequences.written_back().is_some() || counters.versions.written_back().is_some();
    if allocated {
        let sql = "UPDATE event_counter SET last_sequence = $1, last_version = $2";
        let args = [
            counters.sequences.last().into(),
            counters.versions.last().into(),
        ];
        conn.execute(sql, &args).await?;
    }
    W::before_commit(conn, &committed).await?;
    Ok(committed)
}

/// The last event sequence and the last version handed out, from their row.
async fn read_counters<C: Conn>(conn: &mut C) -> Result<(i64, i64), DbError> {
    let sql = "SELECT last_sequence, last_version FROM event_counter";
    query_one(conn, sql, &[], |row| Ok((row.int(0)?, row.int(1)?))).await
}

/// Applies one write inside the batch's transaction, setting its reply.
async fn apply<C: Conn>(conn: &mut C, write: &mut Write, tx: &mut Tx<'_>) -> Result<(), DbError> {
    match write {
        Write::InsertLead { .. } => {
            leads::insert_leads(conn, std::slice::from_mut(write), tx).await?;
        }
        Write::AssignOrderId { key, mode, reply } => {
            reply.set(match crm::load_deal(conn, key).await? {
                Some((_, deal)) => Ok(crm::assign(conn, deal, *mode, tx).await?),
                None => Err(StoreError::NotFound),
            });
        }
        Write::InsertEvent {
            event,
            dedup_window,
            reply,
        } => reply.set(events::insert_event(conn, event, *dedup_window, tx).await?),
        Write::ReportDeal { key, report, reply } => {
            reply.set(crm::report_deal(conn, key, report, tx).await?);
        }
        Write::PutScheme {
            integration,
            scheme,
            reply,
        } => reply.set(Ok(crm::put_scheme(conn, integration, scheme).await?)),
        Write::PutClient {
            integration,
            client,
            reply,
        } => reply.set(Ok(crm::put_client(conn, integration, client, tx).await?)),
        Write::ExportSnapshot {
            integration,
            kind,
            since,
            restart,
            reply,
        } => {
            let latest = tx.counters.versions.last();
            let walk = crm::start_walk(conn, integration, *kind, *since, *restart, latest);
            reply.set(Ok(walk.await?));
        }
        Write::EnsureConsumer {
            name,
            acked_sequence,
            max,
            reply,
        } => reply.set(consumers::ensure(conn, name, *acked_sequence, *max).await?),
        Write::AckConsumer {
            name,
            sequence,
            max,
            reply,
        } => reply.set(consumers::ack(conn, name, *sequence, *max).await?),
        Write::DeleteConsumer { name, reply } => {
            reply.set(Ok(consumers::delete(conn, name).await?));
        }
        Write::RecordRejected {
            request,
            keep,
            reply,
        } => reply.set(Ok(rejected::record(conn, request, *keep).await?)),
        Write::MatchStored { leads, reply } => {
            reply.set(Ok(person_store::match_stored(conn, leads, tx).await?));
        }
        Write::SplitPerson {
            person_id,
            key,
            reply,
        } => reply.set(person_store::split(conn, *person_id, key, tx).await?),
        Write::Ping { reply } => {
            // A real (empty) write: it needs the write lock and the disk, as a lead
            // would, so readiness fails when leads could not be committed.
            let sql = "UPDATE event_counter SET last_sequence = last_sequence";
            conn.execute(sql, &[]).await?;
            reply.set(Ok(()));
        }
    }
    Ok(())
}
