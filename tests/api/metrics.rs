//! Metrics an SRE can alert on from the first scrape: every metric the source
//! defines is described (HELP and TYPE) and, where its labels are known in advance,
//! present at start-up. The metric names are read from the source itself (the
//! catalogue in `src/telemetry/`, through which every metric is recorded), so a
//! metric added later is held to the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::helpers::*;

/// Metrics whose series exist only once what they describe does, and why.
const SERIES_COME_LATER: &[(&str, &str)] = &[(
    "roistat_leads_consumer_pending",
    "one series per named consumer; none exist at start-up",
)];

/// Metrics only a particular set-up has, and the test that checks them there.
const ONLY_WITH: &[(&str, &str)] = &[
    (
        "roistat_leads_tls_certificate_expiry_timestamp_seconds",
        "TLS: tls.rs, certificate_expiry_is_a_metric_and_a_warning_when_near",
    ),
    (
        "roistat_leads_postgres_pool_connections",
        "PostgreSQL: the_store_and_each_grpc_method_have_their_figures",
    ),
    (
        "roistat_leads_postgres_pool_waiting",
        "PostgreSQL: the_store_and_each_grpc_method_have_their_figures",
    ),
];

backend_tests!(the_store_and_each_grpc_method_have_their_figures);

/// The value of the sample `series` (its name and labels as scraped), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

async fn the_store_and_each_grpc_method_have_their_figures(options: Options) {
    let postgres = options.database.url.starts_with("postgres");
    let app = TestApp::spawn_with(options.in_a_process()).await;
    app.lead("1").await;
    let mut grpc = app.grpc().await;
    let missing = roistat_leads::proto::GetLeadRequest {
        lead_id: "none".into(),
        ..Default::default()
    };
    let status = grpc.get_lead(missing).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let found = roistat_leads::proto::GetLeadRequest {
        lead_id: "1".into(),
        ..Default::default()
    };
    grpc.get_lead(found).await.unwrap();

    let scrape = app.scrape().await;

    let get_lead = "/roistat.leads.v1.LeadService/GetLead";
    let calls = |code: &str| {
        let series =
            format!("roistat_leads_grpc_requests_total{{method=\"{get_lead}\",code=\"{code}\"}}");
        value(&scrape, &series)
    };
    assert_eq!(calls("OK"), Some(1.0), "{scrape}");
    assert_eq!(calls("NOT_FOUND"), Some(1.0), "{scrape}");
    let latency = format!("roistat_leads_grpc_request_seconds_count{{method=\"{get_lead}\"}}");
    assert_eq!(value(&scrape, &latency), Some(2.0), "{scrape}");
    // A stream's length is no latency.
    assert!(!scrape.contains(
        "roistat_leads_grpc_request_seconds_count{method=\"/roistat.leads.v1.LeadService/StreamLeads\"}"
    ));
    let backend = if postgres { "postgresql" } else { "sqlite" };
    let commits = format!("roistat_leads_store_commit_seconds_count{{backend=\"{backend}\"}}");
    assert!(
        value(&scrape, &commits).is_some_and(|count| count >= 1.0),
        "{scrape}"
    );
    let has = |name: &str| scrape.lines().any(|line| line.starts_with(name));
    if postgres {
        assert!(has(
            r#"roistat_leads_postgres_pool_connections{state="in_use"}"#
        ));
        assert!(has(
            r#"roistat_leads_postgres_pool_connections{state="idle"}"#
        ));
        assert!(has("roistat_leads_postgres_pool_waiting "));
        assert!(!has("roistat_leads_sqlite_log_bytes"));
    } else {
        assert!(has("roistat_leads_sqlite_log_bytes "));
        assert!(has("roistat_leads_sqlite_checkpoint_seconds_count"));
        assert!(!has("roistat_leads_postgres_pool"));
    }
    for name in [
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
    ] {
        assert!(has(name), "{name} in {scrape}");
    }
}

/// The `.rs` files under `dir`, with their text.
fn sources(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path, text));
        }
    }
    found
}

/// Every `"roistat_leads_…"` string literal of the telemetry catalogue: the metrics'
/// names. Recording a metric anywhere else fails the test.
fn defined_metrics() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = BTreeSet::new();
    for (path, text) in sources(&src) {
        let in_catalogue = path.starts_with(src.join("telemetry"));
        for macro_call in ["counter!(", "gauge!(", "histogram!("] {
            assert!(
                in_catalogue || !text.contains(macro_call),
                "{} records a metric itself: add it to the catalogue in src/telemetry/",
                path.display()
            );
        }
        if !in_catalogue {
            continue;
        }
        for (at, _) in text.match_indices("\"roistat_leads_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if text[at + 1 + name.len()..].starts_with('"') {
                names.insert(name);
            }
        }
    }
    names
}

/// What a scrape says of each metric: its HELP text, TYPE, and how many samples.
#[derive(Debug, Default)]
struct Described {
    help: String,
    kind: String,
    samples: usize,
}

fn describe(text: &str) -> BTreeMap<String, Described> {
    let mut metrics: BTreeMap<String, Described> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            metrics.entry(name.to_owned()).or_default().help = help.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            metrics.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if !line.is_empty() && !line.starts_with('#') {
            let series = line.split([' ', '{']).next().unwrap();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = series.strip_suffix(suffix)?;
                    metrics
                        .get(base)
                        .is_some_and(|m| m.kind == "histogram")
                        .then_some(base)
                })
                .unwrap_or(series);
            metrics.entry(name.to_owned()).or_default().samples += 1;
        }
    }
    metrics
}

#[tokio::test]
async fn every_metric_is_described_and_present_from_start_up() {
    let defined = defined_metrics();
    assert!(
        defined.len() >= 10,
        "the metric names were not found in the source: {defined:?}"
    );
    let app = TestApp::spawn_with(Options::default().in_a_process()).await;
    let scrape = app.scrape().await;
    let scraped = describe(&scrape);

    let mut wrong = vec![];
    for name in &defined {
        if ONLY_WITH.iter().any(|(only, _)| only == name) {
            continue;
        }
        let Some(metric) = scraped.get(name) else {
            wrong.push(format!("{name}: not in the scrape at all"));
            continue;
        };
        if metric.help.trim().len() < 10 {
            wrong.push(format!("{name}: no HELP that says what it measures"));
        }
        if metric.kind.is_empty() {
            wrong.push(format!("{name}: no TYPE"));
        }
        let later = SERIES_COME_LATER.iter().any(|(later, _)| later == name);
        if metric.samples == 0 && !later {
            wrong.push(format!("{name}: no series at start-up"));
        }
    }
    for name in scraped.keys() {
        if name.starts_with("roistat_leads_") && !defined.contains(name) {
            wrong.push(format!(
                "{name}: scraped, but its name is not in the source"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n\nthe scrape:\n{scrape}",
        wrong.join("\n")
    );

    // The label values known in advance are all there, at zero.
    for series in [
        r#"roistat_leads_webhooks_total{integration="default",action="lead",outcome="ok"} 0"#,
        r#"roistat_leads_webhooks_total{integration="default",action="message",outcome="bad_request"} 0"#,
        r#"roistat_leads_leads_total{integration="default",source="calltracking"} 0"#,
        r#"roistat_leads_retries_deduplicated_total{kind="call"} 0"#,
        r#"roistat_leads_refused_requests_total{stage="before_token",reason="wrong_token"} 0"#,
        "roistat_leads_stream_subscribers 0",
    ] {
        assert!(
            scrape.lines().any(|line| line == series),
            "{series} is not in the scrape:\n{scrape}"
        );
    }
}
