//! Events as the server sends them: each one a gRPC message (its five-byte
//! prefix, then a `LeadEvent`) whose body (a `Lead`, a `DealMessage`, …) is
//! written as it was stored, with the fields only known at commit around it.
//! Nothing is decoded and encoded again, and a whole batch of events is written
//! into one buffer.

use bytes::BufMut;
use prost::encoding::{self, WireType};

/// `LeadEvent.sequence`, `LeadEvent.receive_time`.
const SEQUENCE: u32 = 1;
const RECEIVE_TIME: u32 = 2;
const TRACEPARENT: u32 = 3;
/// Fields of the `LeadEvent.event` oneof: a lead (which carries its sequence and
/// receive time in its own body too) and a heartbeat. Every kind's is in
/// `codec::KINDS`.
pub const LEAD: u32 = 10;
pub const HEARTBEAT: u32 = 12;
/// `Lead.receive_time`, `Lead.sequence`: a lead carries them too.
const LEAD_RECEIVE_TIME: u32 = 16;
const LEAD_SEQUENCE: u32 = 17;
/// `Lead.person_id`, `Lead.returning`, `Lead.person_first_seen`: a lead's person,
/// known at commit.
const LEAD_PERSON_ID: u32 = 29;
const LEAD_RETURNING: u32 = 30;
const LEAD_PERSON_FIRST_SEEN: u32 = 31;

/// A gRPC message's prefix: a compression flag and the length that follows.
pub const MESSAGE_PREFIX: usize = 5;

/// A `LeadEvent` ready to write: the encoded body of its oneof field `event`, and
/// the sequence and receive time to write around it. For a lead, they are also
/// written at the end of the `Lead` itself, where a field may come in any order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventFrame<'a> {
    pub sequence: u64,
    pub receive_time: Option<prost_types::Timestamp>,
    /// The field of the oneof the body is (`HEARTBEAT`, or a kind's in `codec::KINDS`).
    pub field: u32,
    pub body: &'a [u8],
    /// The W3C `traceparent` the event was stored in, if any.
    pub trace_parent: Option<&'a str>,
    /// A lead's person, if it has one.
    pub person: Option<FramePerson>,
}

/// A lead's person as its frame writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramePerson {
    pub person_id: u64,
    pub returning: bool,
    pub first_seen: prost_types::Timestamp,
}

/// The encoded body of a heartbeat: every event up to the frame's sequence was
/// delivered or filtered out, and `latest_sequence` is the newest stored.
pub fn heartbeat_body(latest_sequence: u64) -> Vec<u8> {
    prost::Message::encode_to_vec(&super::Heartbeat { latest_sequence })
}

/// At most what a frame writes before its body (the prefix 5, the sequence 11, the
/// receive time 24, the oneof field's key 1 and a length of at most 5 for any body
/// a message can carry), and after it (a lead's own receive time 25 and sequence
/// 12, its person id 12, returning 3 and first seen 26).
const HEAD_BYTES: usize = 48;
const TRAILER_BYTES: usize = 80;

