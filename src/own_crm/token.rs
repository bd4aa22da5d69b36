//! Roistat's authentication: every request carries `user` (the integration login,
//! may be empty) and `token = md5(login + password)` as lowercase hex.

use std::fmt;

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// The token Roistat sends for a login and password: md5(login + password) in
/// lowercase hex.
pub fn token(login: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(login.as_bytes());
    hasher.update(password.as_bytes());
    format!("{:x}", hasher.finalize())
}

/// The credentials of a Roistat integration: Roistat sends `user` (the login, may be
/// empty) and `token = md5(login + password)` as lowercase hex.
#[derive(Clone)]
pub struct Credentials {
    login: Option<String>,
    token: SecretString,
}

/// Why credentials cannot be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("a Roistat token is 32 hexadecimal digits (md5 of login + password)")]
    MalformedToken,
}

impl Credentials {
    /// From the login and password set in Roistat's integration settings.
    pub fn from_password(login: &str, password: &SecretString) -> Self {
        Self {
            login: Some(login.to_owned()),
            token: SecretString::from(token(login, password.expose_secret())),
        }
    }

    /// From the token itself; `login`, when known, is checked against `user` too.
    pub fn from_token(login: Option<&str>, token: &SecretString) -> Result<Self, CredentialsError> {
        let token = token.expose_secret().trim().to_ascii_lowercase();
        if token.len() != 32 || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(CredentialsError::MalformedToken);
        }
        Ok(Self {
            login: login.map(str::to_owned),
            token: SecretString::from(token),
        })
    }

    /// The expected token.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The login `user` must match, when one is configured.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Checks a request's `user` and `token`. The token comparison takes the same
    /// time wherever the first difference is.
    pub fn verify(&self, user: Option<&str>, token: Option<&str>) -> Result<(), AuthError> {
        let token = token.map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let given = token.to_ascii_lowercase();
        let matches: bool = given
            .as_bytes()
            .ct_eq(self.token.expose_secret().as_bytes())
            .into();
        if !matches {
            return Err(AuthError::WrongToken);
        }
        match (
            user.map(str::trim).filter(|user| !user.is_empty()),
            &self.login,
        ) {
            (Some(user), Some(login)) if user != login => Err(AuthError::WrongUser),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    MissingToken,
    #[error("invalid token")]
    WrongToken,
    #[error("user does not match the integration login")]
    WrongUser,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_md5_of_login_and_password() {
        let credentials = Credentials::from_password("demo", &SecretString::from("secret"));
        let token = format!("{:x}", Md5::digest(b"demosecret"));
        assert_eq!(credentials.verify(Some("demo"), Some(&token)), Ok(()));
        assert_eq!(
            credentials.verify(None, Some(&token.to_uppercase())),
            Ok(())
        );
        assert_eq!(
            credentials.verify(Some("other"), Some(&token)),
            Err(AuthError::WrongUser)
        );
        assert_eq!(
            credentials.verify(Some("demo"), Some("0".repeat(32).as_str())),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            credentials.verify(Some("demo"), None),
            Err(AuthError::MissingToken)
        );
        assert!(!format!("{credentials:?}").contains(&token));
    }
    #[test]
    fn empty_login_and_password_give_the_md5_of_nothing() {
        let credentials = Credentials::from_password("", &SecretString::from(""));
        assert_eq!(
            credentials.verify(Some(""), Some("d41d8cd98f00b204e9800998ecf8427e")),
            Ok(())
        );
    }
    #[test]
    fn token_given_directly_must_be_hex() {
        assert!(Credentials::from_token(None, &SecretString::from("xyz")).is_err());
        let credentials = Credentials::from_token(
            None,
            &SecretString::from("6512BD43D9CAA6E02C990B0A82652DCA"),
        )
        .unwrap();
        assert_eq!(
            credentials.verify(Some("anyone"), Some("6512bd43d9caa6e02c990b0a82652dca")),
            Ok(())
        );
    }
}
