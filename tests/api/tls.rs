//! TLS on both servers and mutual TLS on gRPC, with certificates made for each test
//! by a throwaway CA.

use std::path::{Path, PathBuf};
use std::process::Output;

use nix::sys::signal::Signal;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use roistat_leads::proto::GetLeadRequest;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{LOGIN, Options, TestApp, token, within};

/// A certificate authority and the PEM files it issued, in a directory of their own.
struct Pki {
    dir: TempDir,
    name: &'static str,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &'static str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        Self {
            dir,
            name,
            issuer: Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join(format!("{}.pem", self.name))
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca()).unwrap()
    }

    /// A certificate for `names` (DNS names or IP addresses) used as `usage`, valid
    /// until `until` (rcgen's default when `None`).
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        until: Option<time::OffsetDateTime>,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        if let Some(until) = until {
            params.not_after = until;
        }
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A server certificate for this machine, by name and by address.
    fn server(&self) -> Issued {
        self.server_named("server")
    }

    /// Another one, with a key of its own, in files named after `file`.
    fn server_named(&self, file: &str) -> Issued {
        self.server_until(file, None)
    }

    fn server_until(&self, file: &str, until: Option<time::OffsetDateTime>) -> Issued {
        self.issue(
            file,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            until,
        )
    }

    fn client(&self, name: &str) -> Issued {
        self.issue(name, &[name], ExtendedKeyUsagePurpose::ClientAuth, None)
    }
}

/// The certificate and key paths a service reads, and a function that installs an
/// issued pair there, rewriting the files in place as a renewal job would.
fn live_files() -> (TempDir, Issued, impl Fn(&Issued)) {
    let live = tempfile::tempdir().unwrap();
    let files = Issued {
        cert: live.path().join("live.crt"),
        key: live.path().join("live.key"),
    };
    let (cert, key) = (files.cert.clone(), files.key.clone());
    let install = move |issued: &Issued| {
        std::fs::copy(&issued.cert, &cert).unwrap();
        std::fs::copy(&issued.key, &key).unwrap();
    };
    (live, files, install)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// An HTTPS client that trusts only `ca`.
fn https_client(ca: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem()).unwrap())
        .build()
        .unwrap()
}

/// A gRPC channel over TLS that trusts `ca`, presenting `identity` if given.
async fn tls_channel(
    app: &TestApp,
    ca: &Pki,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.ca_pem()));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&identity.cert).unwrap(),
            std::fs::read(&identity.key).unwrap(),
        ));
    }
    within(
        "gRPC connect",
        Channel::from_shared(app.grpc_addr.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
}

/// GetLead of `id` over `channel`: the lead's id, or the status.
async fn get_lead(channel: Channel, id: &str) -> Result<String, tonic::Status> {
    let request = GetLeadRequest {
        lead_id: id.into(),
        ..Default::default()
    };
    within("GetLead", LeadServiceClient::new(channel).get_lead(request))
        .await
        .map(|response| response.into_inner().lead_id)
}

/// Runs the binary with `args` and no environment, to completion.
async fn run(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
        .args(args)
        .env_clear()
        .kill_on_drop(true)
        .output();
    within("the command", output).await.unwrap()
}

#[tokio::test]
async fn the_webhook_is_served_over_https_and_plain_http_is_refused_clearly() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let mut app = TestApp::spawn_with(
        Options::default()
            .args(["--http-tls-cert", &path(&server.cert)])
            .args(["--http-tls-key", &path(&server.key)]),
    )
    .await;
    assert!(app.http_base.starts_with("https://"), "{}", app.http_base);
    app.http = https_client(&pki);

    let (status, answer) = app.lead("over-tls").await;
    let plain_url = app.http_base.replacen("https://", "http://", 1);
    let plain = reqwest::Client::new()
        .get(format!("{plain_url}/webhook"))
        .query(&[
            ("user", LOGIN),
            ("token", &token()),
            ("action", "lead"),
            ("id", "plain"),
        ])
        .send()
        .await
        .unwrap();
    let plain_status = plain.status().as_u16();
    let plain_body: serde_json::Value = plain.json().await.unwrap();
    let untrusted = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&Pki::new("other").ca_pem()).unwrap())
        .build()
        .unwrap()
        .get(format!("{}/healthz", app.http_base))
        .send()
        .await;
    let sent = run(&[
        "send",
        "--url",
        &format!("{}/webhook", app.http_base),
        "--tls-ca",
        &path(&pki.ca()),
        "--roistat-user",
        LOGIN,
        "--roistat-token",
        &token(),
        "--id",
        "from-send",
    ])
    .await;
    let stored = app.stored_events().await;

    assert_eq!((status, answer["status"].as_str()), (200, Some("ok")));
    assert_eq!(plain_status, 400, "plain HTTP on the TLS port");
    assert_eq!(plain_body["status"], "error");
    assert!(
        plain_body["error"].as_str().unwrap().contains("https://"),
        "{plain_body}"
    );
    assert!(untrusted.is_err(), "a client that does not trust the CA");
    assert!(sent.status.success(), "{sent:?}");
    let ids: Vec<_> = stored.iter().filter_map(crate::helpers::lead_id).collect();
    assert_eq!(ids, ["over-tls", "from-send"]);
    assert!(app.terminate().await.success());
}

