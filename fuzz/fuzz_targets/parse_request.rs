//! Everything the webhook does with untrusted bytes before storing: decoding the
//! query string, a form or a JSON body, then reading a lead, a message, a task, a
//! call or an export query from the parameters. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roistat_leads::own_crm::{
    Params, decode_form, decode_json, parse_call, parse_export, parse_lead, parse_message,
    parse_task,
};

fuzz_target!(|data: &[u8]| {
    for decode in [decode_form, decode_json] {
        let mut params = Params::new();
        if decode(data, &mut params).is_ok() {
            let _ = parse_lead("default", &params);
            let _ = parse_message("default", &params);
            let _ = parse_task("default", &params);
            let _ = parse_call("default", &params);
            let _ = parse_export(&params);
        }
    }
});
