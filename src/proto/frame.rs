//! Events as the server sends them: a `LeadEvent` whose body (a `Lead`, a
//! `DealMessage`, …) is already encoded, as it was stored, written to the stream
//! with the fields only known at commit around it. Nothing is decoded and encoded
//! again; every subscriber of a live event shares its bytes.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// `LeadEvent.sequence`, `LeadEvent.receive_time`.
const SEQUENCE: u32 = 1;
const RECEIVE_TIME: u32 = 2;
/// The `LeadEvent.event` oneof's fields.
pub const LEAD: u32 = 10;
pub const MESSAGE: u32 = 11;
pub const HEARTBEAT: u32 = 12;
pub const TASK: u32 = 13;
pub const CALL: u32 = 14;
/// `Lead.receive_time`, `Lead.sequence`: a lead carries them too.
const LEAD_RECEIVE_TIME: u32 = 16;
const LEAD_SEQUENCE: u32 = 17;

/// A `LeadEvent` ready to send: the encoded body of its oneof field `event`, and
/// the sequence and receive time to write around it. For a lead, they are also
/// written at the end of the `Lead` itself, where a field may come in any order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFrame {
    pub sequence: u64,
    pub receive_time: Option<prost_types::Timestamp>,
    /// The field of the oneof the body is (`LEAD`, `MESSAGE`, …).
    pub field: u32,
    pub body: Bytes,
}

impl EventFrame {
    /// A heartbeat: every event up to `sequence` was delivered or filtered out.
    pub fn heartbeat(sequence: u64, latest_sequence: u64) -> Self {
        let heartbeat = super::Heartbeat { latest_sequence };
        Self {
            sequence,
            receive_time: None,
            field: HEARTBEAT,
            body: Bytes::from(prost::Message::encode_to_vec(&heartbeat)),
        }
    }

    /// The fields written at the end of the body: a lead's own receive time and
    /// sequence.
    fn trailer_len(&self) -> usize {
        if self.field != LEAD {
            return 0;
        }
        let time = self.receive_time.as_ref().map_or(0, |time| {
            encoding::message::encoded_len(LEAD_RECEIVE_TIME, time)
        });
        let sequence = match self.sequence {
            0 => 0,
            sequence => encoding::uint64::encoded_len(LEAD_SEQUENCE, &sequence),
        };
        time + sequence
    }

    fn inner_len(&self) -> usize {
        self.body.len() + self.trailer_len()
    }
}

impl prost::Message for EventFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.sequence != 0 {
            encoding::uint64::encode(SEQUENCE, &self.sequence, buf);
        }
        if let Some(time) = &self.receive_time {
            encoding::message::encode(RECEIVE_TIME, time, buf);
        }
        encoding::encode_key(self.field, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.inner_len() as u64, buf);
        buf.put_slice(&self.body);
        if self.field == LEAD {
            if let Some(time) = &self.receive_time {
                encoding::message::encode(LEAD_RECEIVE_TIME, time, buf);
            }
            if self.sequence != 0 {
                encoding::uint64::encode(LEAD_SEQUENCE, &self.sequence, buf);
            }
        }
    }

    /// Frames are only sent: a received one is skipped whole.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let sequence = match self.sequence {
            0 => 0,
            sequence => encoding::uint64::encoded_len(SEQUENCE, &sequence),
        };
        let time = self
            .receive_time
            .as_ref()
            .map_or(0, |time| encoding::message::encoded_len(RECEIVE_TIME, time));
        let inner = self.inner_len();
        sequence
            + time
            + encoding::key_len(self.field)
            + encoding::encoded_len_varint(inner as u64)
            + inner
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The server's codec: prost's, with a small encode buffer, since most streams
/// idle most of the time (the buffer grows when events flow).
#[derive(Debug)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// Bytes first allocated to a stream's encode buffer, and how much it gathers
/// before handing it to the connection.
const BUFFER_BYTES: usize = 512;
const YIELD_BYTES: usize = 64 * 1024;

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{Lead, LeadEvent, lead_event};

    fn time() -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: 1_546_341_071,
            nanos: 123_000,
        }
    }

    #[test]
    fn a_frame_decodes_as_the_lead_event_it_stands_for() {
        let lead = Lead {
            lead_id: "90".into(),
            name: "Роберт".into(),
            ..Default::default()
        };
        let frame = EventFrame {
            sequence: 42,
            receive_time: Some(time()),
            field: LEAD,
            body: Bytes::from(lead.encode_to_vec()),
        };

        let bytes = frame.encode_to_vec();
        let event = LeadEvent::decode(bytes.as_slice()).unwrap();

        assert_eq!(bytes.len(), frame.encoded_len());
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
        let bytes = EventFrame::heartbeat(7, 9).encode_to_vec();
        let event = LeadEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(event.sequence, 7);
        assert_eq!(
            event.event,
            Some(lead_event::Event::Heartbeat(crate::proto::Heartbeat {
                latest_sequence: 9
            }))
        );
    }
}
