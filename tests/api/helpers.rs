//! Starts the service on random ports with its own database, and talks to it as
//! Roistat (HTTP) and as an internal service (gRPC) would. The service runs in the
//! test's own process (`Application::build` on port 0, from the same command line
//! the binary parses), or, for what needs one (signals, SIGKILL, its log, a
//! network namespace), as the real binary in a process of its own
//! ([`Options::in_a_process`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
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
use sqlx::Connection;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
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

/// A database of the test's own: a SQLite file in a temporary directory, or a
/// fresh PostgreSQL database (dropped when the last user is gone).
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.path().join("leads.db").display()),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new database on the server `TEST_DATABASE_URL` names; `None` without it.
    pub async fn postgres() -> Option<Self> {
        static DATABASES: AtomicU64 = AtomicU64::new(1);
        let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
            assert!(
                !in_ci(),
                "CI is set but TEST_DATABASE_URL is not: the PostgreSQL tests cannot be skipped in CI"
            );
            // Written to stderr directly: the test harness would capture `eprintln!`.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "notice: TEST_DATABASE_URL is not set: the PostgreSQL variants of the tests are skipped"
                );
            });
            return None;
        };
        let name = format!(
            "roistat_leads_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = url_with_database(&admin_url, &name);
        Some(Self {
            url,
            _dir: None,
            postgres: Some((admin_url, name)),
        })
    }

    /// An administrative connection to the server of a PostgreSQL test database.
    pub async fn admin(&self) -> sqlx::PgConnection {
        let (admin_url, _) = self.postgres.as_ref().expect("a PostgreSQL database");
        sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect")
    }

    /// A connection to a SQLite test database, as an operator's would be.
    pub fn sqlite_conn(&self) -> rusqlite::Connection {
        let path = self
            .url
            .strip_prefix("sqlite://")
            .expect("a SQLite database");
        let path = path.split('?').next().unwrap_or(path);
        rusqlite::Connection::open(path).expect("open the SQLite database")
    }

    /// Runs `sql` on the database directly, as an operator (or a fault) would.
    pub async fn execute(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            self.sqlite_conn().execute_batch(sql).unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }

    /// The integer a query returns (its first row's first column).
    pub async fn query_int(&self, sql: &str) -> i64 {
        if self.url.starts_with("sqlite:") {
            self.sqlite_conn()
                .query_row(sql, [], |row| row.get(0))
                .unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }

    /// The PostgreSQL database name.
    pub fn name(&self) -> &str {
        &self.postgres.as_ref().expect("a PostgreSQL database").1
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a small one of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Whether the tests run in CI, where every dependency is present and a test may
/// not skip itself for lack of one.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// `url` with its path (the database name) replaced by `database`.
fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The storage backends a behavioural test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to start the service.
#[derive(Clone, Debug)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub database: Arc<TestDatabase>,
    /// A command the service runs under (`ip netns exec NAME`), if any.
    pub wrapper: Vec<String>,
    /// Run the binary in a process of its own.
    pub process: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self::on(Arc::new(TestDatabase::sqlite()))
    }
}

impl Options {
    /// Default options on `database`.
    pub fn on(database: Arc<TestDatabase>) -> Self {
        Self {
            args: vec![],
            env: default_env(),
            database,
            wrapper: vec![],
            process: false,
        }
    }

    /// Runs the real binary in a process of its own, for a test that signals or
    /// kills it, reads its log, or sets what only a process has.
    pub fn in_a_process(mut self) -> Self {
        self.process = true;
        self
    }

