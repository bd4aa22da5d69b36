//! Every integration's Roistat credentials, from flags, the environment, the file's
//! top level, its `[[integrations]]` entries, and secret files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;
use super::file::FileConfig;
use crate::cli::ServeArgs;
use crate::domain::DEFAULT_INTEGRATION;
use crate::own_crm::Credentials;

/// The credentials of one integration, as given somewhere.
#[derive(Default)]
struct CredentialSource {
    login: Option<String>,
    password: Option<SecretString>,
    token: Option<SecretString>,
}

impl CredentialSource {
    fn is_empty(&self) -> bool {
        self.login.is_none() && self.password.is_none() && self.token.is_none()
    }

    fn build(self, what: &str, allow_empty: bool) -> Result<Credentials, ConfigError> {
        let login = self.login.as_deref();
        let empty = |secret: &Option<SecretString>| {
            secret
                .as_ref()
                .is_some_and(|secret| secret.expose_secret().trim().is_empty())
        };
        if empty(&self.password) || empty(&self.token) {
            if !allow_empty {
                return Err(ConfigError::EmptyPassword(what.to_owned()));
            }
            // What Roistat sends when the password is empty.
            let nothing = SecretString::from(String::new());
            return Ok(Credentials::from_password(
                login.unwrap_or_default(),
                &nothing,
            ));
        }
        match (&self.password, &self.token) {
            (Some(_), Some(_)) => Err(ConfigError::PasswordAndToken(what.to_owned())),
            (Some(password), None) => Ok(Credentials::from_password(
                login.unwrap_or_default(),
                password,
            )),
            (None, Some(token)) => {
                Credentials::from_token(login, token).map_err(|source| ConfigError::Credentials {
                    what: what.to_owned(),
                    source,
                })
            }
            (None, None) => Err(ConfigError::NoSecret(what.to_owned())),
        }
    }
}

/// Reads a secret from a file (as container secrets are mounted), without the
/// trailing newline editors add.
pub(super) fn read_secret(path: &Path) -> Result<SecretString, ConfigError> {
    let path = credential_path(path, std::env::var_os("CREDENTIALS_DIRECTORY"));
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Where a secret's file is: a relative path names a credential systemd hands the
/// service (`LoadCredential=`) when `$CREDENTIALS_DIRECTORY` is set, else a file
/// relative to the working directory.
fn credential_path(path: &Path, credentials: Option<std::ffi::OsString>) -> PathBuf {
    match credentials {
        Some(dir) if path.is_relative() && !dir.is_empty() => PathBuf::from(dir).join(path),
        _ => path.to_owned(),
    }
}

/// A secret given as a value or as a file, not both.
pub(super) fn one_of(
    value: Option<String>,
    file: Option<&PathBuf>,
    what: &str,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::ValueAndFile(what.to_owned())),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => read_secret(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Integration names appear in URLs: keep them plain.
pub(super) fn validate_integration_name(name: &str) -> Result<(), ConfigError> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::IntegrationName(name.to_owned()))
    }
}

/// Every integration's default status: the default one's from flags or
/// environment, else the file's top level, else its `[[integrations]]` entry.
pub(super) fn default_statuses(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut statuses = BTreeMap::new();
    let default = args.default_status.clone().or(file.default_status.clone());
    if let Some(status) = default {
        statuses.insert(DEFAULT_INTEGRATION.to_owned(), status);
    }
    for entry in &file.integrations {
        if let Some(status) = &entry.default_status {
            statuses.entry(entry.name.clone()).or_insert(status.clone());
        }
    }
    for status in statuses.values() {
        crate::domain::validate_id("default_status", status).map_err(|error| {
            ConfigError::Invalid {
                key: "default_status",
                reason: error.to_string(),
            }
        })?;
    }
    Ok(statuses)
}

/// Every integration's credentials. The default one (plain /webhook) takes them
/// from flags or environment, else from the file's top level, else from an
/// `[[integrations]]` entry named "default".
pub(super) fn integrations(
    args: &ServeArgs,
    file: &FileConfig,
    allow_empty: bool,
) -> Result<BTreeMap<String, Credentials>, ConfigError> {
    let mut integrations = BTreeMap::new();
    let from_flags = CredentialSource {
        login: args.roistat_user.clone(),
        password: args.roistat_password.clone(),
        token: args.roistat_token.clone(),
    };
    let from_file = CredentialSource {
        login: file.roistat_user.clone(),
        password: one_of(
            file.roistat_password.clone(),
            file.roistat_password_file.as_ref(),
            "roistat_password",
        )?,
        token: one_of(
            file.roistat_token.clone(),
            file.roistat_token_file.as_ref(),
            "roistat_token",
        )?,
    };
    let default = if from_flags.password.is_some() || from_flags.token.is_some() {
        Some(from_flags)
    } else if !from_file.is_empty() {
        Some(CredentialSource {
            login: from_flags.login.or(from_file.login),
            ..from_file
        })
    } else {
        None
    };
    if let Some(default) = default {
        integrations.insert(
            DEFAULT_INTEGRATION.to_owned(),
            default.build(
                "the default integration (ROISTAT_PASSWORD or ROISTAT_TOKEN)",
                allow_empty,
            )?,
        );
    }
    for entry in &file.integrations {
        validate_integration_name(&entry.name)?;
        let what = format!("integration {:?}", entry.name);
        if integrations.contains_key(&entry.name) {
            if entry.name == DEFAULT_INTEGRATION {
                continue; // flags or the top level already set it
            }
            return Err(ConfigError::DuplicateIntegration(entry.name.clone()));
        }
        let source = CredentialSource {
            login: entry.login.clone(),
            password: one_of(entry.password.clone(), entry.password_file.as_ref(), &what)?,
            token: one_of(entry.token.clone(), entry.token_file.as_ref(), &what)?,
        };
        integrations.insert(entry.name.clone(), source.build(&what, allow_empty)?);
    }
    if integrations.is_empty() {
        return Err(ConfigError::NoCredentials);
    }
    Ok(integrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_names_are_plain() {
        assert!(validate_integration_name("shop-b").is_ok());
        assert!(validate_integration_name("Shop B").is_err());
        assert!(validate_integration_name("").is_err());
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[test]
    fn a_relative_secret_file_is_a_systemd_credential_when_there_are_any() {
        let dir = Some(std::ffi::OsString::from(
            "/run/credentials/roistat-leads.service",
        ));
        assert_eq!(
            credential_path(Path::new("roistat_password"), dir.clone()),
            PathBuf::from("/run/credentials/roistat-leads.service/roistat_password")
        );
        assert_eq!(
            credential_path(Path::new("/etc/secret"), dir),
            PathBuf::from("/etc/secret")
        );
        assert_eq!(
            credential_path(Path::new("secret"), None),
            PathBuf::from("secret")
        );
    }
}
