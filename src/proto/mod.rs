//! The code generated from `proto/roistat/leads/v1/leads.proto` (messages and the
//! client as every client sees them; the server, less `StreamLeads`, whose events
//! are written as `EventFrame`s), the descriptors served by reflection, and
//! helpers for the well-known types it uses.

mod frame;

use time::OffsetDateTime;

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("roistat.leads.v1");
}

#[allow(clippy::all, clippy::pedantic)]
mod server {
    include!(concat!(env!("OUT_DIR"), "/server/roistat.leads.v1.rs"));
}

pub use frame::{EventFrame, FramePerson, HEARTBEAT, LEAD, MESSAGE_PREFIX, heartbeat_body};
pub use generated::*;
pub use server::lead_service_server;

/// The encoded descriptors served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("leads_descriptor");

/// A time as a protobuf Timestamp.
pub fn timestamp(time: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.unix_timestamp(),
        nanos: time.nanosecond() as i32,
    }
}

/// A Timestamp as a time; `None` when out of range.
pub fn from_timestamp(timestamp: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_546_341_071_123_456_789).unwrap();
        assert_eq!(from_timestamp(&timestamp(time)), Some(time));
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&far), None);
    }
}