#[tokio::test]
async fn grpc_is_served_over_tls_from_the_environment() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let app = TestApp::spawn_with(
        Options::default()
            .env("ROISTAT_LEADS_GRPC_TLS_CERT", &path(&server.cert))
            .env("ROISTAT_LEADS_GRPC_TLS_KEY", &path(&server.key)),
    )
    .await;
    assert!(app.grpc_addr.starts_with("https://"), "{}", app.grpc_addr);
    let (status, _) = app.lead("1").await;
    assert_eq!(status, 200);

    let over_tls = get_lead(tls_channel(&app, &pki, None).await.unwrap(), "1").await;
    let plain_channel = Channel::from_shared(app.grpc_addr.replacen("https://", "http://", 1))
        .unwrap()
        .connect()
        .await;
    let plain = match plain_channel {
        Ok(channel) => get_lead(channel, "1").await.map_err(|status| status.code()),
        Err(_) => Err(tonic::Code::Unavailable),
    };
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
        .args(["tail", "--grpc-addr", &app.grpc_addr])
        .args(["--tls-ca", &path(&pki.ca())])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = within("a line from tail", lines.next_line()).await.unwrap();

    assert_eq!(over_tls.unwrap(), "1");
    assert!(plain.is_err(), "plain text on the TLS port: {plain:?}");
    let line = line.expect("tail printed a line");
    assert!(line.contains(r#""lead_id":"1""#), "{line}");
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let client = pki.client("consumer");
    let stranger_ca = Pki::new("stranger-ca");
    let stranger = stranger_ca.client("stranger");
    let mut app = TestApp::spawn_with(
        Options::default()
            .args(["--grpc-tls-cert", &path(&server.cert)])
            .args(["--grpc-tls-key", &path(&server.key)])
            .args(["--grpc-tls-client-ca", &path(&pki.ca())])
            // Beyond loopback: client certificates authenticate, so no warning.
            .args(["--grpc-addr", "0.0.0.0:0"])
            .in_a_process(),
    )
    .await;
    app.lead("1").await;
    // The service listens on every address; clients dial it on loopback.
    let port = app.grpc_addr.rsplit(':').next().unwrap().to_owned();
    app.grpc_addr = format!("https://127.0.0.1:{port}");

    let admitted = get_lead(tls_channel(&app, &pki, Some(&client)).await.unwrap(), "1").await;
    // Without an accepted certificate the handshake fails: at connect, or (TLS 1.3)
    // at the first call.
    let refused = |channel: Result<Channel, _>| async move {
        match channel {
            Ok(channel) => get_lead(channel, "1").await.is_err(),
            Err(_) => true,
        }
    };
    let anonymous = refused(tls_channel(&app, &pki, None).await).await;
    let foreign = refused(tls_channel(&app, &pki, Some(&stranger)).await).await;
    let health = HealthClient::new(tls_channel(&app, &pki, Some(&client)).await.unwrap())
        .check(HealthCheckRequest::default())
        .await;
    let tail = |identity: Option<&Issued>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command
            .args(["tail", "--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(["--tls-ca", &path(&pki.ca())])
            .env_clear()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(identity) = identity {
            command
                .args(["--tls-cert", &path(&identity.cert)])
                .args(["--tls-key", &path(&identity.key)]);
        }
        command.spawn().unwrap()
    };
    let tail_refused = within("tail without a certificate", tail(None).wait_with_output())
        .await
        .unwrap();
    let mut admitted_tail = tail(Some(&client));
    let mut lines = tokio::io::BufReader::new(admitted_tail.stdout.take().unwrap()).lines();
    let line = within("a line from tail", lines.next_line()).await.unwrap();

    assert_eq!(admitted.unwrap(), "1");
    assert!(anonymous, "a client without a certificate is refused");
    assert!(foreign, "a certificate from another CA is refused");
    assert!(health.is_ok(), "{health:?}");
    assert!(!tail_refused.status.success(), "{tail_refused:?}");
    assert!(line.unwrap_or_default().contains(r#""lead_id":"1""#));
    let logs = app.logs().join("\n");
    assert!(logs.contains("grpc_tls=mutual"), "{logs}");
    assert!(!logs.contains("beyond loopback"), "{logs}");
}

#[tokio::test]
async fn bad_tls_settings_stop_the_start_with_a_clear_error() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let other = pki.server_named("other");
    let missing = pki.dir.path().join("missing.pem");
    let base = ["check-config", "--roistat-token", &token()];
    let check = |extra: Vec<String>| {
        let mut args: Vec<String> = base.iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args).await
        }
    };
    let flags = |pairs: &[(&str, &Path)]| {
        pairs
            .iter()
            .flat_map(|(flag, file)| [(*flag).to_owned(), path(file)])
            .collect::<Vec<_>>()
    };

    let good = check(flags(&[
        ("--http-tls-cert", &server.cert),
        ("--http-tls-key", &server.key),
        ("--grpc-tls-cert", &server.cert),
        ("--grpc-tls-key", &server.key),
        ("--grpc-tls-client-ca", &pki.ca()),
    ]))
    .await;
    let cert_alone = check(flags(&[("--grpc-tls-cert", &server.cert)])).await;
    let mismatched = check(flags(&[
        ("--http-tls-cert", &server.cert),
        ("--http-tls-key", &other.key),
    ]))
    .await;
    let unreadable = check(flags(&[
        ("--grpc-tls-cert", &missing),
        ("--grpc-tls-key", &server.key),
    ]))
    .await;
    let key_as_cert = check(flags(&[
        ("--grpc-tls-cert", &server.key),
        ("--grpc-tls-key", &server.key),
    ]))
    .await;
    let ca_without_tls = check(flags(&[("--grpc-tls-client-ca", &pki.ca())])).await;
    let served = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
        .args(["serve", "--roistat-token", &token()])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .args(["--console-addr", "127.0.0.1:0"])
        .args([
            "--database-url",
            &format!("sqlite://{}", path(&pki.dir.path().join("db"))),
        ])
        .args(flags(&[
            ("--http-tls-cert", &server.cert),
            ("--http-tls-key", &other.key),
        ]))
        .env_clear()
        .kill_on_drop(true)
        .output();
    let served = within("serve", served).await.unwrap();

    let stdout = String::from_utf8_lossy(&good.stdout);
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(good.status.success(), "{good:?}");
    assert!(
        stdout.contains(&format!("grpc_tls_client_ca = {:?}", path(&pki.ca()))),
        "{stdout}"
    );
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert_eq!(cert_alone.status.code(), Some(2));
    assert!(
        stderr(&cert_alone).contains("--grpc-tls-key"),
        "{cert_alone:?}"
    );
    for refused in [&mismatched, &unreadable, &key_as_cert, &ca_without_tls] {
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    }
    assert!(stderr(&mismatched).contains("server.crt"), "{mismatched:?}");
    assert!(
        stderr(&unreadable).contains("missing.pem"),
        "{unreadable:?}"
    );
    assert!(
        stderr(&key_as_cert).contains("no PEM certificate"),
        "{key_as_cert:?}"
    );
    assert!(
        stderr(&ca_without_tls).contains("grpc_tls_client_ca needs"),
        "{ca_without_tls:?}"
    );
    assert_eq!(
        served.status.code(),
        Some(2),
        "serve refuses too: {served:?}"
    );
}

#[tokio::test]
async fn tls_files_can_come_from_the_config_file() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let config = pki.dir.path().join("roistat-leads.toml");
    let https = format!(
        "http_tls_cert = {:?}\nhttp_tls_key = {:?}\n",
        path(&server.cert),
        path(&server.key),
    );
    // A certificate without its key first, then a whole pair.
    let half_grpc = format!("grpc_tls_cert = {:?}\n", path(&server.cert));
    std::fs::write(&config, format!("{https}{half_grpc}")).unwrap();
    let half = run(&[
        "check-config",
        "--roistat-token",
        &token(),
        "--config",
        &path(&config),
    ])
    .await;
    std::fs::write(&config, &https).unwrap();
    let mut app = TestApp::spawn_with(Options::default().args(["--config", &path(&config)])).await;
    app.http = https_client(&pki);
    let (status, _) = app.lead("1").await;

    assert_eq!(half.status.code(), Some(2), "{half:?}");
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("give both grpc_tls_cert and grpc_tls_key"),
        "{half:?}"
    );
    assert!(app.http_base.starts_with("https://"));
    assert!(app.grpc_addr.starts_with("http://"), "gRPC stays plain");
    assert_eq!(status, 200);
}

