//! Order ids and deal reports: `--order-id lead|crm`, GetDeal and ReportDeal.

use roistat_leads::proto::{GetDealRequest, GetLeadRequest, ReportDealRequest};
use serde_json::json;

use crate::helpers::*;

backend_tests!(
    lead_mode_answers_the_lead_id_and_keeps_it_after_a_deal_report,
    crm_mode_holds_the_webhook_until_the_deal_id_is_reported,
    crm_mode_answers_503_without_a_deal_id_and_ok_on_the_retry_after_it,
    a_deal_id_answered_to_roistat_cannot_change,
    report_deal_refuses_empty_deal_ids_and_unknown_leads,
    a_lead_left_unanswered_in_crm_mode_is_answered_its_deal_id_in_lead_mode,
);

fn report(lead_id: &str, deal_id: &str) -> ReportDealRequest {
    ReportDealRequest {
        lead_id: lead_id.into(),
        deal_id: deal_id.into(),
        ..Default::default()
    }
}

fn get_deal(lead_id: &str) -> GetDealRequest {
    GetDealRequest {
        lead_id: lead_id.into(),
        ..Default::default()
    }
}

fn crm_mode(options: Options, wait_ms: &str) -> Options {
    options
        .arg("--order-id")
        .arg("crm")
        .env("ROISTAT_LEADS_DEAL_WAIT_MS", wait_ms)
}

/// Waits until the lead is stored (the webhook that carries it is still open).
async fn until_stored(app: &TestApp, lead_id: &str) {
    let mut client = app.grpc().await;
    let mut stream = app.stream(Default::default()).await;
    loop {
        let event = next_event(&mut stream).await;
        if crate::helpers::lead_id(&event) == Some(lead_id) {
            break;
        }
    }
    let request = GetLeadRequest {
        lead_id: lead_id.into(),
        ..Default::default()
    };
    client.get_lead(request).await.expect("stored");
}

async fn lead_mode_answers_the_lead_id_and_keeps_it_after_a_deal_report(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;

    assert_eq!(
        app.lead("10").await.1,
        json!({"status": "ok", "order_id": "10"})
    );
    let deal = client
        .report_deal(report("10", "D-77"))
        .await
        .unwrap()
        .into_inner();
    let retry = app.lead("10").await;

    assert_eq!(deal.order_id, "10");
    assert_eq!(deal.deal_id, "D-77");
    assert!(deal.order_id_answered);
    assert_eq!(
        retry.1["order_id"], "10",
        "an answered order id never changes"
    );
    let fetched = client.get_deal(get_deal("10")).await.unwrap().into_inner();
    assert_eq!(
        (fetched.order_id.as_str(), fetched.deal_id.as_str()),
        ("10", "D-77")
    );
    // Roistat was answered the lead id, not the deal id: the CRM may correct it.
    let corrected = client
        .report_deal(report("10", "D-78"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(corrected.deal_id, "D-78");
}

async fn crm_mode_holds_the_webhook_until_the_deal_id_is_reported(options: Options) {
    let app = TestApp::spawn_with(crm_mode(options, "15000")).await;
    let mut client = app.grpc().await;

    let webhook = tokio::spawn(app.lead_request("20"));
    until_stored(&app, "20").await;
    let pending = client.get_deal(get_deal("20")).await.unwrap().into_inner();
    client.report_deal(report("20", "CRM-5")).await.unwrap();
    let answer = within("the held webhook", webhook).await.unwrap();

    assert_eq!(
        pending.order_id, "",
        "no order id before the CRM reports one"
    );
    assert!(!pending.order_id_answered);
    assert_eq!(answer, (200, json!({"status": "ok", "order_id": "CRM-5"})));
    let deal = client.get_deal(get_deal("20")).await.unwrap().into_inner();
    assert_eq!(
        (deal.order_id.as_str(), deal.order_id_answered),
        ("CRM-5", true)
    );
}

async fn crm_mode_answers_503_without_a_deal_id_and_ok_on_the_retry_after_it(options: Options) {
    let app = TestApp::spawn_with(crm_mode(options, "0").in_a_process()).await;
    let mut client = app.grpc().await;

    let (status, body) = app.lead("30").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"status": "error", "error": "deal id not reported yet"})
    );
    let (status, _) = app.lead("30").await;
    assert_eq!(status, 503);

    client.report_deal(report("30", "CRM-30")).await.unwrap();
    let retry = app.lead("30").await;

    assert_eq!(retry, (200, json!({"status": "ok", "order_id": "CRM-30"})));
    // Waiting for the CRM is counted as such, not as a fault of the service.
    let scrape = app.scrape().await;
    let counted = |outcome: &str| {
        scrape.lines().any(|line| {
            line.starts_with("roistat_leads_webhooks_total{")
                && line.contains("action=\"lead\"")
                && line.contains(&format!("outcome=\"{outcome}\""))
                && line.ends_with(" 2")
        })
    };
    assert!(counted("deal_pending"), "{scrape}");
    assert!(!counted("unavailable"), "{scrape}");
    let events = app.stored_events().await;
    assert_eq!(
        events.len(),
        1,
        "stored and streamed once however often it was sent"
    );
}

async fn a_deal_id_answered_to_roistat_cannot_change(options: Options) {
    let app = TestApp::spawn_with(crm_mode(options, "0")).await;
    let mut client = app.grpc().await;
    assert_eq!(app.lead("40").await.0, 503);
    client.report_deal(report("40", "A")).await.unwrap();
    // Not answered yet: the CRM may still change its mind.
    client.report_deal(report("40", "B")).await.unwrap();
    assert_eq!(app.lead("40").await.1["order_id"], "B");

    let same = client.report_deal(report("40", "B")).await;
    let changed = client.report_deal(report("40", "C")).await.unwrap_err();

    assert!(
        same.is_ok(),
        "reporting the same deal id again is idempotent"
    );
    assert_eq!(changed.code(), tonic::Code::FailedPrecondition);
    assert_eq!(app.lead("40").await.1["order_id"], "B");
}

async fn report_deal_refuses_empty_deal_ids_and_unknown_leads(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;
    app.lead("50").await;

    let empty = client.report_deal(report("50", " ")).await.unwrap_err();
    let unknown = client.report_deal(report("nope", "D")).await.unwrap_err();
    let no_lead = client.report_deal(report("", "D")).await.unwrap_err();
    let get_unknown = client.get_deal(get_deal("nope")).await.unwrap_err();

    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(no_lead.code(), tonic::Code::InvalidArgument);
    assert_eq!(get_unknown.code(), tonic::Code::NotFound);
}

async fn a_lead_left_unanswered_in_crm_mode_is_answered_its_deal_id_in_lead_mode(options: Options) {
    let app = TestApp::spawn_with(crm_mode(options, "0")).await;
    assert_eq!(app.lead("60").await.0, 503);
    app.grpc()
        .await
        .report_deal(report("60", "D-60"))
        .await
        .unwrap();
    let mut app = app;
    assert!(app.terminate().await.success());

    let app = TestApp::spawn_with(app.options.same_database()).await;

    assert_eq!(
        app.lead("60").await.1,
        json!({"status": "ok", "order_id": "D-60"})
    );
    assert_eq!(app.lead("61").await.1["order_id"], "61");
}
