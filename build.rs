//! Generates the gRPC code and the descriptor set served by reflection. `protoc`
//! comes from the protoc-bin-vendored crate, so no system install is needed.
//!
//! Two passes over the same proto: the messages and the client, as every client
//! sees them; and the server alone, without `StreamLeads`, which the service
//! serves beside it (`src/grpc/stream.rs`) writing stored events to the stream as
//! they are.

use std::path::PathBuf;

use prost::Message;

const SERVICE: &str = "LeadService";
const SERVED_BESIDE: &str = "StreamLeads";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sqlite_migrations()?;
    commit();
    let proto = "proto/roistat/leads/v1/leads.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let well_known = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), well_known];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    // Maps are BTreeMaps (few entries each: cheaper than hashing, and in order), and
    // what a LeadEvent carries is boxed, so that an event is a few words and moving
    // one (through every layer of a client's stream) moves a pointer: both make
    // decoding a stream cheaper for Rust clients.
    let descriptors = out_dir.join("leads_descriptor.bin");
    tonic_prost_build::configure()
        .btree_map(".")
        .boxed(".roistat.leads.v1.LeadEvent.event")
        .build_server(false)
        .file_descriptor_set_path(&descriptors)
        .compile_with_config(config, &[PathBuf::from(proto)], &includes)?;

    // The server from the same descriptors, less the method served beside it and
    // the files the proto imports (their types are the messages generated above).
    let mut set = prost_types::FileDescriptorSet::decode(std::fs::read(&descriptors)?.as_slice())?;
    set.file
        .retain(|file| file.name() == "roistat/leads/v1/leads.proto");
    let service = set
        .file
        .iter_mut()
        .flat_map(|file| file.service.iter_mut())
        .find(|service| service.name() == SERVICE)
        .ok_or("the proto has no LeadService")?;
    let methods = service.method.len();
    service
        .method
        .retain(|method| method.name() != SERVED_BESIDE);
    if service.method.len() + 1 != methods {
        return Err("LeadService has no StreamLeads method".into());
    }
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".roistat.leads.v1", "crate::proto")
        .compile_fds_with_config(set, prost_build::Config::new())?;
    Ok(())
}

/// The SQLite migrations, embedded in the order of their versions: the file name
/// says each one's version and description, as sqlx's migrator read them, whose
/// record the store keeps (`src/store/sqlite/migrate.rs`).
fn sqlite_migrations() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("migrations/sqlite");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut migrations = vec![];
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let Some(stem) = name.strip_suffix(".sql") else {
            continue;
        };
        let (version, description) = stem
            .split_once('_')
            .ok_or_else(|| format!("{name}: a migration is named VERSION_DESCRIPTION.sql"))?;
        let version: i64 = version
            .parse()
            .map_err(|_| format!("{name}: its version is not a number"))?;
        migrations.push((version, description.replace('_', " "), path.clone()));
    }
    migrations.sort();
    let mut list = String::from("&[\n");
    for (version, description, path) in &migrations {
        list.push_str(&format!(
            "    Migration {{ version: {version}, description: {description:?}, sql: include_str!({path:?}) }},\n",
            path = path.display().to_string()
        ));
    }
    list.push_str("]\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("sqlite_migrations.rs");
    std::fs::write(out, list)?;
    Ok(())
}

/// The commit the build is of, for `--version` and the build-info metric: `git
/// rev-parse` where the source is a git checkout with git at hand, else "unknown"
/// (a source archive, an image's build context).
fn commit() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ROISTAT_LEADS_COMMIT={commit}");
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
