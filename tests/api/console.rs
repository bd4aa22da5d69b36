//! The operator console over HTTP: who may open it (loopback without a token, a
//! token login with one, from a peer that is not loopback too), the headers that
//! keep a browser strict, and its API's answers to bad input. The views themselves
//! are tested in a real browser (`console_browser.rs`).

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::namespace::{Namespace, OUTSIDE};

pub const CONSOLE_TOKEN: &str = "console-secret-token-of-32-chars";

pub fn console(app: &TestApp) -> String {
    app.console_base.clone().expect("the console listens")
}

/// A plain HTTP/1.1 exchange on a connection made from inside the namespace:
/// the status, the headers (lowercased names) and the body.
async fn exchange(
    namespace: &Namespace,
    addr: SocketAddr,
    request: String,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = namespace.connect(addr).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("the console's answer", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn get(path: &str, cookie: Option<&str>) -> String {
    let cookie = cookie.map_or(String::new(), |cookie| format!("cookie: {cookie}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: console\r\n{cookie}connection: close\r\n\r\n")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(found, _)| found == name)
        .map(|(_, value)| value.as_str())
}

/// A console API answer, as JSON.
pub async fn console_api(app: &TestApp, path: &str) -> Value {
    let url = format!("{}{path}", console(app));
    let response = within(path, app.http.get(url).send()).await.unwrap();
    within(path, response.json()).await.unwrap()
}

fn console_port(app: &TestApp) -> u16 {
    console(app)
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port")
}

/// Without a token the console may listen on a loopback address only, and answers
/// only loopback names (and those allowed by name): a page whose name is rebound to
/// 127.0.0.1 gets 421.
#[tokio::test]
async fn without_a_token_the_console_is_loopback_only_and_answers_loopback_names_only() {
    let everywhere = ["--console-addr", "0.0.0.0:0"];
    for args in [&everywhere[..], &["--console-addr", "[::]:0"]] {
        let refused = serve_refused(args, &[]).await;
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains("--console-token"), "{message}");
        let checked = check_config(args, &[("ROISTAT_USER", "u"), ("ROISTAT_PASSWORD", "p")]).await;
        assert_eq!(checked.status.code(), Some(2), "{checked:?}");
    }
    let short = check_config(
        &["--console-token", "short-token"],
        &[("ROISTAT_USER", "u"), ("ROISTAT_PASSWORD", "p")],
    )
    .await;
    assert_eq!(short.status.code(), Some(2), "{short:?}");
    assert!(String::from_utf8_lossy(&short.stderr).contains("24 characters"));

    let app = TestApp::spawn_with(
        Options::default().args(["--console-allowed-hosts", "Console.Internal,ops"]),
    )
    .await;
    let address = console(&app).trim_start_matches("http://").to_owned();
    let port = address.rsplit(':').next().unwrap().to_owned();
    let ask = |host: String| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let request =
                format!("GET /api/meta HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            within("the console's answer", stream.read_to_end(&mut answer))
                .await
                .unwrap();
            let answer = String::from_utf8_lossy(&answer).into_owned();
            let status: u16 = answer[9..12].parse().unwrap();
            (status, answer)
        }
    };
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LOCALHOST".to_owned(),
        "console.internal:8081".to_owned(),
        "ops".to_owned(),
    ] {
        let (status, answer) = ask(host.clone()).await;
        assert_eq!(status, 200, "{host}: {answer}");
    }
    for host in [
        format!("rebound.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
        "localhost.evil.example".to_owned(),
    ] {
        let (status, answer) = ask(host.clone()).await;
        assert_eq!(status, 421, "{host}: {answer}");
        assert!(answer.contains("--console-allowed-hosts"), "{answer}");
    }
}

