//! Turns the parameters of a Roistat request into leads and deal messages.
//! Roistat's quirks live here: a `+` lost in a phone, `created_date` with a space,
//! `data` as a JSON string, the body of a message named `text` or `message`.

use std::collections::BTreeMap;

use time::{
    OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, macros::format_description,
};

use super::crm::parse_count;
use super::{Call, DealMessage, Lead, LeadSource, Task};

/// Longest id accepted for a lead: Roistat's are short numbers.
const MAX_ID_LEN: usize = 256;

/// Parameters the service reads itself; everything else goes to `extra`.
const LEAD_PARAMS: &[&str] = &[
    "id",
    "visit",
    "title",
    "text",
    "name",
    "phone",
    "email",
    "data",
    "created_date",
    "manager_id",
];
const MESSAGE_PARAMS: &[&str] = &["leadId", "title", "text", "message"];
const TASK_PARAMS: &[&str] = &["element_id", "deadline", "text"];
const CALL_PARAMS: &[&str] = &[
    "id", "callee", "caller", "date", "visit", "marker", "status", "order_id", "duration",
    "file_url",
];
/// Present on every request; authentication and dispatch, not lead content.
const ENVELOPE_PARAMS: &[&str] = &["user", "token", "action"];

/// Decoded request parameters; a later value for the same name replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    fn extra(&self, known: &[&str]) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(name, _)| {
                !known.contains(&name.as_str()) && !ENVELOPE_PARAMS.contains(&name.as_str())
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    fn required_id(&self, name: &'static str) -> Result<String, ParseError> {
        let id = self.get(name).map(str::trim).unwrap_or_default();
        if id.is_empty() {
            return Err(ParseError::Missing(name));
        }
        if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            return Err(ParseError::Invalid {
                name,
                reason: "must be at most 256 bytes without control characters",
            });
        }
        Ok(id.to_owned())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Why a request cannot become a lead or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing parameter: {0}")]
    Missing(&'static str),
    #[error("invalid parameter {name}: {reason}")]
    Invalid {
        name: &'static str,
        reason: &'static str,
    },
}

/// Parses `action=lead`. Only a missing or unusable `id` rejects the lead: a malformed
/// `data` or `created_date` is kept as received rather than losing the lead.
pub fn parse_lead(integration: &str, params: &Params) -> Result<Lead, ParseError> {
    let lead_id = params.required_id("id")?;
    let title = params.text("title");
    let data_json = params.text("data");
    let (page, fields) = split_data(&data_json).unwrap_or_else(|| {
        tracing::warn!(
            lead_id,
            "lead has malformed `data` JSON; stored as received"
        );
        (String::new(), BTreeMap::new())
    });
    let mut extra = params.extra(LEAD_PARAMS);
    let create_time = match params.get("created_date").map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            let parsed = parse_roistat_time(raw);
            if parsed.is_none() {
                tracing::warn!(
                    lead_id,
                    "lead has an unreadable `created_date`; kept in extra"
                );
                extra.insert("created_date".to_owned(), raw.to_owned());
            }
            parsed
        }
    };
    Ok(Lead {
        integration: integration.to_owned(),
        lead_id,
        visit: params.text("visit").trim().to_owned(),
        source: LeadSource::from_title(&title),
        title,
        text: params.text("text"),
        name: params.text("name"),
        phone: restore_phone(params.get("phone").unwrap_or_default()),
        email: params.text("email").trim().to_owned(),
        page,
        fields,
        data_json,
        create_time,
        manager_id: params.text("manager_id").trim().to_owned(),
        extra,
    })
}

/// Parses `action=message`; the body may be named `text` or `message`.
pub fn parse_message(integration: &str, params: &Params) -> Result<DealMessage, ParseError> {
    let lead_id = params.required_id("leadId")?;
    let text = params
        .get("text")
        .filter(|text| !text.is_empty())
        .or(params.get("message"))
        .unwrap_or_default()
        .to_owned();
    Ok(DealMessage {
        integration: integration.to_owned(),
        lead_id,
        title: params.text("title"),
        text,
        extra: params.extra(MESSAGE_PARAMS),
    })
}

/// Parses `action=task`: `element_id` (the deal), `deadline` (UTC) and `text`.
pub fn parse_task(integration: &str, params: &Params) -> Result<Task, ParseError> {
    Ok(Task {
        integration: integration.to_owned(),
        element_id: params.required_id("element_id")?,
        deadline: required_time(params, "deadline")?,
        text: params.text("text"),
        extra: params.extra(TASK_PARAMS),
    })
}

