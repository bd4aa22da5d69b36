//! roistat-leads: receives Roistat's own-CRM webhooks, stores every lead durably and
//! exactly once, and serves the leads to internal services over gRPC.
//!
//! Data flows one way: Roistat request → [`own_crm`] decoding → [`domain`] →
//! [`relay`] → [`store`] (commit) → event feed → [`relay`] stream → [`grpc`].
//! The faces ([`http`], [`grpc`]) call the relay only and never each other;
//! [`domain`] imports none of the others; no module imports one above it.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub(crate) mod codec;
pub mod config;
#[cfg(feature = "console")]
pub(crate) mod console;
pub mod domain;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod net;
pub mod own_crm;
pub mod proto;
pub mod relay;
pub mod signal;
pub mod store;
pub mod telemetry;
