//! Starts the real `roistat-leads` binary on random ports with its own database,
//! and talks to it as Roistat (HTTP) and as an internal service (gRPC) would.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use roistat_leads::proto::{LeadEvent, StreamLeadsRequest};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::Channel;

pub const LOGIN: &str = "demo";
pub const PASSWORD: &str = "s3cret";
/// Every wait in the tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// md5(login + password), as Roistat computes it.
pub fn token_for(login: &str, password: &str) -> String {
    format!("{:x}", Md5::digest(format!("{login}{password}").as_bytes()))
}

pub fn token() -> String {
    token_for(LOGIN, PASSWORD)
}

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// How to start the service.
#[derive(Clone, Debug)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            args: vec![],
            env: vec![
                ("ROISTAT_USER".into(), LOGIN.into()),
                ("ROISTAT_PASSWORD".into(), PASSWORD.into()),
            ],
        }
    }
}

impl Options {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn without_env(mut self, name: &str) -> Self {
        self.env.retain(|(existing, _)| existing != name);
        self
    }
}

/// A running service.
pub struct TestApp {
    child: Child,
    pub http_base: String,
    pub grpc_addr: String,
    pub http: reqwest::Client,
    /// The database directory, kept across restarts.
    pub dir: Arc<TempDir>,
    options: Options,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn_on(options, dir).await
    }

    /// Starts the binary on the database in `dir` and waits until it listens.
    pub async fn spawn_on(options: Options, dir: Arc<TempDir>) -> Self {
        let database = format!("sqlite://{}", dir.path().join("leads.db").display());
        let mut command = Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command
            .arg("serve")
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--database-url", &database])
            .args(&options.args)
            .env_clear()
            .env("RUST_LOG", "info,roistat_leads::relay=debug")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start roistat-leads");

        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addresses, mut listening) = watch::channel(None);
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening") {
                    let http = field(&line, "http_addr=");
                    let grpc = field(&line, "grpc_addr=");
                    let _ = addresses.send(http.zip(grpc));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let started = tokio::time::timeout(TIMEOUT, listening.wait_for(Option::is_some)).await;
        let Ok(Ok(addresses)) = started else {
            panic!(
                "service did not start; logs:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        let (http, grpc) = addresses.clone().expect("addresses");
        Self {
            child,
            http_base: format!("http://{http}"),
            grpc_addr: format!("http://{grpc}"),
            http: reqwest::Client::new(),
            dir,
            options,
            logs,
        }
    }

    /// Stops the service gracefully (SIGTERM) and starts it again on the same database.
    pub async fn restart(mut self) -> Self {
        let status = self.terminate().await;
        assert!(status.success(), "graceful stop failed: {status}");
        Self::spawn_on(self.options.clone(), self.dir.clone()).await
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
        within("the process to exit", self.child.wait())
            .await
            .expect("wait")
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub async fn grpc(&self) -> LeadServiceClient<Channel> {
        within(
            "gRPC connect",
            LeadServiceClient::connect(self.grpc_addr.clone()),
        )
        .await
        .expect("connect gRPC")
    }

    pub async fn channel(&self) -> Channel {
        within(
            "gRPC connect",
            Channel::from_shared(self.grpc_addr.clone())
                .unwrap()
                .connect(),
        )
        .await
        .expect("connect gRPC")
    }

    /// `GET /webhook` with `params`, the right `user` and `token` added.
    pub async fn webhook(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let token = token();
        let mut query = vec![("user", LOGIN), ("token", token.as_str())];
        query.extend_from_slice(params);
        self.get_webhook(&query).await
    }

    /// `GET /webhook` with exactly `query`.
    pub async fn get_webhook(&self, query: &[(&str, &str)]) -> (u16, Value) {
        let request = self
            .http
            .get(format!("{}/webhook", self.http_base))
            .query(query);
        send(request).await
    }

    /// A minimal `action=lead` with the given id.
    pub async fn lead(&self, id: &str) -> (u16, Value) {
        self.webhook(&[
            ("action", "lead"),
            ("id", id),
            ("title", "Caught lead: 11230001122"),
        ])
        .await
    }

    /// GET of a raw path and query, sent as written.
    pub async fn get_raw(&self, path_and_query: &str) -> (u16, Value) {
        send(self.http.get(format!("{}{path_and_query}", self.http_base))).await
    }

    /// Opens StreamLeads.
    pub async fn stream(&self, request: StreamLeadsRequest) -> tonic::Streaming<LeadEvent> {
        within("StreamLeads", self.grpc().await.stream_leads(request))
            .await
            .expect("StreamLeads")
            .into_inner()
    }

    /// Every stored event before now: sends a marker message, then reads a stream
    /// from the start until the marker arrives. The marker is not returned, but it is stored.
    pub async fn stored_events(&self) -> Vec<LeadEvent> {
        static MARKERS: AtomicU64 = AtomicU64::new(1);
        let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
        let (status, _) = self
            .webhook(&[
                ("action", "message"),
                ("leadId", &marker),
                ("title", "marker"),
            ])
            .await;
        assert_eq!(status, 200);
        let mut stream = self.stream(StreamLeadsRequest::default()).await;
        let mut events = vec![];
        loop {
            let event = next_event(&mut stream).await;
            if lead_id(&event) == Some(marker.as_str()) {
                return events;
            }
            events.push(event);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- service logs ---\n{}", self.logs().join("\n"));
        }
    }
}

/// The next event of a stream, within the timeout.
pub async fn next_event(stream: &mut tonic::Streaming<LeadEvent>) -> LeadEvent {
    within("the next event", stream.message())
        .await
        .expect("stream error")
        .expect("stream ended")
}

/// The lead id an event is about.
pub fn lead_id(event: &LeadEvent) -> Option<&str> {
    use roistat_leads::proto::lead_event::Event;
    match event.event.as_ref()? {
        Event::Lead(lead) => Some(&lead.lead_id),
        Event::Message(message) => Some(&message.lead_id),
    }
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = within("the HTTP answer", request.send())
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.text().await.expect("body");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "body: {body}"
    );
    (status, serde_json::from_str(&body).expect("JSON body"))
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    let rest = &line[start..];
    Some(rest.split_whitespace().next()?.to_owned())
}

/// Query parameters as Roistat's documentation example sends them.
pub fn roistat_example_lead(id: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("action", "lead".to_owned()),
        ("id", id.to_owned()),
        ("visit", "9".to_owned()),
        ("title", "Caught lead: 11230001122".to_owned()),
        (
            "text",
            "Data of the form: 11230001122\nPromo-code: 1674".to_owned(),
        ),
        ("name", "Robert".to_owned()),
        ("phone", "+11230001122".to_owned()),
        ("email", "email@mail.com".to_owned()),
        (
            "data",
            r#"{"page":"http:\/\/site.com\/","640163":"test"}"#.to_owned(),
        ),
        ("created_date", "2015-06-28 09:12:54".to_owned()),
        ("manager_id", "12".to_owned()),
    ])
}
