//! Generates the gRPC code and the descriptor set served by reflection. `protoc`
//! comes from the protoc-bin-vendored crate, so no system install is needed.
//!
//! Two passes over the same proto: the messages and the client, as every client
//! sees them; and the server alone, whose `StreamLeads` yields `EventFrame`s (events
//! already encoded, written to the stream as they are) through a codec that keeps
//! an idle stream's buffer small.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/roistat/leads/v1/leads.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let well_known = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), well_known];
    let config = || -> Result<prost_build::Config, Box<dyn std::error::Error>> {
        let mut config = prost_build::Config::new();
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        Ok(config)
    };

    // Maps are BTreeMaps (few entries each: cheaper than hashing, and in order), and
    // a LeadEvent's lead is boxed, so that moving an event moves a pointer: both
    // make decoding a stream cheaper for Rust clients.
    tonic_prost_build::configure()
        .btree_map(".")
        .boxed(".roistat.leads.v1.LeadEvent.event.lead")
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("leads_descriptor.bin"))
        .compile_with_config(config()?, &[PathBuf::from(proto)], &includes)?;

    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .btree_map(".")
        .boxed(".roistat.leads.v1.LeadEvent.event.lead")
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".roistat.leads.v1", "crate::proto")
        .extern_path(".roistat.leads.v1.LeadEvent", "crate::proto::EventFrame")
        .codec_path("crate::proto::LeanCodec")
        .compile_with_config(config()?, &[PathBuf::from(proto)], &includes)?;
    Ok(())
}