    /// Default options on a new database of `backend`; `None` when that backend
    /// is not available here (PostgreSQL without `TEST_DATABASE_URL`).
    pub async fn for_backend(backend: Backend) -> Option<Self> {
        let database = match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres().await?,
        };
        Some(Self::on(Arc::new(database)))
    }

    /// Default options on a new database of the same backend.
    pub async fn on_a_new_database(&self) -> Self {
        let backend = if self.database.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        Self::for_backend(backend)
            .await
            .expect("the backend of a running test")
    }

    /// Default options on the same database.
    pub fn same_database(&self) -> Self {
        Self::on(self.database.clone())
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<const N: usize>(mut self, args: [&str; N]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
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
    running: Running,
    pub http_base: String,
    pub grpc_addr: String,
    /// The operator console's URL, unless it is off.
    pub console_base: Option<String>,
    pub http: reqwest::Client,
    pub options: Options,
    logs: Arc<Mutex<Vec<String>>>,
}

/// How the service under test runs.
enum Running {
    /// The binary, with a task copying its standard error into the logs until it
    /// closes.
    Process {
        child: Child,
        log_reader: Option<tokio::task::JoinHandle<()>>,
    },
    /// In the test's process, served by a task until `shutdown`.
    InProcess {
        shutdown: CancellationToken,
        served: Option<tokio::task::JoinHandle<bool>>,
    },
}

/// The environment every test's service gets unless the test changes it: the
/// integration's login and password.
fn default_env() -> Vec<(String, String)> {
    vec![
        ("ROISTAT_USER".into(), LOGIN.into()),
        ("ROISTAT_PASSWORD".into(), PASSWORD.into()),
    ]
}

/// The flags every test's service starts with unless the test gives them:
/// random loopback ports and the test's database.
fn default_flags(options: &Options) -> Vec<(&'static str, String)> {
    [
        ("--http-addr", "127.0.0.1:0".to_owned()),
        ("--grpc-addr", "127.0.0.1:0".to_owned()),
        ("--console-addr", "127.0.0.1:0".to_owned()),
        ("--database-url", options.database.url.clone()),
    ]
    .into_iter()
    .filter(|(flag, _)| !options.args.iter().any(|arg| arg == flag))
    .collect()
}

/// The test's environment as `serve`'s flags (the service in the test's process
/// cannot have an environment of its own); `None` when a variable is not one of
/// them.
fn env_as_flags(options: &Options) -> Option<Vec<String>> {
    use clap::CommandFactory;
    let command = roistat_leads::cli::Cli::command();
    let serve = command.find_subcommand("serve")?;
    let mut flags = vec![];
    for (name, value) in &options.env {
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))?;
        let long = format!("--{}", arg.get_long()?);
        let given = |arg: &String| arg == &long || arg.starts_with(&format!("{long}="));
        if options.args.iter().any(given) {
            // A flag beats the environment.
            continue;
        }
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            if value == "true" {
                flags.push(long);
            }
        } else {
            flags.push(format!("{long}={value}"));
        }
    }
    Some(flags)
}

impl TestApp {
    /// Starts the service with `options` and waits until it listens: in the test's
    /// process unless the options ask for a process of its own, run it under a
    /// wrapper, or set an environment of their own (which is then what the test is
    /// about).
    pub async fn spawn_with(options: Options) -> Self {
        if !options.process
            && options.wrapper.is_empty()
            && options.env == default_env()
            && let Some(env_flags) = env_as_flags(&options)
        {
            return Self::in_process(options, env_flags).await;
        }
        Self::spawn_process(options).await
    }

