//! The operator console in a real browser: headless Chromium over WebDriver, against
//! the real service on random ports. Each test leaves a screenshot of its view in
//! `target/console-screenshots/`, and fails on any error in the browser's console.

use roistat_leads::proto::scheme::Status;
use roistat_leads::proto::{AckLeadsRequest, ReportDealRequest, Scheme, StreamLeadsRequest};

use crate::console::{CONSOLE_TOKEN, console};
use crate::helpers::*;
use crate::webdriver::Browser;

/// A lead through the webhook, with these parameters besides the credentials.
async fn send(app: &TestApp, params: &[(&str, &str)]) {
    let mut query = vec![("action", "lead")];
    query.extend_from_slice(params);
    let (status, body) = app.webhook(&query).await;
    assert_eq!(status, 200, "{body}");
}

/// Ends a browser test: no error in the browser's console on the way, a screenshot.
async fn finish(browser: Browser, name: &str) {
    browser.screenshot(name).await;
    let errors = browser.console_errors().await;
    assert!(
        errors.is_empty(),
        "the browser's console has errors: {errors:?}"
    );
    browser.quit().await;
}

#[tokio::test]
async fn a_lead_appears_in_the_live_view_without_a_reload() {
    let Some(browser) = Browser::start("console_browser::live").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    send(
        &app,
        &[("id", "100"), ("name", "Before"), ("title", "Earlier lead")],
    )
    .await;
    browser.goto(&format!("{}/#/live", console(&app))).await;
    browser.wait_for_text(".status", "live").await;
    browser.wait_for_text("#view table", "Earlier lead").await;

    send(
        &app,
        &[
            ("id", "4711"),
            ("name", "Robert"),
            ("phone", "+7 999 000-11-22"),
            ("title", "Callback"),
        ],
    )
    .await;
    browser.wait_for_text("#view table", "4711").await;
    let first_row = browser.text_of("#view tbody tr").await;

    assert!(
        first_row.contains("4711") && first_row.contains("Robert"),
        "{first_row}"
    );
    assert!(first_row.contains("+7 999 000-11-22") && first_row.contains("Callback"));
    assert!(
        !browser.url().await.contains("Robert"),
        "no lead data in the URL"
    );
    finish(browser, "live").await;
}

#[tokio::test]
async fn a_phone_written_differently_finds_the_lead() {
    let Some(browser) = Browser::start("console_browser::search").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    send(
        &app,
        &[
            ("id", "5001"),
            ("name", "Анна"),
            ("phone", "+7 (999) 000-11-22"),
        ],
    )
    .await;
    send(
        &app,
        &[
            ("id", "5002"),
            ("name", "Boris"),
            ("phone", "+7 (999) 555-44-33"),
        ],
    )
    .await;
    browser.goto(&format!("{}/#/search", console(&app))).await;
    let term = browser.wait_for("#search-term").await;
    browser.type_into(&term, "8 999 000 11 22").await;
    browser
        .click(&browser.wait_for("form.search button[type=submit]").await)
        .await;
    browser.wait_for_text("#search-results", "5001").await;
    let phone_results = browser.text_of("#search-results").await;

    // A name, by a prefix in another case (Cyrillic included).
    browser
        .execute(
            "document.getElementById('search-field').value = 'name';",
            serde_json::json!([]),
        )
        .await;
    browser
        .execute(
            "document.getElementById('search-term').value = '';",
            serde_json::json!([]),
        )
        .await;
    browser.type_into(&term, "АН").await;
    browser
        .click(&browser.wait_for("form.search button[type=submit]").await)
        .await;
    browser.wait_for_text("#search-results", "Анна").await;
    let name_results = browser.text_of("#search-results").await;

    assert!(!phone_results.contains("5002"), "{phone_results}");
    assert!(!name_results.contains("Boris"), "{name_results}");
    assert!(
        !browser.url().await.contains("999"),
        "search terms stay out of the URL"
    );
    finish(browser, "search").await;
}

