//! Where each setting came from, for `check-config`: a flag, the environment (by the
//! variable's name), the file.

use std::collections::BTreeMap;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::file::FileConfig;
use crate::cli::ServeArgs;

/// Where each setting came from: a flag or the environment (as clap saw it), else
/// the file.
pub(super) fn of(matches: &ArgMatches, file: Option<&std::path::Path>) -> BTreeMap<String, String> {
    let mut sources = BTreeMap::new();
    if let Some(path) = file {
        for key in FileConfig::keys(path) {
            sources.insert(key, "file".to_owned());
        }
    }
    let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let source = match matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .and(matches.value_source(id))
        {
            Some(ValueSource::CommandLine) => format!("flag --{}", id.replace('_', "-")),
            Some(ValueSource::EnvVariable) => match arg.get_env() {
                Some(name) => format!("env {}", name.to_string_lossy()),
                None => "env".to_owned(),
            },
            _ => continue,
        };
        sources.insert(id.to_owned(), source);
    }
    sources
}
