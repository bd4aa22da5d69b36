//! Everything the webhook does with untrusted bytes before storing: decoding the
//! query string and a form, JSON or unreadable body (bytes that are not UTF-8,
//! repeated names, values past the limits), reading the action, then a lead, a
//! message, a task, a call, an unknown action or an export query from the
//! parameters (times and numbers in every form), and keeping the request with
//! its token masked. None of it may panic, and decoding never refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roistat_leads::own_crm::{
    Action, BodyKind, RawRequest, parse_call, parse_export, parse_lead, parse_message,
    parse_number, parse_roistat_time, parse_task, parse_unknown_action,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let body_kind = match selector % 4 {
        0 => BodyKind::None,
        1 => BodyKind::Form,
        2 => BodyKind::Json,
        _ => BodyKind::Unsupported("multipart/form-data".into()),
    };
    let raw = RawRequest {
        query: query.to_vec(),
        body: body.to_vec(),
        body_kind,
        content_type: String::new(),
    };
    let params = raw.decode();
    let _ = raw.credentials();
    let _ = raw.action();
    let _ = raw.kept();
    let _ = raw.masked();
    let _ = Action::of(&params);
    let _ = parse_lead("default", &params);
    let _ = parse_message("default", &params);
    let _ = parse_task("default", &params);
    let _ = parse_call("default", &params);
    let _ = parse_unknown_action("default", &params, None);
    let _ = parse_export(&params);
    let text = String::from_utf8_lossy(rest);
    let _ = parse_roistat_time(&text);
    let _ = parse_number(&text);
});
