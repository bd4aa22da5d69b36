//! The benchmark's load client (run by `bench/run.sh`): what wrk cannot measure.
//!
//! ```text
//! bench e2e      --http URL --grpc URL --rate 1000 --seconds 10
//! bench fanout   --http URL --grpc URL --pid PID --subscribers 1000 --events 20
//! bench fill     --database-url sqlite://PATH --events 1000000
//! bench replay   --grpc URL --events 1000000
//! bench startup  --binary PATH --database-url URL
//! ```
//! Each prints one line of `key=value` results.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use md5::{Digest, Md5};
use roistat_leads::proto::StreamLeadsRequest;
use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use roistat_leads::relay::{LeadRelay, RelayOptions};
use roistat_leads::roistat::{Params, parse_lead};
use tokio::task::JoinSet;
use tonic::transport::Channel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Webhook → gRPC subscriber latency at a fixed rate.
    E2e {
        #[arg(long)]
        http: String,
        #[arg(long)]
        grpc: String,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Many concurrent subscribers: memory per idle one, and delivery to all.
    Fanout {
        #[arg(long)]
        http: String,
        #[arg(long)]
        grpc: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 20)]
        events: usize,
    },
    /// Fills a store with leads, through the store itself (group commit).
    Fill {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Streams a store's events to one client.
    Replay {
        #[arg(long)]
        grpc: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Start-up time (to a ready /readyz) and idle memory.
    Startup {
        #[arg(long)]
        binary: String,
        #[arg(long)]
        database_url: String,
    },
}

const LOGIN: &str = "bench";
const PASSWORD: &str = "bench";

fn token() -> String {
    format!("{:x}", Md5::digest(format!("{LOGIN}{PASSWORD}").as_bytes()))
}

fn lead_query(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("user", LOGIN.to_owned()),
        ("token", token()),
        ("action", "lead".to_owned()),
        ("id", id.to_owned()),
        ("visit", "12852".to_owned()),
        ("title", "Caught lead: 79990001122".to_owned()),
        ("name", "Robert".to_owned()),
        ("phone", "+79990001122".to_owned()),
        ("data", r#"{"page":"https://example.com/"}"#.to_owned()),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

async fn connect(grpc: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(grpc.to_owned())?.connect().await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::E2e {
            http,
            grpc,
            rate,
            seconds,
        } => e2e(&http, &grpc, rate, seconds).await,
        Command::Fanout {
            http,
            grpc,
            pid,
            subscribers,
            events,
        } => fanout(&http, &grpc, pid, subscribers, events).await,
        Command::Fill {
            database_url,
            events,
        } => fill(&database_url, events).await,
        Command::Replay { grpc, events } => replay(&grpc, events).await,
        Command::Startup {
            binary,
            database_url,
        } => startup(&binary, &database_url).await,
    }
}

async fn e2e(http: &str, grpc: &str, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = LeadServiceClient::new(connect(grpc).await?)
        .stream_leads(StreamLeadsRequest {
            only_new: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let total = rate * seconds;
    let run = std::process::id();
    let client = reqwest::Client::new();
    let url = format!("{http}/webhook");
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            let mut requests = JoinSet::new();
            for n in 0..total {
                ticks.tick().await;
                let id = format!("e2e-{run}-{n}");
                sent.lock().unwrap().insert(id.clone(), Instant::now());
                let request = client.get(&url).query(&lead_query(&id)).send();
                requests.spawn(async move {
                    request.await.map(|response| response.status().is_success())
                });
            }
            let mut failures = 0;
            while let Some(done) = requests.join_next().await {
                if !matches!(done, Ok(Ok(true))) {
                    failures += 1;
                }
            }
            failures
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    while latencies.len() < total as usize {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("no event for 30 s")??
            .context("stream ended")?;
        let received = Instant::now();
        if let Some(Event::Lead(lead)) = event.event
            && let Some(started) = sent.lock().unwrap().remove(&lead.lead_id)
        {
            latencies.push(received - started);
        }
    }
    let failures = sender.await?;
    latencies.sort();
    println!(
        "e2e rate={rate}/s events={} failures={failures} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    Ok(())
}

async fn fanout(
    http: &str,
    grpc: &str,
    pid: u32,
    subscribers: usize,
    events: usize,
) -> anyhow::Result<()> {
    // The server allows a bounded number of streams per connection: spread them.
    const STREAMS_PER_CONNECTION: usize = 100;
    let before = rss_kib(pid)?;
    let mut channels = vec![];
    for _ in 0..subscribers.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(connect(grpc).await?);
    }
    let mut streams = vec![];
    for n in 0..subscribers {
        let mut client = LeadServiceClient::new(channels[n / STREAMS_PER_CONNECTION].clone());
        let stream = client
            .stream_leads(StreamLeadsRequest {
                only_new: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        streams.push(stream);
    }
    // Let the server settle its per-stream state before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid)?;
    let per_subscriber = (idle.saturating_sub(before)) as f64 / subscribers as f64;

    let started = Instant::now();
    let mut readers = JoinSet::new();
    for mut stream in streams {
        readers.spawn(async move {
            let mut received = 0;
            while received < events {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(event))) if matches!(event.event, Some(Event::Lead(_))) => {
                        received += 1
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
            }
            received
        });
    }
    let client = reqwest::Client::new();
    for n in 0..events {
        let id = format!("fanout-{}-{n}", std::process::id());
        let response = client
            .get(format!("{http}/webhook"))
            .query(&lead_query(&id))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("webhook answered {}", response.status());
        }
    }
    let mut complete = 0;
    while let Some(received) = readers.join_next().await {
        if received? == events {
            complete += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "fanout subscribers={subscribers} events={events} complete_subscribers={complete} deliveries={} \
         seconds={:.3} deliveries_per_s={:.0} rss_before_kib={before} rss_idle_kib={idle} kib_per_idle_subscriber={per_subscriber:.1}",
        complete * events,
        elapsed.as_secs_f64(),
        (complete * events) as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}

async fn fill(database_url: &str, events: usize) -> anyhow::Result<()> {
    const WRITERS: usize = 256;
    let store = roistat_leads::store::open(database_url, 1024).await?;
    let relay = LeadRelay::new(store.clone(), RelayOptions::default(), Default::default());
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let relay = relay.clone();
        let count = events / WRITERS + usize::from(writer < events % WRITERS);
        writers.spawn(async move {
            for n in 0..count {
                let params: Params = lead_query(&format!("fill-{writer}-{n}"))
                    .into_iter()
                    .collect();
                let lead = parse_lead("default", &params).expect("a valid lead");
                relay.receive_lead(lead).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    store.close().await;
    println!(
        "fill events={events} seconds={:.1} leads_per_s={:.0}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn replay(grpc: &str, events: u64) -> anyhow::Result<()> {
    let mut client =
        LeadServiceClient::new(connect(grpc).await?).max_decoding_message_size(16 * 1024 * 1024);
    let started = Instant::now();
    let mut stream = client
        .stream_leads(StreamLeadsRequest::default())
        .await?
        .into_inner();
    let mut received = 0u64;
    let mut last = 0;
    while received < events {
        let event = stream.message().await?.context("stream ended early")?;
        if event.sequence <= last {
            bail!("sequence {} after {last}", event.sequence);
        }
        last = event.sequence;
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "replay events={received} seconds={:.2} events_per_s={:.0}",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn startup(binary: &str, database_url: &str) -> anyhow::Result<()> {
    let http = "127.0.0.1:18197";
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args([
            "serve",
            "--http-addr",
            http,
            "--grpc-addr",
            "127.0.0.1:18198",
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
