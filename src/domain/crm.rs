//! What the internal CRM reports for Roistat's export: deal details, clients, its
//! scheme (statuses, fields, managers); and the tasks and calls Roistat sends.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::{InvalidValue, validate_id, validate_text};

/// An amount of money: a non-negative decimal, never a binary float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

impl FromStr for Money {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let amount = Decimal::from_str_exact(text.trim())
            .map_err(|_| "must be a decimal number such as 120.34")?;
        if amount.is_sign_negative() {
            return Err("must not be negative");
        }
        Ok(Money(amount.normalize()))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the CRM tells about a deal, beyond its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealDetails {
    pub name: Option<String>,
    /// A status id of the scheme.
    pub status: Option<String>,
    /// Revenue.
    pub price: Option<Money>,
    /// Cost price.
    pub cost: Option<Money>,
    pub manager_id: Option<String>,
    pub client_id: Option<String>,
    /// Custom fields: field id → value.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default, with = "time::serde::timestamp::option")]
    pub create_time: Option<OffsetDateTime>,
}

/// A partial update of a deal: what is `None` stays as it was; `fields` entries are
/// merged in, and an entry with an empty value removes that field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DealUpdate {
    pub name: Option<String>,
    pub status: Option<String>,
    pub price: Option<Money>,
    pub cost: Option<Money>,
    pub manager_id: Option<String>,
    pub client_id: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub create_time: Option<OffsetDateTime>,
}

impl DealUpdate {
    pub fn is_empty(&self) -> bool {
        *self == DealUpdate::default()
    }

    /// Everything reported must be storable: no NUL anywhere.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let texts = [&self.name, &self.status, &self.manager_id, &self.client_id]
            .into_iter()
            .flatten()
            .chain(self.fields.iter().flat_map(|(key, value)| [key, value]));
        for text in texts {
            validate_text("deal field", text)?;
        }
        Ok(())
    }

    /// `details` with this update applied.
    pub fn apply(&self, mut details: DealDetails) -> DealDetails {
        fn set<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                target.clone_from(value);
            }
        }
        set(&mut details.name, &self.name);
        set(&mut details.status, &self.status);
        set(&mut details.price, &self.price);
        set(&mut details.cost, &self.cost);
        set(&mut details.manager_id, &self.manager_id);
        set(&mut details.client_id, &self.client_id);
        set(&mut details.create_time, &self.create_time);
        for (field, value) in &self.fields {
            if value.is_empty() {
                details.fields.remove(field);
            } else {
                details.fields.insert(field.clone(), value.clone());
            }
        }
        details
    }
}

/// An entry of the scheme's status or field catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemeEntry {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
}

/// The CRM's catalogue, which Roistat reads with `action=import_scheme`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheme {
    pub statuses: Vec<SchemeEntry>,
    pub fields: Vec<SchemeEntry>,
    pub managers: Vec<Manager>,
}

impl Scheme {
    /// Ids must be non-empty, unique within each list, and storable.
    pub fn validate(&self) -> Result<(), SchemeError> {
        fn unique<'a>(
            list: &'static str,
            ids: impl Iterator<Item = &'a str>,
        ) -> Result<(), SchemeError> {
            let mut seen = std::collections::BTreeSet::new();
            for id in ids {
                validate_id("id", id).map_err(|error| SchemeError::Invalid { list, error })?;
                if !seen.insert(id) {
                    return Err(SchemeError::Duplicate {
                        list,
                        id: id.to_owned(),
                    });
                }
            }
            Ok(())
        }
        unique("statuses", self.statuses.iter().map(|s| s.id.as_str()))?;
        unique("fields", self.fields.iter().map(|f| f.id.as_str()))?;
        unique("managers", self.managers.iter().map(|m| m.id.as_str()))?;
        let texts = self
            .statuses
            .iter()
            .chain(&self.fields)
            .map(|entry| entry.name.as_str())
            .chain(
                self.managers
                    .iter()
                    .flat_map(|m| [&*m.name, &*m.phone, &*m.email]),
            );
        for text in texts {
            validate_text("name", text).map_err(|error| SchemeError::Invalid {
                list: "scheme",
                error,
            })?;
        }
        Ok(())
    }

    pub fn has_status(&self, id: &str) -> bool {
        self.statuses.iter().any(|status| status.id == id)
    }
}

