//! Probes: start-up, and a flood of requests to one URL.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinSet;

use crate::{LOGIN, PASSWORD, rss_kib};

/// `requests` requests to `url` from `concurrency` connections, at most `rate` a
/// second (0: as fast as they go).
pub async fn flood(
    url: &str,
    requests: usize,
    concurrency: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        workers.spawn(async move {
            let mut refused = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {}
                    _ => refused += 1,
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(done) = workers.join_next().await {
        refused += done?;
    }
    let elapsed = started.elapsed();
    println!(
        "flood requests={requests} not_ok={refused} seconds={:.2} requests_per_s={:.0}",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Times the console's searches on a store `bench fill` filled: each field, a
/// term that matches (the first page of up to 50) and one that matches nothing.
pub async fn search(console: &str, repeat: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let searches = [
        ("phone", "8 (999) 000-11-22"),
        ("phone", "+1 555 000 00 00"),
        ("email", "Robert@Example.com"),
        ("name", "rob"),
        ("name", "zz"),
        ("visit", "12852"),
        ("lead_id", "fill-7-1234"),
        ("order_id", "fill-7-1234"),
    ];
    let mut line = vec![];
    for (field, term) in searches {
        let mut times = Vec::with_capacity(repeat);
        let mut found = 0;
        for _ in 0..repeat {
            let started = Instant::now();
            let answer: serde_json::Value = client
                .post(format!("{console}/api/search"))
                .json(&serde_json::json!({"field": field, "term": term}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(started.elapsed());
            found = answer["results"].as_array().map_or(0, Vec::len);
        }
        times.sort();
        line.push(format!(
            "{field}:{}:found={found}:median_ms={:.1}:max_ms={:.1}",
            term.replace(' ', "_"),
            crate::percentile(&times, 0.5),
            crate::percentile(&times, 1.0)
        ));
    }
    println!("search {}", line.join(" "));
    Ok(())
}

pub async fn startup(binary: &str, database_url: &str) -> anyhow::Result<()> {
    let http = "127.0.0.1:18197";
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args([
            "serve",
            "--http-addr",
            http,
            "--grpc-addr",
            "127.0.0.1:18198",
            "--console-addr",
            "off",
            "--database-url",
            database_url,
        ])
        .env("ROISTAT_USER", LOGIN)
        .env("ROISTAT_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let client = reqwest::Client::new();
    let ready = loop {
        if let Ok(response) = client.get(format!("http://{http}/readyz")).send().await
            && response.status().is_success()
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id().context("exited")?;
    let rss = rss_kib(pid)?;
    child.kill().await?;
    println!(
        "startup ready_ms={:.1} idle_rss_kib={rss}",
        ready.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// `connections` connections each declare a body of `body_bytes`, send all of it
/// but the last byte, and stall (no token anywhere but in that body). Reports the
/// service's resident memory while they hold, the answers they got (the budget's
/// 503s), and the time a real webhook takes meanwhile.
pub async fn stall(
    http: &str,
    pid: u32,
    connections: usize,
    body_bytes: usize,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = http.trim_start_matches("http://").to_owned();
    let before = crate::rss_kib(pid)?;
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: bench\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {body_bytes}\r\n\r\n"
    );
    let body = vec![b'x'; body_bytes - 1];
    let mut held = JoinSet::new();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<bool>(connections);
    // Closed once the figures are taken: every connection then ends.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    for _ in 0..connections {
        let (address, head, body) = (address.clone(), head.clone(), body.clone());
        let (sent_tx, release) = (sent_tx.clone(), release.clone());
        held.spawn(async move {
            let Ok(mut socket) = tokio::net::TcpStream::connect(&address).await else {
                let _ = sent_tx.send(false).await;
                return;
            };
            let (mut reader, mut writer) = socket.split();
            let mut answer = [0u8; 12];
            // The body goes out until the service answers (the budget's 503, which
            // stops reading it) or it is all sent but the last byte.
            let sending = async {
                writer.write_all(head.as_bytes()).await?;
                writer.write_all(&body).await
            };
            let answered = tokio::select! {
                _ = sending => false,
                read = reader.read_exact(&mut answer) => read.is_ok(),
            };
            // The whole body sits in the socket's buffers: a refusal may come now.
            let answered = answered
                || tokio::time::timeout(Duration::from_millis(500), reader.read_exact(&mut answer))
                    .await
                    .is_ok_and(|read| read.is_ok());
            let _ = sent_tx
                .send(!(answered && answer.starts_with(b"HTTP/1.1 503")))
                .await;
            let _ = release.acquire().await;
            drop(socket);
        });
    }
    drop(sent_tx);
    // Held: no answer, the service waits for the last byte; refused: answered 503.
    let (mut stalled, mut refused) = (0, 0);
    // One word from each connection (they stay open, and so do their senders).
    for _ in 0..connections {
        let Some(held_body) = sent_rx.recv().await else {
            break;
        };
        if held_body {
            stalled += 1;
        } else {
            refused += 1;
        }
    }
    let during = crate::rss_kib(pid)?;
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .get(format!(
            "{http}/webhook?user=bench&token={}&action=lead&id=stall-probe",
            std::env::var("TOKEN").unwrap_or_default()
        ))
        .send()
        .await?;
    let status = answer.status().as_u16();
    let elapsed = started.elapsed();
    release.close();
    while held.join_next().await.is_some() {}
    println!(
        "stall connections={connections} body_bytes={body_bytes} held_unanswered={stalled} \
         answered_503={refused} rss_before_mib={:.1} rss_during_mib={:.1} \
         webhook_status={status} webhook_ms={:.1}",
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// An OTLP export request read without decoding its spans: a collector's own cost
/// is not the service's, and the sink shares the machine with it.
#[derive(Clone, PartialEq, prost::Message)]
struct RawExport {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    resource_spans: Vec<bytes::Bytes>,
}

/// `ExportTraceServiceResponse` with nothing rejected.
#[derive(Clone, PartialEq, prost::Message)]
struct Accepted {}

/// Takes OTLP/gRPC trace exports and counts their requests and bytes.
#[derive(Clone, Default)]
struct Sink {
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::UnaryService<RawExport> for Sink {
    type Response = Accepted;
    type Future = std::future::Ready<Result<tonic::Response<Accepted>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<RawExport>) -> Self::Future {
        use std::sync::atomic::Ordering::Relaxed;
        let bytes: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .map(|b| b.len())
            .sum();
        self.requests.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        std::future::ready(Ok(tonic::Response::new(Accepted {})))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Sink {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Accepted, RawExport>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(sink, request).await)
        })
    }
}

/// Serves an OTLP/gRPC trace collector on `addr` until SIGTERM or Ctrl-C, then
/// prints how many export requests and span bytes it took.
pub async fn otlp_sink(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let sink = Sink::default();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .add_service(sink.clone())
        .serve_with_shutdown(addr, async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "otlp_sink export_requests={} span_bytes={}",
        sink.requests.load(Relaxed),
        sink.bytes.load(Relaxed)
    );
    Ok(())
}