/// Parses `action=call`, a call Roistat's calltracking reports.
pub fn parse_call(integration: &str, params: &Params) -> Result<Call, ParseError> {
    Ok(Call {
        integration: integration.to_owned(),
        call_id: params.required_id("id")?,
        callee: params.text("callee").trim().to_owned(),
        caller: params.text("caller").trim().to_owned(),
        date: required_time(params, "date")?,
        visit: params.text("visit").trim().to_owned(),
        marker: params.text("marker"),
        status: params.text("status").trim().to_owned(),
        order_id: params.text("order_id").trim().to_owned(),
        duration: parse_count("duration", params.get("duration"))?,
        file_url: params.text("file_url").trim().to_owned(),
        extra: params.extra(CALL_PARAMS),
    })
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

pub fn parse_export(params: &Params) -> Result<ExportQuery, ParseError> {
    let since = match params.get("date").map(str::trim) {
        None | Some("") => OffsetDateTime::UNIX_EPOCH,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
            .ok_or(ParseError::Invalid {
                name: "date",
                reason: "must be a Unix time in seconds",
            })?,
    };
    let limit = parse_count("limit", params.get("limit"))?;
    if limit == Some(0) {
        return Err(ParseError::Invalid {
            name: "limit",
            reason: "must be positive",
        });
    }
    Ok(ExportQuery {
        since,
        offset: parse_count("offset", params.get("offset"))?.unwrap_or(0),
        limit,
    })
}

/// A time parameter that may be absent but, when present, must be readable.
fn required_time(
    params: &Params,
    name: &'static str,
) -> Result<Option<OffsetDateTime>, ParseError> {
    match params.get(name).map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => parse_roistat_time(raw)
            .map(Some)
            .ok_or(ParseError::Invalid {
                name,
                reason: "must be a time such as 2019-01-01T11:11:11 (UTC)",
            }),
    }
}

/// Splits `data` into the landing page and the other form fields; `None` when it is
/// not a JSON object. An absent `data` is an empty object.
fn split_data(raw: &str) -> Option<(String, BTreeMap<String, String>)> {
    if raw.trim().is_empty() {
        return Some((String::new(), BTreeMap::new()));
    }
    let serde_json::Value::Object(object) = serde_json::from_str(raw).ok()? else {
        return None;
    };
    let mut page = String::new();
    let mut fields = BTreeMap::new();
    for (key, value) in object {
        let value = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        if key == "page" {
            page = value;
        } else {
            fields.insert(key, value);
        }
    }
    Some((page, fields))
}