/// Bytes put together on the stack, then copied out at once.
struct Scratch<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Scratch<N> {
    fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: WireType) {
        self.varint(u64::from(field << 3 | wire_type as u32));
    }

    fn uint64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, WireType::Varint);
            self.varint(value);
        }
    }

    /// A Timestamp field, as prost writes one: defaults left out.
    fn timestamp(&mut self, field: u32, time: &prost_types::Timestamp) {
        self.key(field, WireType::LengthDelimited);
        self.varint(prost::Message::encoded_len(time) as u64);
        self.uint64(1, time.seconds as u64);
        self.uint64(2, i64::from(time.nanos) as u64);
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl EventFrame<'_> {
    fn has_trailer(&self) -> bool {
        self.field == LEAD
    }

    /// The fields written at the end of the body: a lead's own receive time and
    /// sequence.
    fn trailer_len(&self) -> usize {
        if !self.has_trailer() {
            return 0;
        }
        let time = self.receive_time.as_ref().map_or(0, |time| {
            encoding::message::encoded_len(LEAD_RECEIVE_TIME, time)
        });
        let sequence = match self.sequence {
            0 => 0,
            sequence => encoding::uint64::encoded_len(LEAD_SEQUENCE, &sequence),
        };
        let person = self.person.as_ref().map_or(0, |person| {
            let id = match person.person_id {
                0 => 0,
                id => encoding::uint64::encoded_len(LEAD_PERSON_ID, &id),
            };
            let returning = if person.returning {
                encoding::bool::encoded_len(LEAD_RETURNING, &true)
            } else {
                0
            };
            id + returning
                + encoding::message::encoded_len(LEAD_PERSON_FIRST_SEEN, &person.first_seen)
        });
        time + sequence + person
    }

    /// The length of the `LeadEvent` (without the message prefix).
    pub fn encoded_len(&self) -> usize {
        let sequence = match self.sequence {
            0 => 0,
            sequence => encoding::uint64::encoded_len(SEQUENCE, &sequence),
        };
        let time = self
            .receive_time
            .as_ref()
            .map_or(0, |time| encoding::message::encoded_len(RECEIVE_TIME, time));
        let inner = self.body.len() + self.trailer_len();
        let trace = self.trace_parent.map_or(0, |trace| {
            encoding::key_len(TRACEPARENT)
                + encoding::encoded_len_varint(trace.len() as u64)
                + trace.len()
        });
        sequence
            + time
            + trace
            + encoding::key_len(self.field)
            + encoding::encoded_len_varint(inner as u64)
            + inner
    }

    /// Writes the frame as a gRPC message (the uncompressed prefix, then the
    /// `LeadEvent`), which takes [`MESSAGE_PREFIX`] + [`Self::encoded_len`] bytes.
    pub fn put_message(&self, buf: &mut impl BufMut) {
        let len = self.encoded_len();
        let mut head = Scratch::<HEAD_BYTES>::new();
        head.byte(0);
        for byte in (len as u32).to_be_bytes() {
            head.byte(byte);
        }
        head.uint64(SEQUENCE, self.sequence);
        if let Some(time) = &self.receive_time {
            head.timestamp(RECEIVE_TIME, time);
        }
        // In field order, as prost writes it: the trace context before the oneof.
        if let Some(trace) = self.trace_parent {
            head.key(TRACEPARENT, WireType::LengthDelimited);
            head.varint(trace.len() as u64);
            buf.put_slice(head.as_slice());
            buf.put_slice(trace.as_bytes());
            head = Scratch::new();
        }
        head.key(self.field, WireType::LengthDelimited);
        head.varint((self.body.len() + self.trailer_len()) as u64);
        buf.put_slice(head.as_slice());
        buf.put_slice(self.body);
        if self.has_trailer() {
            let mut trailer = Scratch::<TRAILER_BYTES>::new();
            if let Some(time) = &self.receive_time {
                trailer.timestamp(LEAD_RECEIVE_TIME, time);
            }
            trailer.uint64(LEAD_SEQUENCE, self.sequence);
            if let Some(person) = &self.person {
                trailer.uint64(LEAD_PERSON_ID, person.person_id);
                trailer.uint64(LEAD_RETURNING, u64::from(person.returning));
                trailer.timestamp(LEAD_PERSON_FIRST_SEEN, &person.first_seen);
            }
            buf.put_slice(trailer.as_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::proto::{DealMessage, Heartbeat, Lead, LeadEvent, lead_event};

    fn time() -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: 1_546_341_071,
            nanos: 123_000,
        }
    }

    /// The message a frame writes: its prefix checked, its `LeadEvent` decoded.
    fn written(frame: &EventFrame<'_>) -> LeadEvent {
        let mut buf = BytesMut::new();
        frame.put_message(&mut buf);
        assert_eq!(buf.len(), MESSAGE_PREFIX + frame.encoded_len());
        assert_eq!(buf.get_u8(), 0, "uncompressed");
        assert_eq!(buf.get_u32() as usize, buf.len());
        LeadEvent::decode(buf).unwrap()
    }

    #[test]
    fn a_frame_decodes_as_the_lead_event_it_stands_for() {
        let lead = Lead {
            lead_id: "90".into(),
            name: "Роберт".into(),
            ..Default::default()
        };
        let body = lead.encode_to_vec();
        let frame = EventFrame {
            sequence: 42,
            receive_time: Some(time()),
            field: LEAD,
            body: &body,
            trace_parent: None,
            person: None,
        };

        let event = written(&frame);

        assert_eq!((event.sequence, event.receive_time), (42, Some(time())));
        let Some(lead_event::Event::Lead(decoded)) = event.event else {
            panic!("{event:?}");
        };
        assert_eq!(
            *decoded,
            Lead {
                receive_time: Some(time()),
                sequence: 42,
                ..lead
            }
        );
    }

    #[test]
    fn a_heartbeat_frame_is_a_heartbeat() {
        let body = heartbeat_body(9);
        let frame = EventFrame {
            sequence: 7,
            receive_time: None,
            field: HEARTBEAT,
            body: &body,
            trace_parent: None,
            person: None,
        };
        let event = written(&frame);
        assert_eq!(event.sequence, 7);
        assert_eq!(
            event.event,
            Some(lead_event::Event::Heartbeat(Box::new(Heartbeat {
                latest_sequence: 9
            })))
        );
    }

    proptest! {
        /// Whatever the sequence, time and body, a frame is the `LeadEvent` prost
        /// would have encoded, and a message's fields are left as they were.
        #[test]
        fn frames_agree_with_the_generated_encoding(
            sequence in any::<u64>(),
            seconds in any::<i64>(),
            // Out of range too (negative nanos are ten bytes): the frame still
            // writes what prost would.
            nanos in any::<i32>(),
            timed in any::<bool>(),
            text in ".{0,300}",
            lead in any::<bool>(),
            traced in any::<bool>(),
            person in proptest::option::of((any::<u64>(), any::<bool>(), any::<i64>())),
        ) {
            let person = person.map(|(person_id, returning, seconds)| FramePerson {
                person_id,
                returning,
                first_seen: prost_types::Timestamp { seconds, nanos: 0 },
            });
            let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let trace_parent = traced.then_some(trace);
            let receive_time = timed.then_some(prost_types::Timestamp { seconds, nanos });
            let (field, body, expected) = if lead {
                let lead = Lead { title: text.clone(), ..Default::default() };
                let expected = lead_event::Event::Lead(Box::new(Lead {
                    receive_time,
                    sequence,
                    person_id: person.map_or(0, |person| person.person_id),
                    returning: person.is_some_and(|person| person.returning),
                    person_first_seen: person.map(|person| person.first_seen),
                    ..lead.clone()
                }));
                (LEAD, lead.encode_to_vec(), expected)
            } else {
                let message = DealMessage { text, ..Default::default() };
                (11, message.encode_to_vec(), lead_event::Event::Message(Box::new(message)))
            };
            let person = if lead { person } else { None };
            let frame = EventFrame { sequence, receive_time, field, body: &body, trace_parent, person };
            let expected = LeadEvent {
                sequence,
                receive_time,
                traceparent: trace_parent.unwrap_or_default().to_owned(),
                event: Some(expected),
            };

            prop_assert_eq!(frame.encoded_len(), expected.encoded_len());
            prop_assert_eq!(written(&frame), expected);
        }
    }
}
