//! Generates the gRPC code and the descriptor set served by reflection.
//! `protoc` comes from the protoc-bin-vendored crate, so no system install is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/roistat/leads/v1/leads.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("leads_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from(proto)],
            &[PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