/// Reads Roistat's times: `2015-06-28 09:12:54` (UTC), also with a `T` separator,
/// a trailing `Z`, or without seconds.
pub fn parse_roistat_time(raw: &str) -> Option<OffsetDateTime> {
    const FORMATS: &[&[FormatItem<'static>]] = &[
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ];
    let raw = raw.trim().trim_end_matches('Z');
    FORMATS
        .iter()
        .find_map(|format| PrimitiveDateTime::parse(raw, format).ok())
        .map(PrimitiveDateTime::assume_utc)
}

/// Restores the `+` of an international number that reached us as a space
/// (a sender that did not percent-encode `+79990001122`).
fn restore_phone(raw: &str) -> String {
    let trimmed = raw.trim();
    let lost_plus = raw.starts_with(' ') && trimmed.starts_with(|c: char| c.is_ascii_digit());
    if lost_plus {
        format!("+{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().copied().collect()
    }

    #[test]
    fn lead_with_every_parameter() {
        let lead = parse_lead(
            "default",
            &params(&[
                ("id", "90"),
                ("visit", "12852"),
                ("title", "Caught lead: 11230001122"),
                ("text", "line 1\nline 2"),
                ("name", "Robert"),
                ("phone", " 11230001122"),
                ("email", "email@mail.com"),
                (
                    "data",
                    r#"{"page":"http:\/\/site.com\/","640163":"test","n":5}"#,
                ),
                ("created_date", "2015-06-28 09:12:54"),
                ("manager_id", "12"),
                ("utm_source", "google"),
                ("token", "secret"),
            ]),
        )
        .unwrap();
        assert_eq!(lead.lead_id, "90");
        assert_eq!(lead.source, LeadSource::LeadHunter);
        assert_eq!(lead.phone, "+11230001122");
        assert_eq!(lead.page, "http://site.com/");
        assert_eq!(lead.fields["640163"], "test");
        assert_eq!(lead.fields["n"], "5");
        assert_eq!(lead.create_time.unwrap().unix_timestamp(), 1_435_482_774);
        assert_eq!(lead.manager_id, "12");
        assert_eq!(lead.extra.len(), 1);
        assert_eq!(lead.extra["utm_source"], "google");
    }

    #[test]
    fn malformed_data_keeps_the_raw_text() {
        let lead = parse_lead("default", &params(&[("id", "1"), ("data", "{not json")])).unwrap();
        assert_eq!(lead.data_json, "{not json");
        assert!(lead.fields.is_empty());
        assert_eq!(lead.page, "");
    }

    #[test]
    fn unreadable_created_date_is_kept_in_extra() {
        let lead = parse_lead(
            "default",
            &params(&[("id", "1"), ("created_date", "yesterday")]),
        )
        .unwrap();
        assert_eq!(lead.create_time, None);
        assert_eq!(lead.extra["created_date"], "yesterday");
    }

    #[test]
    fn missing_or_oversized_id_is_refused() {
        assert_eq!(
            parse_lead("default", &params(&[("id", "  ")])),
            Err(ParseError::Missing("id"))
        );
        let long = "9".repeat(300);
        assert!(matches!(
            parse_lead("default", &params(&[("id", &long)])),
            Err(ParseError::Invalid { name: "id", .. })
        ));
    }

    #[test]
    fn sources_in_both_languages() {
        let cases = [
            ("Incoming call from 11230001122", LeadSource::Calltracking),
            ("Call from 11230001122", LeadSource::Calltracking),
            ("Звонок от 79990001122", LeadSource::Calltracking),
            ("Hunted lead: 1", LeadSource::LeadHunter),
            ("Пойманный лид: 79990001122", LeadSource::LeadHunter),
            ("JivoSite Lead", LeadSource::Jivosite),
            ("CRM Lead", LeadSource::Crm),
            ("Заявка с сайта", LeadSource::Other),
            ("", LeadSource::Other),
        ];
        for (title, source) in cases {
            assert_eq!(LeadSource::from_title(title), source, "{title}");
        }
    }

    #[test]
    fn message_body_from_text_or_message() {
        let from_text =
            parse_message("default", &params(&[("leadId", "5"), ("text", "a")])).unwrap();
        let from_message =
            parse_message("default", &params(&[("leadId", "5"), ("message", "a")])).unwrap();
        assert_eq!(from_text, from_message);
        assert_eq!(
            super::super::EventBody::Message(from_text.clone()).identity(),
            super::super::EventBody::Message(from_message).identity()
        );
        assert_eq!(
            parse_message("default", &params(&[("text", "a")])),
            Err(ParseError::Missing("leadId"))
        );
    }

    #[test]
    fn times_in_roistat_forms() {
        for raw in [
            "2019-01-01 11:11:11",
            "2019-01-01T11:11:11",
            "2019-01-01T11:11:11Z",
        ] {
            assert_eq!(
                parse_roistat_time(raw).unwrap().unix_timestamp(),
                1_546_341_071,
                "{raw}"
            );
        }
        assert_eq!(parse_roistat_time("01.01.2019"), None);
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().copied().collect()
    }

    #[test]
    fn export_parameters() {
        let query = parse_export(&params(&[
            ("date", "1646747823"),
            ("offset", "20"),
            ("limit", "10"),
        ]))
        .unwrap();
        assert_eq!(query.since.unix_timestamp(), 1_646_747_823);
        assert_eq!((query.offset, query.limit), (20, Some(10)));
        let first = parse_export(&params(&[("date", "0")])).unwrap();
        assert_eq!((first.offset, first.limit), (0, None));
        for bad in [
            ("date", "yesterday"),
            ("offset", "-1"),
            ("limit", "0"),
            ("limit", "x"),
        ] {
            assert!(parse_export(&params(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn task_and_call() {
        let task = parse_task(
            "default",
            &params(&[
                ("element_id", "100"),
                ("deadline", "2019-01-01T11:11:11"),
                ("text", "Call back"),
            ]),
        )
        .unwrap();
        assert_eq!(task.deadline.unwrap().unix_timestamp(), 1_546_341_071);
        assert!(
            parse_task(
                "default",
                &params(&[("element_id", "1"), ("deadline", "soon")])
            )
            .is_err()
        );
        let call = parse_call(
            "default",
            &params(&[("id", "7"), ("duration", "42"), ("status", "ANSWER")]),
        )
        .unwrap();
        assert_eq!((call.call_id.as_str(), call.duration), ("7", Some(42)));
        assert!(parse_call("default", &params(&[("id", "7"), ("duration", "long")])).is_err());
        assert_eq!(
            parse_call("default", &params(&[])),
            Err(ParseError::Missing("id"))
        );
    }
}
