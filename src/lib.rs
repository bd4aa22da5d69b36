//! roistat-leads: receives Roistat's own-CRM webhooks, stores every lead durably and
//! exactly once, and serves the leads to internal services over gRPC.
//!
//! Data flows one way: Roistat request → [`roistat`] decoding → [`domain`] →
//! [`store`] (commit) → event feed → [`grpc`] stream.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod relay;
pub mod roistat;
pub mod send;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod tls;

/// Code generated from `proto/roistat/leads/v1/leads.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("roistat.leads.v1");

    /// The encoded descriptors served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("leads_descriptor");
}
