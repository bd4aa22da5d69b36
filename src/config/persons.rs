//! Persons' settings: the region phones without a country code are read in, and
//! whether leads are matched, for every integration (its `[[integrations]]` entry,
//! else the flag or environment, else the file's top level, else the default).

use std::collections::BTreeMap;

use super::ConfigError;
use super::file::FileConfig;
use crate::cli::ServeArgs;
use crate::domain::{PersonSettings, PhoneRegion};

pub(super) fn persons(
    args: &ServeArgs,
    file: &FileConfig,
    explicit: &dyn Fn(&str) -> bool,
    integrations: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, PersonSettings>, ConfigError> {
    let region_of = |code: &str| {
        PhoneRegion::from_code(code).ok_or_else(|| ConfigError::Invalid {
            key: "default_phone_region",
            reason: format!(
                "{code:?} is not a region with phone number metadata: use an ISO 3166 \
                 code such as RU, KZ or US"
            ),
        })
    };
    let region = match (&file.default_phone_region, explicit("default_phone_region")) {
        (Some(code), false) => region_of(code)?,
        _ => region_of(&args.default_phone_region)?,
    };
    let matching = match (file.person_matching, explicit("person_matching")) {
        (Some(matching), false) => matching,
        _ => args.person_matching,
    };
    let mut settings = BTreeMap::new();
    for name in integrations {
        let entry = file.integrations.iter().find(|entry| entry.name == name);
        let region = match entry.and_then(|entry| entry.default_phone_region.as_deref()) {
            Some(code) => region_of(code)?,
            None => region,
        };
        let matching = entry
            .and_then(|entry| entry.person_matching)
            .unwrap_or(matching);
        settings.insert(name, PersonSettings { region, matching });
    }
    Ok(settings)
}