/// Why a scheme cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("{list}: {error}")]
    Invalid {
        list: &'static str,
        error: InvalidValue,
    },
    #[error("{list}: id {id:?} appears twice")]
    Duplicate { list: &'static str, id: String },
}

/// A client (contact) of the CRM, which Roistat reads with `action=export_clients`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub company: String,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
}

impl Client {
    pub fn validate(&self) -> Result<(), InvalidValue> {
        validate_id("client id", &self.id)?;
        for text in [&self.name, &self.phone, &self.email, &self.company] {
            validate_text("client", text)?;
        }
        if let Some(date) = &self.birth_date {
            Date::parse(date, format_description!("[year]-[month]-[day]")).map_err(|_| {
                InvalidValue {
                    name: "birth_date",
                    reason: "must be YYYY-MM-DD",
                }
            })?;
        }
        Ok(())
    }
}

/// A client as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client: Client,
    pub update_time: OffsetDateTime,
}

/// What `action=export` and `action=export_clients` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportQuery {
    /// Records changed at or after this time (`date`, Unix seconds; absent: all).
    pub since: OffsetDateTime,
    pub offset: u64,
    /// Absent on Roistat's first call: the service's page size applies.
    pub limit: Option<u64>,
}

/// A task Roistat asks the CRM to create (`action=task`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub integration: String,
    /// The deal the task is about (Roistat's `element_id`: the order id).
    pub element_id: String,
    #[serde(with = "time::serde::timestamp::option")]
    pub deadline: Option<OffsetDateTime>,
    pub text: String,
    pub extra: BTreeMap<String, String>,
    #[serde(default)]
    pub decoding: super::Decoding,
}

/// A call Roistat's calltracking reports (`action=call`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub integration: String,
    /// Roistat's call id.
    pub call_id: String,
    pub callee: String,
    pub caller: String,
    #[serde(with = "time::serde::timestamp::option")]
    pub date: Option<OffsetDateTime>,
    pub visit: String,
    pub marker: String,
    /// ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION, CHANUNAVAIL, DONTCALL, TORTURE.
    pub status: String,
    pub order_id: String,
    /// Seconds.
    pub duration: Option<u64>,
    pub file_url: String,
    pub extra: BTreeMap<String, String>,
    #[serde(default)]
    pub decoding: super::Decoding,
    /// `callee` and `caller` in E.164; empty when they cannot be read.
    #[serde(default)]
    pub callee_e164: String,
    #[serde(default)]
    pub caller_e164: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_an_exact_non_negative_decimal() {
        assert_eq!("120.340".parse::<Money>().unwrap().to_string(), "120.34");
        assert_eq!("0".parse::<Money>().unwrap().to_string(), "0");
        assert!("-1".parse::<Money>().is_err());
        assert!("12,5".parse::<Money>().is_err());
        assert!("1e3".parse::<Money>().is_err());
    }

    #[test]
    fn an_update_leaves_unset_fields_alone() {
        let before = DealDetails {
            name: Some("Deal".into()),
            price: Some("10".parse().unwrap()),
            fields: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            ..Default::default()
        };
        let update = DealUpdate {
            status: Some("paid".into()),
            fields: BTreeMap::from([("a".into(), String::new()), ("c".into(), "3".into())]),
            ..Default::default()
        };

        let after = update.apply(before);

        assert_eq!(after.name.as_deref(), Some("Deal"));
        assert_eq!(after.status.as_deref(), Some("paid"));
        assert_eq!(after.price.unwrap().to_string(), "10");
        assert_eq!(
            after.fields,
            BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
        );
    }

    #[test]
    fn scheme_ids_are_unique() {
        let entry = |id: &str| SchemeEntry {
            id: id.into(),
            name: "n".into(),
        };
        let scheme = Scheme {
            statuses: vec![entry("1"), entry("1")],
            ..Default::default()
        };
        assert!(scheme.validate().is_err());
    }
}
