//! Every event kind in each of its forms: the one table a new kind adds a row to.
//! A test reads the proto's own descriptors and fails when a kind of the proto (a
//! value of `EventKind`, a field of `LeadEvent.event`) or of the domain has no row,
//! or when a row disagrees with the proto.

use crate::domain::EventKind;
use crate::proto;

/// One event kind's forms.
#[derive(Debug)]
pub struct KindForms {
    pub kind: EventKind,
    /// The value of `roistat.leads.v1.EventKind` that names it (in a stream's filter).
    pub proto: proto::EventKind,
    /// The field of the `LeadEvent.event` oneof its body is sent in.
    pub field: u32,
    /// The first of the four decoding fields of its message (`decoding_lossy`,
    /// `raw_request`, `repeated_parameters`, `decoding_notes`, in that order); none
    /// for a kind the service writes itself (nothing was read).
    pub decoding: Option<u32>,
}

/// The kinds, in the order of [`EventKind::ALL`].
pub const KINDS: [KindForms; 7] = [
    KindForms {
        kind: EventKind::Lead,
        proto: proto::EventKind::Lead,
        field: proto::LEAD,
        decoding: Some(18),
    },
    KindForms {
        kind: EventKind::Message,
        proto: proto::EventKind::Message,
        field: 11,
        decoding: Some(7),
    },
    KindForms {
        kind: EventKind::Task,
        proto: proto::EventKind::Task,
        field: 13,
        decoding: Some(6),
    },
    KindForms {
        kind: EventKind::Call,
        proto: proto::EventKind::Call,
        field: 14,
        decoding: Some(13),
    },
    KindForms {
        kind: EventKind::UnknownAction,
        proto: proto::EventKind::UnknownAction,
        field: 15,
        decoding: Some(4),
    },
    KindForms {
        kind: EventKind::PersonsMerged,
        proto: proto::EventKind::PersonsMerged,
        field: 16,
        decoding: None,
    },
    KindForms {
        kind: EventKind::PersonSplit,
        proto: proto::EventKind::PersonSplit,
        field: 17,
        decoding: None,
    },
];

/// A kind's forms.
pub fn forms(kind: EventKind) -> &'static KindForms {
    // The rows are in the order of the domain's kinds (a test holds them so).
    &KINDS[kind as usize]
}

/// The kind a value of the proto's `EventKind` names; `None` for an unknown or
/// unspecified one.
pub fn kind_from_proto(value: i32) -> Option<EventKind> {
    let named = proto::EventKind::try_from(value).ok()?;
    KINDS
        .iter()
        .find(|forms| forms.proto == named)
        .map(|forms| forms.kind)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn descriptors() -> FileDescriptorSet {
        FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn every_domain_kind_has_its_row_in_order() {
        let kinds: Vec<EventKind> = KINDS.iter().map(|forms| forms.kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        for kind in EventKind::ALL {
            assert_eq!(forms(kind).kind, kind);
        }
    }

    #[test]
    fn every_kind_of_the_proto_has_a_row_that_agrees_with_it() {
        let set = descriptors();
        let file = set
            .file
            .iter()
            .find(|file| file.name() == "roistat/leads/v1/leads.proto")
            .unwrap();
        let kinds = file
            .enum_type
            .iter()
            .find(|kind| kind.name() == "EventKind")
            .unwrap();
        for value in &kinds.value {
            let Some(name) = value.name().strip_prefix("EVENT_KIND_") else {
                panic!("{} is not named EVENT_KIND_…", value.name());
            };
            if name == "UNSPECIFIED" {
                assert_eq!(kind_from_proto(value.number()), None);
                continue;
            }
            let kind = kind_from_proto(value.number()).unwrap_or_else(|| {
                panic!("EventKind {name} of the proto has no row in codec::KINDS")
            });
            assert_eq!(kind.as_str(), name.to_ascii_lowercase());
        }

        let event = file
            .message_type
            .iter()
            .find(|message| message.name() == "LeadEvent")
            .unwrap();
        let oneof = event
            .oneof_decl
            .iter()
            .position(|oneof| oneof.name() == "event")
            .unwrap() as i32;
        let fields: Vec<_> = event
            .field
            .iter()
            .filter(|field| field.oneof_index == Some(oneof) && field.name() != "heartbeat")
            .collect();
        assert_eq!(
            fields.len(),
            KINDS.len(),
            "every field of LeadEvent.event but heartbeat is a kind with a row"
        );
        for field in fields {
            let row = KINDS
                .iter()
                .find(|forms| forms.field == field.number() as u32)
                .unwrap_or_else(|| {
                    panic!(
                        "LeadEvent.event.{} has no row in codec::KINDS",
                        field.name()
                    )
                });
            assert_eq!(row.kind.as_str(), field.name());

            // Its message carries the decoding fields where the row says.
            let message_name = field.type_name().rsplit('.').next().unwrap();
            let message = file
                .message_type
                .iter()
                .find(|message| message.name() == message_name)
                .unwrap();
            let number = |name: &str| {
                message
                    .field
                    .iter()
                    .find(|field| field.name() == name)
                    .map(|field| field.number() as u32)
            };
            let names = [
                "decoding_lossy",
                "raw_request",
                "repeated_parameters",
                "decoding_notes",
            ];
            for (offset, name) in (0..).zip(names) {
                assert_eq!(
                    number(name),
                    row.decoding.map(|first| first + offset),
                    "{message_name}.{name}"
                );
            }
        }
    }
}
