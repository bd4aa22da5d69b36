//! A small WebDriver client: headless Chromium driven through chromedriver over
//! the W3C protocol (plain HTTP and JSON), enough for the console's browser tests.
//! Without Chromium and chromedriver the tests that need them are skipped with a
//! notice, or, in CI, fail.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{in_ci, within};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long an element or a text may take to appear.
const PATIENCE: Duration = Duration::from_secs(20);
/// The key WebDriver's JSON names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Child,
}

/// Where each test's screenshot goes.
pub fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

impl Browser {
    /// A headless Chromium, or `None` (after a visible notice) where Chromium or
    /// chromedriver is missing; in CI that fails the test instead.
    pub async fn start(test: &str) -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            let why = "Chromium and chromedriver are not installed";
            assert!(!in_ci(), "{test} cannot run in CI: {why}");
            let _ = writeln!(
                std::io::stderr(),
                "notice: {test} is SKIPPED: {why}; apt-get install chromium chromium-driver \
                 to enable it"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        within("chromedriver to start", async {
            while http.get(format!("{base}/status")).send().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        // Chromium runs as root here, hence no sandbox.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created: Value = within(
            "a browser session",
            http.post(format!("{base}/session"))
                .json(&capabilities)
                .send(),
        )
        .await
        .expect("chromedriver answers")
        .json()
        .await
        .expect("JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Some(Self {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = within("chromedriver", request.send())
            .await
            .expect("chromedriver answers");
        response.json::<Value>().await.expect("JSON")["value"].take()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    /// The first element `css` selects, waited for.
    pub async fn wait_for(&self, css: &str) -> String {
        within(&format!("an element {css}"), async {
            loop {
                if let Some(element) = self.find(css).await {
                    return element;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// Waits until the page's text (of `css`) contains `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) {
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                if self.text_of(css).await.contains(text) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{text:?} never appeared in {css}; it holds: {}",
            self.text_of(css).await
        );
    }

    /// The visible text of what `css` selects ("" when nothing does).
    pub async fn text_of(&self, css: &str) -> String {
        let script = "const node = document.querySelector(arguments[0]); \
                      return node ? node.innerText : '';";
        self.execute(script, json!([css]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Runs a script in the page; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// The text of an open alert dialog, if any.
    pub async fn alert(&self) -> Option<String> {
        let value = self.get("/alert/text").await;
        value.as_str().map(str::to_owned)
    }

    /// The browser console's messages at level SEVERE since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.post("/se/log", json!({"type": "browser"})).await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Sets the window's size, to see the page as a phone would.
    pub async fn resize(&self, width: u32, height: u32) {
        self.post(
            "/window/rect",
            json!({"width": width, "height": height, "x": 0, "y": 0}),
        )
        .await;
    }

    /// Saves what the browser shows as `target/console-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        let encoded = self.get("/screenshot").await;
        let png = decode_base64(encoded.as_str().expect("a screenshot"));
        std::fs::create_dir_all(screenshots()).unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {byte}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (n, digit)| {
            bits | u32::from(*digit) << (18 - 6 * n)
        });
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
