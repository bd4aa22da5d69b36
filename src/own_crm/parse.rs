//! Turns the parameters of a Roistat request into leads, deal messages, tasks,
//! calls and export queries.
//! Roistat's quirks live here: a `+` lost in a phone, `created_date` with a space,
//! `data` as a JSON string, the body of a message named `text` or `message`, times
//! with or without an offset, numbers written `42.0`. A value that cannot be read
//! is kept as sent in `extra`, and noted in the event's decoding notes: it never
//! costs the request.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::Params;
use super::values::{Lenient, parse_number, parse_roistat_time};
use crate::domain::{
    Call, DealMessage, Decoding, ExportQuery, Lead, LeadSource, Task, UnknownAction,
};

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

/// What the parser reads from parameters beyond plain lookups.
trait ParamsExt {
    fn text(&self, name: &str) -> String;
    fn extra(&self, known: &[&str]) -> BTreeMap<String, String>;
    fn required_id(&self, name: &'static str) -> Result<String, ParseError>;
}

impl ParamsExt for Params {
    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    fn extra(&self, known: &[&str]) -> BTreeMap<String, String> {
        self.iter()
            .filter(|(name, _)| !known.contains(name) && !ENVELOPE_PARAMS.contains(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
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

/// Parses `action=lead`. Only a missing or unusable `id` makes it no lead: a
/// malformed `data` or `created_date` is kept as received rather than losing it.
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
    let mut values = Lenient::new(params, params.extra(LEAD_PARAMS));
    let create_time = values.time("created_date");
    let (extra, decoding) = values.finish();
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
        decoding,
        phone_number: None,
        email_normalized: String::new(),
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
        resolved_lead_id: String::new(),
        decoding: Decoding::default(),
    })
}

/// Parses `action=task`: `element_id` (the deal), `deadline` (UTC) and `text`.
pub fn parse_task(integration: &str, params: &Params) -> Result<Task, ParseError> {
    let element_id = params.required_id("element_id")?;
    let mut values = Lenient::new(params, params.extra(TASK_PARAMS));
    let deadline = values.time("deadline");
    let (extra, decoding) = values.finish();
    Ok(Task {
        integration: integration.to_owned(),
        element_id,
        deadline,
        text: params.text("text"),
        extra,
        decoding,
    })
}

/// Keeps a request whose action this version does not know (or that lacks what
/// its action needs, `why`): its action as sent and every parameter but the token.
pub fn parse_unknown_action(
    integration: &str,
    params: &Params,
    why: Option<&ParseError>,
) -> UnknownAction {
    let action = params.get("action").unwrap_or_default().to_owned();
    let notes = why
        .map(|error| {
            let action = if action.is_empty() { "lead" } else { &action };
            format!("not read as action {action}: {error}; kept as an unknown action")
        })
        .into_iter()
        .collect();
    UnknownAction {
        integration: integration.to_owned(),
        action,
        parameters: params
            .iter()
            .filter(|(name, _)| *name != "token")
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        decoding: Decoding {
            notes,
            ..Decoding::default()
        },
    }
}

/// Parses `action=call`, a call Roistat's calltracking reports.
pub fn parse_call(integration: &str, params: &Params) -> Result<Call, ParseError> {
    let call_id = params.required_id("id")?;
    let mut values = Lenient::new(params, params.extra(CALL_PARAMS));
    let date = values.time("date");
    let duration = values.count("duration");
    let (extra, decoding) = values.finish();
    Ok(Call {
        integration: integration.to_owned(),
        call_id,
        callee: params.text("callee").trim().to_owned(),
        caller: params.text("caller").trim().to_owned(),
        date,
        visit: params.text("visit").trim().to_owned(),
        marker: params.text("marker"),
        status: params.text("status").trim().to_owned(),
        order_id: params.text("order_id").trim().to_owned(),
        duration,
        file_url: params.text("file_url").trim().to_owned(),
        extra,
        decoding,
        callee_e164: String::new(),
        caller_e164: String::new(),
    })
}

/// Parses the paging of `export` and `export_clients`: a read, refused (it loses
/// no data) when its values cannot be read.
pub fn parse_export(params: &Params) -> Result<ExportQuery, ParseError> {
    let since = match params.get("date").map(str::trim) {
        None | Some("") => OffsetDateTime::UNIX_EPOCH,
        Some(raw) => parse_roistat_time(raw).ok_or(ParseError::Invalid {
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

/// A paging parameter: a non-negative number, if present.
fn parse_count(name: &'static str, raw: Option<&str>) -> Result<Option<u64>, ParseError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_number(text).map(Some).ok_or(ParseError::Invalid {
            name,
            reason: "must be a non-negative integer",
        }),
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
        assert_eq!(
            lead.decoding.notes.len(),
            1,
            "a value kept only as text is a loss"
        );
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
    fn message_body_from_text_or_message() {
        let from_text =
            parse_message("default", &params(&[("leadId", "5"), ("text", "a")])).unwrap();
        let from_message =
            parse_message("default", &params(&[("leadId", "5"), ("message", "a")])).unwrap();
        assert_eq!(from_text, from_message);
        assert_eq!(
            crate::domain::EventBody::Message(from_text.clone()).identity(),
            crate::domain::EventBody::Message(from_message).identity()
        );
        assert_eq!(
            parse_message("default", &params(&[("text", "a")])),
            Err(ParseError::Missing("leadId"))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any parameters make a lead or a clear refusal, and a lead keeps every
            /// parameter it does not read in `extra`.
            #[test]
            fn leads_keep_what_they_do_not_read(
                pairs in proptest::collection::btree_map("[a-z_]{1,10}", "\\PC{0,30}", 0..15),
                id in "[0-9]{1,9}"
            ) {
                let mut params: Params = pairs.clone().into_iter().collect();
                params.insert("id", id.clone());
                let lead = parse_lead("default", &params).unwrap();
                prop_assert_eq!(&lead.lead_id, &id);
                for (name, value) in &pairs {
                    if !LEAD_PARAMS.contains(&name.as_str()) && !ENVELOPE_PARAMS.contains(&name.as_str()) {
                        prop_assert_eq!(lead.extra.get(name), Some(value));
                    }
                }
            }
        }
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
        let lenient = parse_export(&params(&[("offset", "20.0"), ("limit", " 10 ")])).unwrap();
        assert_eq!((lenient.offset, lenient.limit), (20, Some(10)));
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
        assert!(!task.decoding.lossy());
        let unreadable = parse_task(
            "default",
            &params(&[("element_id", "1"), ("deadline", "soon")]),
        )
        .unwrap();
        assert_eq!(unreadable.deadline, None);
        assert_eq!(unreadable.extra["deadline"], "soon");
        assert!(unreadable.decoding.lossy());
        let call = parse_call(
            "default",
            &params(&[("id", "7"), ("duration", "42"), ("status", "ANSWER")]),
        )
        .unwrap();
        assert_eq!((call.call_id.as_str(), call.duration), ("7", Some(42)));
        let long = parse_call("default", &params(&[("id", "7"), ("duration", "long")])).unwrap();
        assert_eq!(
            (long.duration, long.extra["duration"].as_str()),
            (None, "long")
        );
        let fraction = parse_call(
            "default",
            &params(&[
                ("id", "7"),
                ("duration", "42.0"),
                ("date", "2016-06-19T00:32:12+0000"),
            ]),
        )
        .unwrap();
        assert_eq!(fraction.duration, Some(42));
        assert_eq!(fraction.date.unwrap().unix_timestamp(), 1_466_296_332);
        assert!(!fraction.decoding.lossy());
        assert_eq!(
            parse_call("default", &params(&[])),
            Err(ParseError::Missing("id"))
        );
    }
}
