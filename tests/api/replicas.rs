//! Several replicas on one PostgreSQL database, PostgreSQL outages, and an encrypted
//! connection to it.
//! These run only where `TEST_DATABASE_URL` names a server.

use std::collections::BTreeSet;

use roistat_leads::proto::{ReportDealRequest, StreamLeadsRequest};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

/// Two replicas on one fresh PostgreSQL database; `None` without a server.
async fn two_replicas(extra: &[&str]) -> Option<(TestApp, TestApp)> {
    let mut options = Options::for_backend(Backend::Postgres).await?;
    for arg in extra {
        options = options.arg(*arg);
    }
    let a = TestApp::spawn_with(options.clone()).await;
    let b = TestApp::spawn_with(options).await;
    Some((a, b))
}

#[tokio::test]
async fn concurrent_writers_on_two_replicas_reach_every_subscriber_once_in_order() {
    let Some((a, b)) = two_replicas(&[]).await else {
        return;
    };
    let mut on_a = a.stream(StreamLeadsRequest::default()).await;
    let mut on_b = b.stream(StreamLeadsRequest::default()).await;

    const PER_REPLICA: usize = 150;
    tokio::join!(
        send_leads_concurrently(
            &a,
            (0..PER_REPLICA).map(|n| format!("a-{n}")).collect(),
            8,
            ""
        ),
        send_leads_concurrently(
            &b,
            (0..PER_REPLICA).map(|n| format!("b-{n}")).collect(),
            8,
            ""
        ),
    );

    for stream in [&mut on_a, &mut on_b] {
        let mut sequences = vec![];
        let mut ids = BTreeSet::new();
        for _ in 0..2 * PER_REPLICA {
            let event = next_event(stream).await;
            sequences.push(event.sequence);
            assert!(
                ids.insert(lead_id(&event).unwrap().to_owned()),
                "a duplicate event"
            );
        }
        let expected: Vec<u64> = (1..=2 * PER_REPLICA as u64).collect();
        assert_eq!(
            sequences, expected,
            "every sequence once, in increasing order, no gap"
        );
    }
}

#[tokio::test]
async fn the_same_lead_retried_on_two_replicas_at_once_is_one_lead() {
    let Some((a, b)) = two_replicas(&[]).await else {
        return;
    };

    let mut answers = JoinSet::new();
    for round in 0..10 {
        for app in [&a, &b] {
            let id = format!("same-{round}");
            let request = app.lead_request(&id);
            answers.spawn(async move {
                let (status, body) = request.await;
                (id, status, body)
            });
        }
    }
    let mut answered = vec![];
    while let Some(answer) = within("the webhooks", answers.join_next()).await {
        answered.push(answer.unwrap());
    }

    for (id, status, body) in &answered {
        assert_eq!(
            (*status, body),
            (200, &json!({"status": "ok", "order_id": id}))
        );
    }
    let events = a.stored_events().await;
    let ids: Vec<_> = events.iter().map(|event| lead_id(event).unwrap()).collect();
    assert_eq!(ids.len(), 10, "one event per lead: {ids:?}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 10);
}

#[tokio::test]
async fn a_deal_reported_on_one_replica_answers_a_webhook_held_on_another() {
    let Some((a, b)) = two_replicas(&["--order-id", "crm", "--deal-wait-ms", "15000"]).await else {
        return;
    };
    let mut stream = b.stream(StreamLeadsRequest::default()).await;

    let held = tokio::spawn(a.lead_request("x"));
    assert_eq!(lead_id(&next_event(&mut stream).await), Some("x"));
    b.grpc()
        .await
        .report_deal(ReportDealRequest {
            lead_id: "x".into(),
            deal_id: "CRM-X".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let (_, answer) = within("the held webhook", held).await.unwrap();
    assert_eq!(answer, json!({"status": "ok", "order_id": "CRM-X"}));
}

#[tokio::test]
async fn a_database_outage_answers_503_and_the_service_recovers_by_itself() {
    let Some(options) = Options::for_backend(Backend::Postgres).await else {
        return;
    };
    let app = TestApp::spawn_with(options).await;
    assert_eq!(app.lead("before").await.0, 200);
    let mut stream = app
        .stream(StreamLeadsRequest {
            after_sequence: 1,
            ..Default::default()
        })
        .await;
    let database = app.options.database.clone();
    let mut admin = database.admin().await;

    // The database goes away: no new connections, existing ones cut.
    for statement in [
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", database.name()),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            database.name()
        ),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }
    let (during_status, during_body) = app.lead("during").await;
    // Readiness is checked in the background, at most a second apart.
    wait_for_readiness(&app, 503).await;

    assert_eq!(during_status, 503, "{during_body}");
    assert_eq!(during_body["status"], "error");

    // It comes back: the service recovers without a restart.
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        database.name()
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let (after_status, _) = app.lead("after").await;
    wait_for_readiness(&app, 200).await;
    let resumed = next_event(&mut stream).await;

    assert_eq!(after_status, 200);
    assert_eq!((resumed.sequence, lead_id(&resumed)), (2, Some("after")));
}

#[tokio::test]
async fn the_postgres_connection_can_be_encrypted() {
    let Some(options) = Options::for_backend(Backend::Postgres).await else {
        return;
    };
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut options.database.admin().await)
        .await
        .unwrap();
    if ssl != "on" {
        assert!(
            !in_ci(),
            "CI's PostgreSQL server must have ssl = on for this test"
        );
        eprintln!(
            "notice: the PostgreSQL server has ssl = {ssl}: the encrypted connection is not tested"
        );
        return;
    }
    let separator = if options.database.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}sslmode=require", options.database.url);
    let app = TestApp::spawn_with(options.clone().args(["--database-url", &url])).await;
    let (status, _) = app.lead("over-tls").await;

    // What the server says of the service's own connections.
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND s.ssl",
    )
    .bind(options.database.name())
    .fetch_one(&mut options.database.admin().await)
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(encrypted > 0, "no encrypted connection from the service");
}
