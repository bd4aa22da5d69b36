//! Protected mode: with neither a token nor client certificates, LeadService
//! answers loopback peers only and tells any other peer how to open it up; health
//! and reflection stay open. A peer that is not loopback comes from a network
//! namespace of the test's own (see `namespace.rs`).

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

    // Protected: loopback only, and the refusal names the ways out.
    let protected = TestApp::spawn_with(namespace.serve(Options::default())).await;
    let (outside, loopback) = channels(&namespace, &protected).await;
    let refused = list(outside.clone(), None).await.unwrap_err();
    let health = HealthClient::new(outside)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let local = list(loopback, None).await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    for way_out in ["--grpc-token", "--grpc-tls-client-ca", "--grpc-insecure"] {
        assert!(refused.message().contains(way_out), "{refused:?}");
    }
    assert_eq!(health.status(), ServingStatus::Serving, "health stays open");
    assert!(local.is_ok(), "loopback is served: {local:?}");
    assert!(
        protected
            .logs()
            .iter()
            .any(|line| line.contains("protected mode")),
        "{:?}",
        protected.logs()
    );

    // Opened explicitly: any peer, with a warning at start.
    let insecure = TestApp::spawn_with(
        namespace.serve(Options::default().env("ROISTAT_LEADS_GRPC_INSECURE", "true")),
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

    // With a token: any peer that carries it.
    let with_token = TestApp::spawn_with(
        namespace.serve(Options::default().args(["--grpc-token", "opensesame"])),
    )
    .await;
    let (outside, _) = channels(&namespace, &with_token).await;
    assert!(list(outside.clone(), Some("opensesame")).await.is_ok());
    let anonymous = list(outside, None).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}