    /// `Application::build` from the command line `serve` would be given.
    async fn in_process(options: Options, env_flags: Vec<String>) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        use roistat_leads::cli::{Cli, Command as CliCommand};
        let mut argv = vec!["roistat-leads".to_owned(), "serve".to_owned()];
        for (flag, value) in default_flags(&options) {
            argv.extend([flag.to_owned(), value]);
        }
        argv.extend(env_flags);
        argv.extend(options.args.iter().cloned());
        let matches = Cli::command()
            .try_get_matches_from(&argv)
            .unwrap_or_else(|error| panic!("the command line {argv:?}: {error}"));
        let cli = Cli::from_arg_matches(&matches).expect("parsed");
        let CliCommand::Serve(args) = cli.command else {
            unreachable!("serve was asked for");
        };
        let sub = matches.subcommand().expect("serve").1.clone();
        let settings = roistat_leads::config::load(args, &sub)
            .unwrap_or_else(|error| panic!("the settings of {argv:?}: {error}"));
        let (http_tls, grpc_tls) = (settings.http_tls.is_some(), settings.grpc_tls.is_some());
        let app = roistat_leads::app::Application::build(settings)
            .await
            .unwrap_or_else(|error| panic!("the service did not start: {error:?}"));
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let http_base = format!("{}://{}", scheme(http_tls), app.http_addr().expect("HTTP"));
        let grpc_addr = format!("{}://{}", scheme(grpc_tls), app.grpc_addr().expect("gRPC"));
        let console_base = app
            .console_addr()
            .map(|addr| format!("{}://{addr}", scheme(http_tls)));
        let shutdown = app.shutdown_token();
        let served = tokio::spawn(async move { app.run().await.is_ok() });
        Self {
            running: Running::InProcess {
                shutdown,
                served: Some(served),
            },
            http_base,
            grpc_addr,
            console_base,
            http: reqwest::Client::new(),
            options,
            logs: Arc::default(),
        }
    }

    /// Starts the binary with `options` and waits until it listens.
    async fn spawn_process(options: Options) -> Self {
        let binary = env!("CARGO_BIN_EXE_roistat-leads");
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.arg("serve");
        for (flag, value) in default_flags(&options) {
            command.args([flag, value.as_str()]);
        }
        command
            .args(&options.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
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
        let log_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening") {
                    // Each address as a URL, its scheme telling whether TLS is on.
                    let scheme = |name: &str, plain: &str| {
                        if field(&line, name).is_some_and(|value| value != plain) {
                            "https"
                        } else {
                            "http"
                        }
                    };
                    let http = field(&line, "http_addr=")
                        .map(|addr| format!("{}://{addr}", scheme("http_tls=", "false")));
                    let grpc = field(&line, "grpc_addr=")
                        .map(|addr| format!("{}://{addr}", scheme("grpc_tls=", "off")));
                    let console = field(&line, "console_addr=")
                        .filter(|addr| addr != "none")
                        .map(|addr| format!("{}://{addr}", scheme("http_tls=", "false")));
                    let _ =
                        addresses.send(http.zip(grpc).map(|(http, grpc)| (http, grpc, console)));
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
        let (http, grpc, console) = addresses.clone().expect("addresses");
        Self {
            running: Running::Process {
                child,
                log_reader: Some(log_reader),
            },
            http_base: http,
            grpc_addr: grpc,
            console_base: console,
            http: reqwest::Client::new(),
            options,
            logs,
        }
    }

    /// The process of a service started with [`Options::in_a_process`].
    fn child(&mut self, what: &str) -> &mut Child {
        match &mut self.running {
            Running::Process { child, .. } => child,
            Running::InProcess { .. } => {
                panic!("{what} needs the service in a process: use Options::in_a_process()")
            }
        }
    }

    /// Stops the service gracefully (SIGTERM) and starts it again on the same database.
    pub async fn restart(mut self) -> Self {
        let status = self.terminate().await;
        assert!(status.success(), "graceful stop failed: {status}");
        Self::spawn_with(self.options.clone()).await
    }

    /// Stops the service gracefully (SIGTERM to a process) and waits for it to end
    /// (and, for a process, its last log line).
    pub async fn terminate(&mut self) -> ExitStatus {
        let (child, log_reader) = match &mut self.running {
            Running::InProcess { shutdown, served } => {
                shutdown.cancel();
                let served = served.take().expect("served once");
                let ok = within("the service to stop", served).await.unwrap_or(false);
                return ExitStatus::from_raw(if ok { 0 } else { 1 << 8 });
            }
            Running::Process { child, log_reader } => (child, log_reader),
        };
        let pid = child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
        let status = within("the process to exit", child.wait())
            .await
            .expect("wait");
        if let Some(reader) = log_reader.take() {
            let _ = within("the end of the logs", reader).await;
        }
        status
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would, and waits.
    pub async fn kill(&mut self) {
        let child = self.child("SIGKILL");
        let pid = child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("send SIGKILL");
        within("the process to die", child.wait())
            .await
            .expect("wait");
    }

    /// The service's log so far.
    pub fn logs(&self) -> Vec<String> {
        if let Running::InProcess { .. } = self.running {
            panic!("reading the log needs the service in a process: use Options::in_a_process()");
        }
        self.logs.lock().unwrap().clone()
    }

    /// Waits until `count` log lines contain `text`.
    pub async fn wait_for_logs(&self, text: &str, count: usize) {
        if let Running::InProcess { .. } = self.running {
            panic!("reading the log needs the service in a process: use Options::in_a_process()");
        }
        let seen = || {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(text))
                .count()
        };
        within(&format!("{count} log lines with {text:?}"), async {
            while seen() < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: Signal) {
        let Running::Process { child, .. } = &self.running else {
            panic!("a signal needs the service in a process: use Options::in_a_process()");
        };
        let pid = child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), signal).expect("send a signal");
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

    /// A minimal `action=lead` with the given id, as a future that owns what it
    /// needs, to be spawned (a webhook held open, concurrent retries).
    pub fn lead_request(&self, id: &str) -> impl Future<Output = (u16, Value)> + Send + 'static {
        let request = self
            .http
            .get(format!("{}/webhook", self.http_base))
            .query(&[
                ("user", LOGIN),
                ("token", &token()),
                ("action", "lead"),
                ("id", id),
            ]);
        send(request)
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

    /// The text of a GET of `url` (a page, a scrape), whatever its status.
    pub async fn page(&self, url: &str) -> String {
        let response = within(url, self.http.get(url).send()).await.unwrap();
        within(url, response.text()).await.unwrap()
    }

    /// The text of this service's `/metrics` on its HTTP port.
    pub async fn scrape(&self) -> String {
        self.page(&format!("{}/metrics", self.http_base)).await
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
        match &self.running {
            Running::InProcess { shutdown, .. } => shutdown.cancel(),
            Running::Process { .. } if std::thread::panicking() => {
                eprintln!("--- service logs ---\n{}", self.logs().join("\n"));
            }
            Running::Process { .. } => {}
        }
    }
}

/// Waits until `/readyz` answers `status`: readiness is checked in the background.
/// Runs `roistat-leads check-config` with these arguments and only this environment.
pub async fn check_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
    command
        .arg("check-config")
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    within("check-config", command.output()).await.unwrap()
}

