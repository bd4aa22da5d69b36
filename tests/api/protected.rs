//! Closed by construction: with neither a token nor client certificates (nor an
//! explicit opt-out), LeadService listens on loopback only, and refuses to start on
//! any other address; with a token, a peer that is not loopback is served only
//! with it; health and reflection stay open. A peer that is not loopback comes from
//! a network namespace of the test's own (see `namespace.rs`).

use std::net::SocketAddr;

use roistat_leads::proto::ListLeadsRequest;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;
use crate::namespace::{Namespace, OUTSIDE};

/// The gRPC port the service inside the namespace listens on.
fn grpc_port(app: &TestApp) -> u16 {
    app.grpc_addr
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port")
}

async fn list(channel: Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(ListLeadsRequest::default());
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    LeadServiceClient::new(channel)
        .list_leads(request)
        .await
        .map(|_| ())
}

/// Channels to the service: dialled at 192.0.2.1 (not loopback) and at 127.0.0.1.
async fn channels(namespace: &Namespace, app: &TestApp) -> (Channel, Channel) {
    let port = grpc_port(app);
    let outside: SocketAddr = format!("{OUTSIDE}:{port}").parse().unwrap();
    let loopback: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    (
        namespace.channel(outside).await,
        namespace.channel(loopback).await,
    )
}

#[tokio::test]
async fn lead_service_answers_other_peers_only_once_opened() {
    let Some(namespace) =
        Namespace::create("protected::lead_service_answers_other_peers_only_once_opened")
    else {
        return;
    };

    // Closed: on an address beyond loopback, without a way to tell callers apart,
    // it does not start, and says the three ways out.
    let refused = serve_refused(&["--grpc-addr", "0.0.0.0:0"], &[]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    for way_out in ["--grpc-token", "--grpc-tls-client-ca", "--grpc-insecure"] {
        assert!(message.contains(way_out), "{message}");
    }

    // With a token: a peer that is not loopback is refused without it, served
    // with it; health stays open.
    let with_token = TestApp::spawn_with(namespace.serve(Options::default().args([
        "--grpc-addr",
        "0.0.0.0:0",
        "--grpc-token",
        "opensesame",
    ])))
    .await;
    let (outside, loopback) = channels(&namespace, &with_token).await;
    assert!(list(outside.clone(), Some("opensesame")).await.is_ok());
    let anonymous = list(outside.clone(), None).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let local = list(loopback, None).await.unwrap_err();
    assert_eq!(
        local.code(),
        tonic::Code::Unauthenticated,
        "a loopback peer proves nothing: it needs the token too"
    );
    let health = HealthClient::new(outside)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving, "health stays open");

    // Opened explicitly: any peer, with a warning at start.
    let insecure = TestApp::spawn_with(
        namespace.serve(
            Options::default()
                .args(["--grpc-addr", "0.0.0.0:0"])
                .env("ROISTAT_LEADS_GRPC_INSECURE", "true"),
        ),
    )
    .await;
    let (outside, _) = channels(&namespace, &insecure).await;
    assert!(list(outside, None).await.is_ok());
    assert!(
        insecure
            .logs()
            .iter()
            .any(|line| line.contains("WARN") && line.contains("--grpc-insecure")),
        "{:?}",
        insecure.logs()
    );
}
