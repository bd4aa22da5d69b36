//! Persons at scale: a store of leads with repeat visitors filled with matching
//! off, the background match of it timed, and GetPerson's latency on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use roistat_leads::domain::{PersonSettings, PhoneRegion};
use roistat_leads::own_crm::{Params, parse_lead};
use roistat_leads::proto::GetPersonRequest;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use roistat_leads::relay::{LeadRelay, RelayOptions};
use tokio::task::JoinSet;

use crate::{connect, lead_query, percentile};

/// A small, repeatable generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Person `index`'s phone (a valid Russian mobile number).
fn phone(index: u64) -> String {
    format!("+7999{index:07}")
}

fn options(matching: bool) -> RelayOptions {
    let settings = PersonSettings {
        region: PhoneRegion::from_code("RU").expect("RU"),
        matching,
    };
    RelayOptions {
        persons: BTreeMap::from([("default".to_owned(), settings)]),
        ..RelayOptions::default()
    }
}

/// Stores `leads` leads, `writers` at a time, with matching off (or on): each
/// from a new person, or (with probability `returning`) from one seen before;
/// prints how many persons and the rate.
pub async fn fill(
    database_url: &str,
    leads: usize,
    returning: f64,
    matching: bool,
    writers: usize,
) -> anyhow::Result<()> {
    let store = roistat_leads::store::open(database_url, 1024).await?;
    let relay = LeadRelay::new(store.clone(), options(matching), Default::default());
    // Who sends each lead, decided up front so the run is repeatable.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut persons = 0u64;
    let owners: Vec<u64> = (0..leads)
        .map(|_| {
            let again = persons > 0 && (rng.next() % 1_000) as f64 / 1_000.0 < returning;
            if again {
                rng.next() % persons
            } else {
                persons += 1;
                persons - 1
            }
        })
        .collect();
    let owners = std::sync::Arc::new(owners);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for writer in 0..writers {
        let (relay, owners) = (relay.clone(), owners.clone());
        tasks.spawn(async move {
            for n in (writer..owners.len()).step_by(writers) {
                let owner = owners[n];
                let mut params: Params = lead_query(&format!("person-fill-{n}"))
                    .into_iter()
                    .collect();
                params.insert("phone", phone(owner));
                params.insert("email", format!("person{owner}@example.com"));
                let lead = parse_lead("default", &params).expect("a valid lead");
                relay.receive_lead(lead).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    store.close().await;
    println!(
        "person_fill leads={leads} persons={persons} returning={returning} matching={matching} \
         writers={writers} seconds={:.1} leads_per_s={:.0}",
        started.elapsed().as_secs_f64(),
        leads as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the background match over a store filled with matching off, and prints
/// its rate.
pub async fn backfill(database_url: &str, leads: usize) -> anyhow::Result<()> {
    let store = roistat_leads::store::open(database_url, 1024).await?;
    let relay = LeadRelay::new(store.clone(), options(true), Default::default());
    let started = Instant::now();
    relay.match_stored_leads().await;
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    println!(
        "person_backfill leads={leads} seconds={seconds:.1} leads_per_s={:.0}",
        leads as f64 / seconds
    );
    Ok(())
}

/// GetPerson by a random known person's phone, one call at a time, `requests`
/// times: its latency percentiles.
pub async fn probe(grpc: &str, persons: u64, requests: usize) -> anyhow::Result<()> {
    let mut client = LeadServiceClient::new(connect(grpc).await?);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut times: Vec<Duration> = Vec::with_capacity(requests);
    let mut leads = 0usize;
    for _ in 0..requests {
        let request = GetPersonRequest {
            phone: phone(rng.next() % persons),
            ..Default::default()
        };
        let started = Instant::now();
        let person = client.get_person(request).await?.into_inner();
        times.push(started.elapsed());
        leads += person.leads.len();
    }
    times.sort();
    println!(
        "get_person requests={requests} mean_leads={:.2} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        leads as f64 / requests as f64,
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
    Ok(())
}
