//! The benchmark's load client (run by `bench/run.sh`): what wrk cannot measure.
//!
//! ```text
//! bench e2e      --http URL --grpc URL --rate 1000 --seconds 10
//! bench fanout   --http URL --grpc URL --pid PID --subscribers 10000 --events 100
//! bench fill     --database-url URL --events 1000000
//! bench replay   --grpc URL --events 1000000 [--reader bulk|stock]
//! bench disk     --database-url URL
//! bench createdb --admin-url URL --name NAME
//! bench search   --console URL [--repeat 20]
//! bench flood    --url URL --requests 10000 [--rate 1000]
//! bench startup  --binary PATH --database-url URL
//! ```
//! Each prints one line of `key=value` results.

mod persons;
mod probes;
mod store;
mod streams;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use md5::{Digest, Md5};
use tonic::transport::Channel;

/// The client's allocator is the service's: decoding allocates as much as serving.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An OpenTelemetry collector that takes every span sent over OTLP/gRPC and
    /// counts them (on SIGTERM or Ctrl-C it prints the count).
    OtlpSink {
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
    /// Connections that each send a webhook body one byte short of what they
    /// declare and stall, before any token is checked: the service's resident
    /// memory while they hold, and a real webhook's answer meanwhile.
    Stall {
        #[arg(long)]
        http: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        #[arg(long, default_value_t = 1024 * 1024)]
        body_bytes: usize,
    },
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
    /// Many concurrent subscribers: memory per idle one, delivery to all, and the
    /// time from each event's commit to its last subscriber.
    Fanout {
        #[arg(long)]
        http: String,
        #[arg(long)]
        grpc: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        events: usize,
    },
    /// Fills a store with the seed's example lead, through the relay (group commit).
    Fill {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Fills a store with leads of persons (matching off), some returning.
    PersonFill {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        leads: usize,
        #[arg(long, default_value_t = 0.3)]
        returning: f64,
        /// Match persons while storing (the writer's cost of matching, without HTTP).
        #[arg(long)]
        matching: bool,
        /// Leads in flight at once.
        #[arg(long, default_value_t = 256)]
        writers: usize,
    },
    /// Matches a store's leads to persons (the background match) and times it.
    PersonBackfill {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        leads: usize,
    },
    /// GetPerson by random persons' phones, one at a time: latency percentiles.
    PersonProbe {
        #[arg(long)]
        grpc: String,
        /// Persons the fill made (its output says).
        #[arg(long)]
        persons: u64,
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
    },
    /// Streams a store's events to one client that decodes each one.
    Replay {
        #[arg(long)]
        grpc: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, value_enum, default_value_t = streams::Reader::Bulk)]
        reader: streams::Reader,
    },
    /// Disk used per stored lead, and what a year at 10 leads/s would take.
    Disk {
        #[arg(long)]
        database_url: String,
    },
    /// Creates an empty PostgreSQL database (dropping one of the same name).
    Createdb {
        #[arg(long)]
        admin_url: String,
        #[arg(long)]
        name: String,
    },
    /// Console searches on a filled store: each field's time to the first page.
    Search {
        #[arg(long)]
        console: String,
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
    /// Sends requests to one URL as fast as a few connections allow.
    Flood {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Requests a second at most; 0: as fast as they go.
        #[arg(long, default_value_t = 0)]
        rate: u64,
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

/// The seed's example lead (as `bench/lead.lua` sends it) under the id `id`.
fn lead_query(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("user", LOGIN.to_owned()),
        ("token", token()),
        ("action", "lead".to_owned()),
        ("id", id.to_owned()),
        ("visit", "12852".to_owned()),
        ("title", "Caught lead: 79990001122".to_owned()),
        ("text", "Data of the form: 79990001122".to_owned()),
        ("name", "Robert".to_owned()),
        ("phone", "+79990001122".to_owned()),
        ("email", "robert@example.com".to_owned()),
        (
            "data",
            r#"{"page":"https:\/\/example.com\/","640163":"test"}"#.to_owned(),
        ),
        ("created_date", "2015-06-28 09:12:54".to_owned()),
    ]
}

/// The `p` quantile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
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

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // The replaying client's connection is one thread, as a consumer reading one
    // stream in order would have: its connection and its decoding take turns on it,
    // with no hand-off between threads for every frame (the split reader hands
    // batches of messages to a second thread that decodes them).
    let runtime = match command {
        Command::Replay { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::E2e {
            http,
            grpc,
            rate,
            seconds,
        } => streams::e2e(&http, &grpc, rate, seconds).await,
        Command::Fanout {
            http,
            grpc,
            pid,
            subscribers,
            events,
        } => streams::fanout(&http, &grpc, pid, subscribers, events).await,
        Command::Fill {
            database_url,
            events,
        } => store::fill(&database_url, events).await,
        Command::Replay {
            grpc,
            events,
            reader,
        } => streams::replay(&grpc, events, reader).await,
        Command::PersonFill {
            database_url,
            leads,
            returning,
            matching,
            writers,
        } => persons::fill(&database_url, leads, returning, matching, writers).await,
        Command::PersonBackfill {
            database_url,
            leads,
        } => persons::backfill(&database_url, leads).await,
        Command::PersonProbe {
            grpc,
            persons,
            requests,
        } => persons::probe(&grpc, persons, requests).await,
        Command::Disk { database_url } => store::disk(&database_url).await,
        Command::Createdb { admin_url, name } => store::createdb(&admin_url, &name).await,
        Command::Search { console, repeat } => probes::search(&console, repeat).await,
        Command::Stall {
            http,
            pid,
            connections,
            body_bytes,
        } => probes::stall(&http, pid, connections, body_bytes).await,
        Command::Flood {
            url,
            requests,
            concurrency,
            rate,
        } => probes::flood(&url, requests, concurrency, rate).await,
        Command::Startup {
            binary,
            database_url,
        } => probes::startup(&binary, &database_url).await,
        Command::OtlpSink { addr } => probes::otlp_sink(addr).await,
    }
}