#[tokio::test]
async fn the_lead_view_shows_the_stored_lead_the_answer_and_the_reported_deal() {
    let Some(browser) = Browser::start("console_browser::lead").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    let lead = roistat_example_lead("90");
    let params: Vec<(&str, &str)> = lead
        .iter()
        .filter(|(name, _)| **name != "action")
        .map(|(name, value)| (*name, value.as_str()))
        .chain([("utm_source", "google")])
        .collect();
    send(&app, &params).await;
    let mut grpc = app.grpc().await;
    grpc.update_scheme(Scheme {
        statuses: vec![
            Status {
                id: "1".into(),
                name: "New".into(),
            },
            Status {
                id: "2".into(),
                name: "Paid".into(),
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    grpc.report_deal(ReportDealRequest {
        lead_id: "90".into(),
        deal_id: "CRM-90".into(),
        status: Some("2".into()),
        price: Some("120.34".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    browser
        .goto(&format!("{}/#/lead/default/90", console(&app)))
        .await;
    browser.wait_for_text("#view", "Paid").await;
    let page = browser.text_of("#view").await;

    for shown in [
        "Caught lead: 11230001122",
        "Robert",
        "+11230001122",
        "email@mail.com",
        "Promo-code: 1674",
        "utm_source",
        "google",
        "\"640163\": \"test\"",
        "CRM-90",
        "Paid (2)",
        "120.34",
        "\"status\": \"2\"",
    ] {
        assert!(
            page.contains(shown),
            "{shown:?} is not on the page:\n{page}"
        );
    }
    assert!(
        page.contains("Order id"),
        "the order id Roistat was answered"
    );
    finish(browser, "lead").await;
}

#[tokio::test]
async fn a_lossy_lead_shows_the_request_as_it_came_and_its_calls_latest_state() {
    let Some(browser) = Browser::start("console_browser::lossy").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    let token = token();
    // A name cut mid-character and sent twice, with markup in it.
    let (status, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&action=lead&id=77&name=%3Cb%3EOlga%3C%2Fb%3E\
             &name=%D0%9E%D0"
        ))
        .await;
    assert_eq!(status, 200);
    for (status, duration, file) in [("ACTIVE", "", ""), ("ANSWER", "61", "https://rec/77.mp3")] {
        let (code, _) = app
            .webhook(&[
                ("action", "call"),
                ("id", "c-77"),
                ("order_id", "77"),
                ("status", status),
                ("duration", duration),
                ("file_url", file),
            ])
            .await;
        assert_eq!(code, 200);
    }

    browser
        .goto(&format!("{}/#/lead/default/77", console(&app)))
        .await;
    browser.wait_for_text("#view", "Read with losses").await;
    let page = browser.text_of("#view").await;
    for shown in [
        "lossy",
        "sent more than once",
        "not UTF-8",
        "<b>Olga</b>",
        "token=***",
        "Calls, latest state",
        "https://rec/77.mp3",
        "Call ACTIVE",
        "Call ANSWER",
    ] {
        assert!(
            page.contains(shown),
            "{shown:?} is not on the page:\n{page}"
        );
    }
    assert!(!page.contains(&token), "the token is never shown");
    let bold = browser
        .execute(
            "return document.querySelectorAll('#view b').length;",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(bold, 0, "what the visitor sent is text, not markup");
    finish(browser, "lossy-lead").await;
}

#[tokio::test]
async fn a_consumers_pending_count_drops_after_it_acks() {
    let Some(browser) = Browser::start("console_browser::consumers").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    for id in ["1", "2", "3"] {
        send(&app, &[("id", id)]).await;
    }
    let mut stream = app
        .stream(StreamLeadsRequest {
            consumer: "billing".into(),
            ..Default::default()
        })
        .await;
    next_event(&mut stream).await;
    browser
        .goto(&format!("{}/#/consumers", console(&app)))
        .await;
    browser.wait_for_text("#view", "billing").await;
    browser
        .wait_for_text("tr[data-consumer=billing] .pending", "3")
        .await;
    let connected = browser.text_of("tr[data-consumer=billing]").await;
    app.grpc()
        .await
        .ack_leads(AckLeadsRequest {
            consumer: "billing".into(),
            sequence: 3,
        })
        .await
        .unwrap();
    browser
        .wait_for_text("tr[data-consumer=billing] .pending", "0")
        .await;

    assert!(
        connected.contains("yes"),
        "its stream is connected here: {connected}"
    );
    finish(browser, "consumers").await;
}

#[tokio::test]
async fn a_refused_request_shows_with_its_reason() {
    let Some(browser) = Browser::start("console_browser::requests").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    let wrong = "0".repeat(32);
    let (status, _) = app
        .get_webhook(&[
            ("user", LOGIN),
            ("token", &wrong),
            ("action", "lead"),
            ("id", "1"),
        ])
        .await;
    assert_eq!(status, 401);
    // A request that names no action, no id and no leadId: refused after the
    // token check.
    let (status, _) = app.webhook(&[("text", "teleport")]).await;
    assert_eq!(status, 400);
    browser.goto(&format!("{}/#/requests", console(&app))).await;
    browser
        .wait_for_text("#view table", "missing parameter: action")
        .await;
    let requests = browser.text_of("#view table").await;

    assert!(
        requests.contains("token"),
        "the wrong token's refusal: {requests}"
    );
    assert!(
        requests.contains("401") && requests.contains("400"),
        "{requests}"
    );
    finish(browser, "requests").await;
}

#[tokio::test]
async fn a_hostile_name_renders_as_text_and_runs_nothing() {
    let Some(browser) = Browser::start("console_browser::hostile").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    let hostile = "<img src=x onerror=alert(1)>";
    let script = "<script>alert(2)</script>";
    send(&app, &[("id", "666"), ("name", hostile), ("title", script)]).await;
    for view in ["#/live", "#/lead/default/666"] {
        browser.goto(&format!("{}/{view}", console(&app))).await;
        browser.wait_for_text("#view", hostile).await;
        let images = browser
            .execute(
                "return document.querySelectorAll('#view img, #view script').length;",
                serde_json::json!([]),
            )
            .await;
        assert_eq!(images, 0, "{view}: the name became markup");
        assert!(browser.text_of("#view").await.contains(script), "{view}");
        assert_eq!(browser.alert().await, None, "{view}: a dialog opened");
    }
    browser.goto(&format!("{}/#/live", console(&app))).await;
    browser.wait_for_text("#view", hostile).await;
    finish(browser, "hostile-name").await;
}

#[tokio::test]
async fn the_token_login_opens_the_console_and_every_view_loads_cleanly() {
    let Some(browser) = Browser::start("console_browser::login").await else {
        return;
    };
    let options = Options::default().args(["--console-token", CONSOLE_TOKEN]);
    let app = TestApp::spawn_with(options).await;
    send(&app, &[("id", "7"), ("name", "Robert")]).await;
    let base = console(&app);
    browser.goto(&format!("{base}/")).await;
    let token = browser.wait_for("#token").await;
    assert!(browser.url().await.ends_with("/login"));
    browser.type_into(&token, "wrong").await;
    browser
        .click(&browser.wait_for("button[type=submit]").await)
        .await;
    browser.wait_for_text(".notice", "not the console").await;
    browser.screenshot("login").await;
    let token = browser.wait_for("#token").await;
    browser.type_into(&token, CONSOLE_TOKEN).await;
    browser
        .click(&browser.wait_for("button[type=submit]").await)
        .await;
    browser.wait_for_text(".status", "live").await;
    browser.wait_for_text("#view table", "Robert").await;
    assert!(browser.find("#logout button").await.is_some());

    // Every view, at a desktop's width and at a phone's.
    for (width, height) in [(1280, 900), (390, 844)] {
        browser.resize(width, height).await;
        for view in [
            "#/overview",
            "#/search",
            "#/consumers",
            "#/requests",
            "#/live",
        ] {
            browser.goto(&format!("{base}/{view}")).await;
            browser.wait_for("#view h1").await;
            let errors = browser.console_errors().await;
            assert!(errors.is_empty(), "{view} at {width}px: {errors:?}");
        }
    }
    browser.goto(&format!("{base}/#/live")).await;
    browser.wait_for_text("#view table", "Robert").await;
    browser.screenshot("live-390px").await;
    browser.resize(1280, 900).await;
    browser.goto(&format!("{base}/#/overview")).await;
    browser.wait_for_text("#view", "Leads per minute").await;
    browser.screenshot("overview").await;

    // Logging out ends the session: the console asks for the token again.
    browser
        .click(&browser.wait_for("#logout button").await)
        .await;
    browser.wait_for("#token").await;
    browser.goto(&format!("{base}/#/live")).await;
    browser.wait_for("#token").await;
    finish(browser, "logged-out").await;
}

#[tokio::test]
async fn a_person_is_found_by_any_phone_form_and_shows_its_leads_across_channels() {
    let Some(browser) = Browser::start("console_browser::person").await else {
        return;
    };
    let app = TestApp::spawn_with(Options::default()).await;
    let hostile = "<img src=x onerror=alert(1)>";
    send(
        &app,
        &[
            ("id", "7001"),
            ("title", "Site form"),
            ("name", "Olga"),
            ("phone", "+7 (999) 000-11-22"),
        ],
    )
    .await;
    send(&app, &[("id", "7002"), ("title", "Звонок от 79990001122")]).await;
    send(
        &app,
        &[
            ("id", "7003"),
            ("title", hostile),
            ("name", hostile),
            ("phone", "89990001122"),
            ("email", "Olga@Example.com"),
        ],
    )
    .await;
    send(
        &app,
        &[("id", "7004"), ("name", "Other"), ("phone", "+79995550000")],
    )
    .await;

    // The live view marks the returning person's leads, not the first one.
    browser.goto(&format!("{}/#/live", console(&app))).await;
    browser.wait_for_text("#view table", "7004").await;
    let marked = browser
        .execute(
            "return [...document.querySelectorAll('#view tbody tr')].map((row) => \
             [row.textContent.includes('7001') || row.textContent.includes('7002') \
              || row.textContent.includes('7003') || row.textContent.includes('7004'), \
              row.querySelector('.returning') !== null, row.textContent]);",
            serde_json::json!([]),
        )
        .await;
    let rows = marked.as_array().unwrap();
    let returning = |id: &str| {
        rows.iter()
            .find(|row| row[2].as_str().unwrap().contains(id))
            .map(|row| row[1].as_bool().unwrap())
            .unwrap()
    };
    assert!(!returning("7001") && returning("7002") && returning("7003"));
    assert!(!returning("7004"));

    // Search by a phone written another way opens the person.
    browser.goto(&format!("{}/#/search", console(&app))).await;
    browser.wait_for("#search-term").await;
    browser
        .execute(
            "document.getElementById('search-field').value = 'person';",
            serde_json::json!([]),
        )
        .await;
    let term = browser.wait_for("#search-term").await;
    browser.type_into(&term, "8 (999) 000-11-22").await;
    browser
        .click(&browser.wait_for("form.search button[type=submit]").await)
        .await;
    browser.wait_for_text("#view h1", "Person").await;
    browser.wait_for_text("#view table", "7003").await;
    assert!(browser.url().await.contains("#/person/"));
    let page = browser.text_of("#view").await;
    for expected in [
        "7001",
        "7002",
        "7003",
        "+79990001122",
        "olga@example.com",
        "calltracking",
        hostile,
    ] {
        assert!(page.contains(expected), "{expected} in {page}");
    }
    assert!(!page.contains("7004"), "another person's lead: {page}");
    assert!(!page.contains("null"), "{page}");
    // Hostile text stays text: no element was made of it, nothing ran.
    assert_eq!(browser.find("#view img").await, None);
    assert_eq!(browser.alert().await, None);
    // The lead view links back to its person.
    browser
        .goto(&format!("{}/#/lead/default/7002", console(&app)))
        .await;
    browser.wait_for_text("#view", "returning").await;
    browser
        .click(&browser.wait_for("#view a[href^='#/person/']").await)
        .await;
    browser.wait_for_text("#view table", "7001").await;
    finish(browser, "person").await;
}