/// Runs `roistat-leads serve` with these arguments and only this environment (and
/// Roistat credentials), for a start that is refused: its output once it exits.
pub async fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
    command.arg("serve");
    for (flag, default) in [
        ("--database-url", "sqlite::memory:"),
        ("--http-addr", "127.0.0.1:0"),
        ("--grpc-addr", "127.0.0.1:0"),
        ("--console-addr", "off"),
    ] {
        if !args.contains(&flag) {
            command.args([flag, default]);
        }
    }
    command
        .args(args)
        .env_clear()
        .env("ROISTAT_USER", LOGIN)
        .env("ROISTAT_PASSWORD", PASSWORD)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    within("serve to refuse to start", command.output())
        .await
        .unwrap()
}

pub async fn wait_for_readiness(app: &TestApp, status: u16) {
    within(&format!("/readyz to answer {status}"), async {
        while app.get_raw("/readyz").await.0 != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Sends a lead for each id to `app`, `concurrency` at a time, each with `text`;
/// every answer must be ok.
pub async fn send_leads_concurrently(
    app: &TestApp,
    ids: Vec<String>,
    concurrency: usize,
    text: &str,
) {
    let mut senders = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(concurrency).max(1)) {
        let (http, url, text, chunk) = (
            app.http.clone(),
            format!("{}/webhook", app.http_base),
            text.to_owned(),
            chunk.to_vec(),
        );
        senders.spawn(async move {
            for id in chunk {
                let response = http
                    .get(&url)
                    .query(&[
                        ("user", LOGIN),
                        ("token", &token()),
                        ("action", "lead"),
                        ("id", &id),
                        ("text", &text),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "lead {id}");
            }
        });
    }
    while let Some(sent) = within("the webhooks", senders.join_next()).await {
        sent.unwrap();
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
        Event::Task(task) => Some(&task.element_id),
        Event::Call(call) => Some(&call.call_id),
        Event::UnknownAction(unknown) => Some(&unknown.action),
        Event::PersonsMerged(merged) => Some(&merged.lead_id),
        Event::PersonSplit(split) => Some(&split.unlinked),
        Event::Heartbeat(_) => None,
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

/// A field of a log line, in text (`name=value`) or JSON (`"fields":{"name":...}`) form.
pub fn field(line: &str, name: &str) -> Option<String> {
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return value["fields"][name.trim_end_matches('=')]
            .as_str()
            .map(str::to_owned);
    }
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

/// Runs behavioural tests, each an `async fn(Options)`, against every backend: as
/// `NAME::sqlite` always, and as `NAME::postgres` where `TEST_DATABASE_URL` names a
/// server (else it is skipped with a notice). Each run gets a fresh database.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let options = $crate::helpers::Options::for_backend($crate::helpers::Backend::Sqlite).await;
                    super::$name(options.expect("SQLite is always available")).await
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(options) =
                        $crate::helpers::Options::for_backend($crate::helpers::Backend::Postgres).await
                    {
                        super::$name(options).await
                    }
                }
            }
        )*
    };
}
pub(crate) use backend_tests;
