//! `StreamLeads`, served beside the generated service (which has every other
//! method): its request is decoded as tonic decodes any, and its response body
//! writes what the relay delivers as gRPC messages, a whole batch of stored events
//! into one buffer, each event's stored bytes copied once and no message encoded
//! twice.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::server::NamedService;
use tonic_prost::ProstCodec;
use tower::Service;

use super::{LeadApi, convert};
use crate::codec;
use crate::domain::EncodedEvent;
use crate::proto::{self, EventFrame, MESSAGE_PREFIX};
use crate::relay::{Error, StreamItem};
use crate::telemetry;

/// The method's path.
const STREAM_LEADS: &str = "/roistat.leads.v1.LeadService/StreamLeads";

/// Events are handed to the connection in pieces of about this many bytes at
/// most: live events that arrive together in one, a batch of stored events in
/// several.
const PIECE_BYTES: usize = 64 * 1024;

/// LeadService: `StreamLeads` here, every other method the generated server's.
#[derive(Clone)]
pub struct LeadRoutes<S> {
    generated: S,
    streams: StreamLeads,
}

impl<S> LeadRoutes<S> {
    pub fn new(generated: S, api: Arc<LeadApi>, max_request: usize, max_message: usize) -> Self {
        let streams = StreamLeads {
            api,
            max_request_bytes: max_request,
            max_message_bytes: max_message,
        };
        Self { generated, streams }
    }
}

/// The `StreamLeads` method.
#[derive(Clone)]
struct StreamLeads {
    api: Arc<LeadApi>,
    /// The largest request decoded and the largest event sent.
    max_request_bytes: usize,
    max_message_bytes: usize,
}

impl<S: NamedService> NamedService for LeadRoutes<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for LeadRoutes<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != STREAM_LEADS {
            return Box::pin(self.generated.call(request));
        }
        let streams = self.streams.clone();
        Box::pin(async move { Ok(streams.serve(request).await) })
    }
}

impl StreamLeads {
    /// Decodes the request, opens the stream, and answers with its events; a
    /// refusal is a response of trailers only, as tonic sends one.
    async fn serve(&self, request: http::Request<Body>) -> http::Response<Body> {
        let mut decoder = ProstCodec::<(), proto::StreamLeadsRequest>::default();
        let mut messages = Streaming::new_request(
            decoder.decoder(),
            request.into_body(),
            None,
            Some(self.max_request_bytes),
        );
        let opened = match messages.message().await {
            Ok(Some(request)) => self.open(request).await,
            Ok(None) => Err(super::invalid("the request carries no message")),
            Err(status) => Err(status),
        };
        match opened {
            Ok(items) => {
                let body = Events {
                    items,
                    replaying: Default::default(),
                    max_message_bytes: self.max_message_bytes,
                    end: None,
                    ended: false,
                };
                let mut response = http::Response::new(Body::new(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                response
            }
            Err(status) => status.into_http(),
        }
    }

    async fn open(
        &self,
        request: proto::StreamLeadsRequest,
    ) -> Result<mpsc::Receiver<StreamItem>, Status> {
        let request = convert::stream_request(request)?;
        Ok(self
            .api
            .relay
            .stream(request, self.api.stream_buffer)
            .await?)
    }
}

/// A subscriber's events as the response body: each item the relay delivers
/// written as gRPC messages, then the trailers when the relay ends the stream.
struct Events {
    items: mpsc::Receiver<StreamItem>,
    /// What is left of a batch of stored events, written a piece at a time.
    replaying: std::vec::IntoIter<EncodedEvent>,
    max_message_bytes: usize,
    /// The status the stream ends with once what is written has been sent.
    end: Option<Status>,
    ended: bool,
}

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::new();
        while this.end.is_none() {
            this.put_replayed(&mut buf);
            if buf.len() >= PIECE_BYTES {
                break;
            }
            match this.items.poll_recv(cx) {
                Poll::Ready(Some(StreamItem::Replayed(events))) => {
                    this.replaying = events.into_iter();
                }
                Poll::Ready(Some(StreamItem::Live(event))) => {
                    this.put(&mut buf, &codec::frame(&event))
                }
                Poll::Ready(Some(StreamItem::Heartbeat {
                    sequence,
                    latest_sequence,
                })) => {
                    let body = proto::heartbeat_body(latest_sequence);
                    let heartbeat = EventFrame {
                        person: None,
                        sequence,
                        receive_time: None,
                        field: proto::HEARTBEAT,
                        body: &body,
                        trace_parent: None,
                    };
                    this.put(&mut buf, &heartbeat);
                }
                Poll::Ready(None) => this.end = Some(Status::ok("")),
                Poll::Pending if buf.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if !buf.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
        }
        this.ended = true;
        let status = this.end.take().unwrap_or_else(|| Status::ok(""));
        let mut trailers = http::HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Events {
    /// Writes stored events of the batch being replayed until the piece is full.
    fn put_replayed(&mut self, buf: &mut BytesMut) {
        if self.replaying.len() > 0 && buf.capacity() < PIECE_BYTES {
            buf.reserve(PIECE_BYTES);
        }
        while buf.len() < PIECE_BYTES && self.end.is_none() {
            let Some(event) = self.replaying.next() else {
                return;
            };
            self.put(buf, &codec::frame(&event));
        }
    }

    /// Writes a frame as a message; one larger than a message may be
    /// (`--grpc-max-send-message-bytes`) ends the stream before it.
    fn put(&mut self, buf: &mut BytesMut, frame: &EventFrame<'_>) {
        let len = frame.encoded_len();
        if len > self.max_message_bytes {
            self.end = Some(Status::from(Error::OutOfRange(format!(
                "event {} is {len} bytes encoded, more than the {} a message may have \
                 (--grpc-max-send-message-bytes)",
                frame.sequence, self.max_message_bytes
            ))));
            self.replaying = Default::default();
            return;
        }
        buf.reserve(MESSAGE_PREFIX + len);
        frame.put_message(buf);
        if let Some(trace) = frame.trace_parent {
            telemetry::delivered(trace, frame.sequence);
        }
    }
}
