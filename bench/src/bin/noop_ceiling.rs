//! The benchmark's ceiling: an axum server whose webhook handler decodes and parses
//! the same query string as roistat-leads (token check included) and answers at
//! once, storing nothing. What durable ingest is measured against.
//!
//! `cargo run --release -p roistat-leads-bench --bin noop_ceiling -- 127.0.0.1:18180`

use axum::Router;
use axum::extract::RawQuery;
use axum::routing::get;
use roistat_leads::own_crm::answer::OrderAnswer;
use roistat_leads::own_crm::{Credentials, Params, decode_form, parse_lead};
use secrecy::SecretString;

/// The allocator of the service's build (the ceiling uses the same): requests
/// allocate on one thread and free on another, which glibc's arenas make slow.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18180".to_owned());
    let credentials = Credentials::from_password("bench", &SecretString::from("bench"));
    let app = Router::new().route(
        "/webhook",
        get(move |RawQuery(query): RawQuery| {
            let credentials = credentials.clone();
            async move {
                let mut params = Params::new();
                decode_form(query.unwrap_or_default().as_bytes(), "query", &mut params);
                let verified = credentials.verify(params.get("user"), params.get("token"));
                match (verified, parse_lead("default", &params)) {
                    (Ok(()), Ok(lead)) => {
                        serde_json::to_string(&OrderAnswer::ok(&lead.lead_id)).unwrap()
                    }
                    _ => r#"{"status":"error"}"#.to_owned(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
