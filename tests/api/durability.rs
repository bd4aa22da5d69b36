//! Nothing answered `ok` is lost: not when the process is killed mid-load, not when
//! it is stopped gracefully under load. Leads not answered may be stored or not, but
//! never twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use roistat_leads::proto::{GetLeadRequest, StreamLeadsRequest};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::helpers::*;

backend_tests!(
    leads_answered_ok_survive_sigkill_mid_load_exactly_once,
    leads_answered_ok_survive_a_graceful_stop_under_load,
);

const SENDERS: usize = 8;
const LEADS_PER_SENDER: usize = 100;

/// What the load saw: each lead answered ok, with its order id.
#[derive(Default)]
struct Answers {
    ok: BTreeMap<String, String>,
}

/// Sends unique leads, each twice (a Roistat retry), from several tasks, until the
/// service stops answering. Notifies `enough` once `threshold` leads were answered ok.
fn start_load(
    app: &TestApp,
    answers: Arc<Mutex<Answers>>,
    enough: Arc<Notify>,
    threshold: usize,
) -> JoinSet<()> {
    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        let (http, url, answers, enough) = (
            app.http.clone(),
            format!("{}/webhook", app.http_base),
            answers.clone(),
            enough.clone(),
        );
        senders.spawn(async move {
            for n in 0..LEADS_PER_SENDER {
                let id = format!("load-{sender}-{n}");
                for _attempt in 0..2 {
                    let query = [
                        ("user", LOGIN),
                        ("token", &token()),
                        ("action", "lead"),
                        ("id", &id),
                    ];
                    let Ok(response) = http.get(&url).query(&query).send().await else {
                        return; // the service is gone
                    };
                    let ok = response.status() == 200;
                    let Ok(body) = response.json::<serde_json::Value>().await else {
                        return;
                    };
                    if ok && body["status"] == "ok" {
                        let order_id = body["order_id"].as_str().unwrap().to_owned();
                        let mut answers = answers.lock().unwrap();
                        let previous = answers.ok.insert(id.clone(), order_id.clone());
                        assert!(
                            previous.is_none_or(|previous| previous == order_id),
                            "order id changed"
                        );
                        if answers.ok.len() == threshold {
                            enough.notify_one();
                        }
                    }
                }
            }
        });
    }
    senders
}

/// After the restart: every lead answered ok is stored, with the order id it was
/// answered; no lead has two events; a retry now is still a retry.
async fn check_after_restart(app: &TestApp, answers: &Answers) {
    let mut client = app.grpc().await;
    for (id, order_id) in &answers.ok {
        let lead = client
            .get_lead(GetLeadRequest {
                lead_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("lead {id} answered ok but not stored: {status:?}"));
        assert_eq!(&lead.into_inner().lead_id, id);
        let (status, body) = app.lead(id).await;
        assert_eq!(
            (status, body["order_id"].as_str()),
            (200, Some(order_id.as_str()))
        );
    }
    let events = app.stored_events().await;
    let mut seen = BTreeSet::new();
    for event in &events {
        let id = lead_id(event).unwrap().to_owned();
        assert!(seen.insert(id.clone()), "lead {id} has two events");
    }
    for id in answers.ok.keys() {
        assert!(seen.contains(id), "lead {id} answered ok but not streamed");
    }
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(sequences, expected, "replayed in order, without gaps");
}

async fn leads_answered_ok_survive_sigkill_mid_load_exactly_once(options: Options) {
    let mut app = TestApp::spawn_with(options.in_a_process()).await;
    let answers = Arc::new(Mutex::new(Answers::default()));
    let enough = Arc::new(Notify::new());
    let mut load = start_load(&app, answers.clone(), enough.clone(), 150);

    within("150 leads answered", enough.notified()).await;
    app.kill().await;
    while let Some(sender) = within("the senders to stop", load.join_next()).await {
        sender.unwrap();
    }

    let app = TestApp::spawn_with(app.options.clone().in_a_process()).await;
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(answers.ok.len() >= 150);
    check_after_restart(&app, &answers).await;
}

async fn leads_answered_ok_survive_a_graceful_stop_under_load(options: Options) {
    let mut app = TestApp::spawn_with(options).await;
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    let answers = Arc::new(Mutex::new(Answers::default()));
    let enough = Arc::new(Notify::new());
    let mut load = start_load(&app, answers.clone(), enough.clone(), 150);

    within("150 leads answered", enough.notified()).await;
    let status = app.terminate().await;
    while let Some(sender) = within("the senders to stop", load.join_next()).await {
        sender.unwrap();
    }
    // The open stream ended cleanly rather than being cut.
    loop {
        match within("the stream to end", stream.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => panic!("stream cut: {status:?}"),
        }
    }

    assert!(status.success(), "graceful stop exits 0: {status}");
    let app = TestApp::spawn_with(app.options.clone()).await;
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    check_after_restart(&app, &answers).await;
}

/// A database whose default is `synchronous_commit = off` (as a careless setting, or
/// a pooler that drops the session's startup options, would leave it) still gets
/// every write transaction committed synchronously: each sets it itself. A trigger
/// records the setting each stored event was committed under.
#[tokio::test]
async fn postgres_commits_synchronously_whatever_the_databases_default() {
    let Some(options) = Options::for_backend(Backend::Postgres).await else {
        return;
    };
    let db = &options.database;
    let mut admin = db.admin().await;
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name()
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let app = TestApp::spawn_with(options.clone()).await;
    db.execute(
        "CREATE TABLE commit_settings (setting text NOT NULL);
         CREATE FUNCTION record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO commit_settings VALUES (current_setting('synchronous_commit'));
           RETURN NEW;
         END $$;
         CREATE TRIGGER record_commit_setting AFTER INSERT ON events
           FOR EACH ROW EXECUTE FUNCTION record_commit_setting();",
    )
    .await;

    for id in ["1", "2", "3"] {
        assert_eq!(app.lead(id).await.0, 200);
    }
    let (status, _) = app
        .webhook(&[("action", "message"), ("leadId", "1"), ("text", "hi")])
        .await;
    assert_eq!(status, 200);

    let default = db
        .query_int("SELECT COUNT(*) WHERE current_setting('synchronous_commit') = 'off'")
        .await;
    assert_eq!(
        default, 1,
        "a session of this database commits asynchronously"
    );
    let recorded = db.query_int("SELECT COUNT(*) FROM commit_settings").await;
    let synchronous = db
        .query_int("SELECT COUNT(*) FROM commit_settings WHERE setting = 'on'")
        .await;
    assert_eq!((recorded, synchronous), (4, 4));
}

/// One service per SQLite file: a second `serve` on a database another holds
/// exits 2 at once, naming the lock; once the first stops, it starts.
#[tokio::test]
async fn a_second_service_on_the_same_sqlite_file_is_refused_at_once() {
    let options = Options::for_backend(Backend::Sqlite).await.unwrap();
    let url = options.database.url.clone();
    let mut first = TestApp::spawn_with(options.clone().in_a_process()).await;

    let second = serve_refused(&["--database-url", &url], &[]).await;
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    let message = String::from_utf8_lossy(&second.stderr);
    let lock = format!("{}.lock", url.trim_start_matches("sqlite://"));
    assert!(message.contains(&lock), "{message}");
    assert_eq!(first.lead("1").await.0, 200, "the first goes on");

    first.terminate().await;
    let again = TestApp::spawn_with(options.same_database()).await;
    assert_eq!(again.lead("2").await.0, 200);
}