/// Whether a fresh HTTPS client that trusts only `ca` gets an answer (a pooled
/// connection would keep its first handshake).
async fn https_trusted_by(app: &TestApp, ca: &Pki) -> bool {
    https_client(ca)
        .get(format!("{}/healthz", app.http_base))
        .send()
        .await
        .is_ok()
}

/// Whether a new gRPC channel that trusts only `ca` gets a health answer.
async fn grpc_trusted_by(app: &TestApp, ca: &Pki) -> bool {
    match tls_channel(app, ca, None).await {
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificates_and_a_broken_file_keeps_the_previous_ones() {
    let old_ca = Pki::new("old-ca");
    let new_ca = Pki::new("new-ca");
    let (_live, Issued { cert, key }, install) = live_files();
    install(&old_ca.server());
    let mut app = TestApp::spawn_with(
        Options::default()
            .args([
                "--http-tls-cert",
                &path(&cert),
                "--http-tls-key",
                &path(&key),
            ])
            .args([
                "--grpc-tls-cert",
                &path(&cert),
                "--grpc-tls-key",
                &path(&key),
            ])
            .in_a_process(),
    )
    .await;
    let trusted_by = async |ca: &Pki| {
        (
            https_trusted_by(&app, ca).await,
            grpc_trusted_by(&app, ca).await,
        )
    };
    let before = trusted_by(&old_ca).await;

    std::fs::write(&cert, "not a certificate").unwrap();
    app.signal(Signal::SIGHUP);
    app.wait_for_logs("cannot reload TLS certificates", 2).await;
    let after_broken = trusted_by(&old_ca).await;

    install(&new_ca.server());
    app.signal(Signal::SIGHUP);
    app.wait_for_logs("TLS certificates reloaded", 2).await;
    let renewed = trusted_by(&new_ca).await;
    let stale = trusted_by(&old_ca).await;
    app.http = https_client(&new_ca);
    let (status, _) = app.lead("after-renewal").await;

    assert_eq!(before, (true, true));
    assert_eq!(
        after_broken,
        (true, true),
        "a broken file keeps the old ones"
    );
    assert_eq!(renewed, (true, true), "the new certificate is served");
    assert_eq!(stale, (false, false), "the old one is no longer served");
    assert_eq!(status, 200);
    assert!(app.terminate().await.success(), "SIGHUP did not end it");
}

#[tokio::test]
async fn certificate_expiry_is_a_metric_and_a_warning_when_near() {
    let pki = Pki::new("ca");
    let soon = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        + time::Duration::days(5);
    let later = time::macros::datetime!(2040-01-01 00:00:00 UTC);
    let (_live, Issued { cert, key }, install) = live_files();
    install(&pki.server_until("soon", Some(soon)));
    let mut app = TestApp::spawn_with(
        Options::default()
            .args([
                "--http-tls-cert",
                &path(&cert),
                "--http-tls-key",
                &path(&key),
            ])
            .in_a_process(),
    )
    .await;
    app.http = https_client(&pki);
    let expiry = async |app: &TestApp| {
        let text = app.scrape().await;
        assert!(
            text.contains("# HELP roistat_leads_tls_certificate_expiry_timestamp_seconds "),
            "described, as every metric is: {text}"
        );
        text.lines()
            .find_map(|line| {
                line.strip_prefix(
                    r#"roistat_leads_tls_certificate_expiry_timestamp_seconds{server="http"} "#,
                )
            })
            .map(|value| value.parse::<f64>().unwrap())
    };
    let at_start = expiry(&app).await;
    let warned = app
        .logs()
        .iter()
        .any(|line| line.contains("WARN") && line.contains("expires soon"));

    install(&pki.server_until("later", Some(later)));
    app.signal(Signal::SIGHUP);
    app.wait_for_logs("TLS certificates reloaded", 1).await;
    let after_renewal = expiry(&app).await;

    assert_eq!(at_start, Some(soon.unix_timestamp() as f64));
    assert!(warned, "{:?}", app.logs());
    assert_eq!(after_renewal, Some(later.unix_timestamp() as f64));
}

#[tokio::test]
async fn the_console_is_served_with_the_webhooks_certificate_and_a_secure_cookie() {
    let pki = Pki::new("ca");
    let server = pki.server();
    let app = TestApp::spawn_with(
        Options::default()
            .args(["--http-tls-cert", &path(&server.cert)])
            .args(["--http-tls-key", &path(&server.key)])
            .args(["--console-token", "console-token-of-24-characters"]),
    )
    .await;
    let console = app.console_base.clone().expect("the console listens");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{console}/login"))
        .form(&[("token", "console-token-of-24-characters")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let plain = reqwest::Client::new()
        .get(console.replacen("https://", "http://", 1))
        .send()
        .await;

    assert!(console.starts_with("https://"), "{console}");
    assert_eq!(login.status(), 303);
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        plain.map_or(true, |answer| !answer.status().is_success()),
        "no plain HTTP"
    );
}

/// `probe` asks the configured HTTP address for `/readyz`, over HTTPS when the
/// webhook has a certificate (whatever the certificate): 0 when ready, 1 when there
/// is no service.
#[tokio::test]
async fn probe_asks_the_configured_address_over_http_or_https() {
    let pki = Pki::new("probe-ca");
    let server = pki.server();
    let tls_flags = [
        "--http-tls-cert".to_owned(),
        path(&server.cert),
        "--http-tls-key".to_owned(),
        path(&server.key),
    ];
    let plain = TestApp::spawn_with(Options::default()).await;
    let https = TestApp::spawn_with(
        Options::default()
            .args(["--http-tls-cert", &path(&server.cert)])
            .args(["--http-tls-key", &path(&server.key)]),
    )
    .await;
    let probe = |addr: String, tls: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command
            .args(["probe", "--http-addr", &addr, "--roistat-token", &token()])
            .env_clear()
            .kill_on_drop(true);
        if tls {
            command.args(&tls_flags);
        }
        async move { within("probe", command.output()).await.unwrap() }
    };
    let addr = |app: &TestApp| app.http_base.rsplit("//").next().unwrap().to_owned();

    let ready = probe(addr(&plain), false).await;
    let ready_tls = probe(addr(&https), true).await;
    let port = addr(&plain).rsplit(':').next().unwrap().to_owned();
    // An unspecified listening address is this machine.
    let unspecified = probe(format!("0.0.0.0:{port}"), false).await;
    drop(plain);
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing = unused.local_addr().unwrap().to_string();
    drop(unused);
    let gone = probe(nothing, false).await;

    assert!(ready.status.success(), "{ready:?}");
    assert!(ready_tls.status.success(), "{ready_tls:?}");
    assert!(unspecified.status.success(), "{unspecified:?}");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect"));
}