#[tokio::test]
async fn with_a_token_the_console_answers_other_peers_after_a_login() {
    let test = "console::with_a_token_the_console_answers_other_peers_after_a_login";
    let Some(namespace) = Namespace::create(test) else {
        return;
    };
    let everywhere = ["--console-addr", "0.0.0.0:0"];

    // With a token: every visitor logs in, from anywhere.
    let options = Options::default()
        .args(everywhere)
        .args(["--console-token", CONSOLE_TOKEN]);
    let opened = TestApp::spawn_with(namespace.serve(options)).await;
    let port = console_port(&opened);
    let outside: SocketAddr = format!("{OUTSIDE}:{port}").parse().unwrap();
    let (anonymous, _, _) = exchange(&namespace, outside, get("/api/meta", None)).await;
    let (page, headers, _) = exchange(&namespace, outside, get("/", None)).await;
    let login = |token: &str| {
        let body = format!("token={token}");
        format!(
            "POST /login HTTP/1.1\r\nhost: console\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (wrong, wrong_headers, _) = exchange(&namespace, outside, login("guess")).await;
    let (right, right_headers, _) = exchange(&namespace, outside, login(CONSOLE_TOKEN)).await;
    let cookie = header(&right_headers, "set-cookie").expect("a session cookie");
    let session = cookie.split(';').next().unwrap();
    let (inside, _, meta) = exchange(&namespace, outside, get("/api/meta", Some(session))).await;
    let forged = session.replace(|c: char| c.is_ascii_hexdigit(), "0");
    let (forgery, _, _) = exchange(&namespace, outside, get("/api/meta", Some(&forged))).await;

    assert_eq!(anonymous, 401);
    assert_eq!((page, header(&headers, "location")), (303, Some("/login")));
    assert_eq!(wrong, 303);
    assert_eq!(header(&wrong_headers, "location"), Some("/login?failed=1"));
    assert!(header(&wrong_headers, "set-cookie").is_none());
    assert_eq!(right, 303);
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert_eq!(inside, 200, "{meta}");
    assert_eq!(serde_json::from_str::<Value>(&meta).unwrap()["login"], true);
    assert_eq!(
        forgery, 401,
        "a cookie not signed with the token is no session"
    );
}

#[tokio::test]
async fn login_attempts_are_rate_limited_and_sessions_survive_a_restart() {
    let app =
        TestApp::spawn_with(Options::default().args(["--console-token", CONSOLE_TOKEN])).await;
    let base = console(&app);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &'static str| {
        let client = client.clone();
        let url = format!("{base}/login");
        async move {
            let response = client
                .post(url)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap();
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let cookie = response.headers().get("set-cookie").map(|value| {
                value
                    .to_str()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .to_owned()
            });
            (location, cookie)
        }
    };
    let (_, session) = login(CONSOLE_TOKEN).await;
    let session = session.expect("a session");
    let mut last = String::new();
    for _ in 0..8 {
        last = login("wrong").await.0;
    }
    let app = app.restart().await;
    let base = console(&app);
    let meta = client
        .get(format!("{base}/api/meta"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();

    assert_eq!(
        last, "/login?limited=1",
        "a burst of wrong tokens is slowed down"
    );
    assert_eq!(
        meta.status(),
        200,
        "a session is signed, not kept: it survives a restart"
    );
}

#[tokio::test]
async fn every_answer_keeps_the_browser_strict() {
    let app = TestApp::spawn_with(Options::default()).await;
    let base = console(&app);
    for path in ["/", "/api/meta", "/assets/console.js", "/no-such-page"] {
        let response = app.http.get(format!("{base}{path}")).send().await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    let page = app.page(&base).await;
    assert!(!page.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn the_api_refuses_bad_input_with_a_clear_error() {
    let app = TestApp::spawn_with(Options::default()).await;
    let base = console(&app);
    let search = |body: Value| {
        let request = app
            .http
            .post(format!("{base}/api/search"))
            .json(&body)
            .send();
        async move {
            let response = request.await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let no_digits = search(json!({"field": "phone", "term": "call me"})).await;
    let unknown_field = search(json!({"field": "password", "term": "x"})).await;
    let unknown_integration =
        search(json!({"integration": "nope", "field": "name", "term": "Ann"})).await;
    let too_long = search(json!({"field": "name", "term": "x".repeat(300)})).await;
    let missing = app
        .http
        .get(format!("{base}/api/lead?integration=default&lead_id=404"))
        .send()
        .await
        .unwrap();
    let in_url = app
        .http
        .get(format!("{base}/api/search?field=phone&term=1"))
        .send()
        .await
        .unwrap();

    for (status, body) in [&no_digits, &unknown_field, &unknown_integration, &too_long] {
        assert_eq!(*status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty()),
            "{body}"
        );
    }
    assert_eq!(missing.status(), 404);
    assert_eq!(
        in_url.status(),
        405,
        "search terms travel in a request body only"
    );
}

#[tokio::test]
async fn the_live_feed_resumes_after_its_last_event_id_and_ends_with_the_service() {
    let mut app = TestApp::spawn_with(Options::default()).await;
    for id in ["1", "2", "3"] {
        assert_eq!(app.lead(id).await.0, 200);
    }
    let mut feed = app
        .http
        .get(format!("{}/api/live", console(&app)))
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let mut received = String::new();
    within("the third event", async {
        while !received.contains("id: 3") {
            let chunk = feed.chunk().await.unwrap().expect("the feed goes on");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    let exit = app.terminate().await;
    within("the feed to end with the service", async {
        while let Ok(Some(_)) = feed.chunk().await {}
    })
    .await;

    assert!(
        !received.contains("id: 1\n") && !received.contains("id: 2\n"),
        "{received}"
    );
    let data: Value = serde_json::from_str(
        received
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .expect("a data line"),
    )
    .unwrap();
    assert_eq!(
        (data["lead_id"].as_str(), data["kind"].as_str()),
        (Some("3"), Some("lead"))
    );
    assert_eq!(data["order_id"], "3");
    assert!(exit.success(), "{exit:?}");
}

backend_tests!(
    a_search_finds_leads_by_every_key_and_pages_them,
    the_lead_view_tells_a_leads_whole_story
);

async fn search(app: &TestApp, body: Value) -> Value {
    let response = app
        .http
        .post(format!("{}/api/search", console(app)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn ids(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["lead_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_search_finds_leads_by_every_key_and_pages_them(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let leads = [
        (
            "1",
            "Анна Петрова",
            "+7 (999) 000-11-22",
            "Anna@Example.com",
            "11",
        ),
        (
            "2",
            "анатолий",
            "8 999 000 11 22",
            "tolya@example.com",
            "12",
        ),
        ("3", "Boris", "+1 555 010 9999", "boris@example.com", "13"),
    ];
    for (id, name, phone, email, visit) in leads {
        let (status, _) = app
            .webhook(&[
                ("action", "lead"),
                ("id", id),
                ("name", name),
                ("phone", phone),
                ("email", email),
                ("visit", visit),
            ])
            .await;
        assert_eq!(status, 200);
    }
    for n in 0..60 {
        let id = format!("bulk-{n}");
        let (status, _) = app
            .webhook(&[
                ("action", "lead"),
                ("id", &id),
                ("phone", "+44 20 7946 0000"),
            ])
            .await;
        assert_eq!(status, 200);
    }
    let by = |field: &str, term: &str| json!({"field": field, "term": term});

    let phone = search(&app, by("phone", "9990001122")).await;
    let name = search(&app, by("name", "АН")).await;
    let full_name = search(&app, by("name", "анна  ПЕТРОВА")).await;
    let email = search(&app, by("email", " ANNA@example.COM ")).await;
    let visit = search(&app, by("visit", "13")).await;
    let lead = search(&app, by("lead_id", "2")).await;
    let order = search(&app, by("order_id", "3")).await;
    let none = search(&app, by("name", "zz")).await;
    let first = search(&app, by("phone", "2079460000")).await;
    let second = search(
        &app,
        json!({"field": "phone", "term": "2079460000", "cursor": first["cursor"]}),
    )
    .await;
    let other_integration = search(
        &app,
        json!({"integration": "default", "field": "visit", "term": "13"}),
    )
    .await;

    assert_eq!(ids(&phone), ["2", "1"], "newest first, however written");
    assert_eq!(
        ids(&name),
        ["2", "1"],
        "by the folded name, then newest first"
    );
    assert_eq!(ids(&full_name), ["1"]);
    assert_eq!(ids(&email), ["1"]);
    assert_eq!(ids(&visit), ["3"]);
    assert_eq!(ids(&lead), ["2"]);
    assert_eq!(ids(&order), ["3"]);
    assert!(ids(&none).is_empty() && none["cursor"].is_null());
    assert_eq!(phone["results"][0]["name"], "анатолий");
    assert_eq!(phone["results"][0]["order_id"], "2");
    assert_eq!(ids(&first).len(), 50);
    assert_eq!(ids(&first)[0], "bulk-59");
    assert_eq!(ids(&second).len(), 10);
    assert!(second["cursor"].is_null());
    let mut all: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 60, "two pages, none twice, none missed");
    assert_eq!(ids(&other_integration), ["3"]);
}

async fn the_lead_view_tells_a_leads_whole_story(options: Options) {
    let app = TestApp::spawn_with(options.in_a_process()).await;
    let (status, _) = app
        .webhook(&[
            ("action", "lead"),
            ("id", "90"),
            ("title", "Sofa"),
            ("data", r#"{"page":"https:\/\/shop\/","city":"Moscow"}"#),
            ("utm_source", "google"),
        ])
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .webhook(&[
            ("action", "message"),
            ("leadId", "90"),
            ("title", "Duplicated lead"),
            ("text", "again"),
        ])
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .webhook(&[("action", "lead"), ("id", "91"), ("title", "Other")])
        .await;
    assert_eq!(status, 200);
    let lead = console_api(&app, "/api/lead?integration=default&lead_id=90").await;
    let overview = console_api(&app, "/api/overview").await;

    assert_eq!(lead["title"], "Sofa");
    assert_eq!(lead["fields"]["city"], "Moscow");
    assert_eq!(lead["extra"]["utm_source"], "google");
    assert_eq!(
        lead["data_json"],
        r#"{"page":"https:\/\/shop\/","city":"Moscow"}"#
    );
    assert_eq!(lead["deal"]["answered_order_id"], "90");
    assert_eq!(lead["order"]["export"]["id"], "90");
    assert_eq!(lead["order"]["export"]["name"], "Sofa");
    let events = lead["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "only what is about it: {events:?}");
    assert_eq!(events[0]["kind"], "message");
    assert_eq!(events[0]["text"], "again");
    let minutes = overview["minutes"].as_array().unwrap();
    let counted: u64 = minutes
        .iter()
        .map(|minute| minute["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 2, "leads only, in the last 24 hours: {overview}");
    assert_eq!(overview["latest_sequence"], 3);
    assert!(overview["store_bytes"].as_u64().unwrap() > 0);
    assert_eq!(overview["outcomes"]["ok"], 3.0);
}

#[tokio::test]
async fn the_console_is_configured_from_flags_environment_or_file() {
    let temp = tempfile::TempDir::new().unwrap();
    let dir = temp.path();
    let token_file = dir.join("console_token");
    std::fs::write(&token_file, "from-a-file-of-24-characters\n").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "roistat_user = \"u\"\nroistat_password = \"p\"\nconsole_addr = \"off\"\n\
             console_token_file = {:?}\n",
            token_file.display().to_string()
        ),
    )
    .unwrap();
    let from_file = check_config(&["--config", config.to_str().unwrap()], &[]).await;
    let from_env = check_config(
        &["--config", config.to_str().unwrap()],
        &[("ROISTAT_LEADS_CONSOLE_ADDR", "0.0.0.0:9081")],
    )
    .await;
    let bad = check_config(
        &[
            "--roistat-user",
            "u",
            "--roistat-password",
            "p",
            "--console-addr",
            "nowhere",
        ],
        &[],
    )
    .await;
    let empty = check_config(
        &[
            "--roistat-user",
            "u",
            "--roistat-password",
            "p",
            "--console-token",
            " ",
        ],
        &[],
    )
    .await;

    let text = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(from_file.status.success(), "{from_file:?}");
    assert!(
        text(&from_file).contains("console_addr = \"off\""),
        "{}",
        text(&from_file)
    );
    assert!(text(&from_file).contains("console_token = \"********\""));
    assert!(
        !text(&from_file).contains("from-a-file"),
        "the token is masked"
    );
    assert!(text(&from_env).contains("console_addr = \"0.0.0.0:9081\""));
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("off"));
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
}

/// Console live feeds have their own bound: a browser tab's feed takes no seat from
/// StreamLeads subscribers, and feeds past `--console-max-feeds` get 503.
#[tokio::test]
async fn console_feeds_have_their_own_bound() {
    let app = TestApp::spawn_with(Options::default().args([
        "--console-max-feeds",
        "1",
        "--grpc-max-subscribers",
        "1",
    ]))
    .await;
    let live = format!("{}/api/live", console(&app));
    let first = within("a live feed", app.http.get(&live).send())
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = within("another live feed", app.http.get(&live).send())
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    let why: Value = second.json().await.unwrap();
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .contains("--console-max-feeds"),
        "{why}"
    );
    // The one StreamLeads seat is still free.
    let mut stream = app.stream(Default::default()).await;
    assert_eq!(app.lead("1").await.0, 200);
    assert_eq!(lead_id(&next_event(&mut stream).await), Some("1"));
    drop(first);
}
