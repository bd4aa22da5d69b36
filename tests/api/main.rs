//! Integration tests: the real binary on random ports, over real HTTP and gRPC.

mod bounds;
mod console;
mod console_browser;
mod consumers;
mod crm;
mod deals;
mod durability;
mod fidelity;
mod golden;
mod grpc;
mod helpers;
mod lifecycle;
mod metrics;
mod namespace;
mod never_refused;
mod operability;
mod persons;
mod persons_restart;
mod protected;
mod replicas;
mod stream;
mod tls;
mod traces;
mod webdriver;
mod webhook;
