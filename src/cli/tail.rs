//! `roistat-leads tail`: a command-line client of StreamLeads that prints one JSON
//! object per line, and with `--consumer` acknowledges each event once printed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::{causes, with_causes};

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::proto::lead_event::Event;
use crate::proto::lead_service_client::LeadServiceClient;
use crate::proto::{self, AckLeadsRequest, LeadEvent, StreamLeadsRequest};

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Address of the service's gRPC server: host:port, http://host:port, or
    /// https://host:port for a server with TLS.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,

    /// Trust the server certificate this CA issued (PEM) instead of the system's
    /// roots; implies TLS.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// The client certificate to present to a server that requires one (PEM; with
    /// --tls-key); implies TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The name the server certificate must carry, when it differs from the host
    /// in --grpc-addr.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// The bearer token the service requires (--grpc-token of serve).
    #[arg(long, env = "ROISTAT_LEADS_GRPC_TOKEN", hide_env_values = true)]
    pub grpc_token: Option<String>,

    /// A named, durable consumer: resume where it stands and acknowledge each event
    /// after printing it.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,

    /// Start after this sequence.
    #[arg(long, value_name = "N", conflicts_with_all = ["only_new", "since"])]
    pub after: Option<u64>,

    /// Only events that arrive from now on.
    #[arg(long, conflicts_with = "since")]
    pub only_new: bool,

    /// Skip the leads of persons seen before (first-time persons only).
    #[arg(long)]
    pub first_time_only: bool,

    /// Start with the events received at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<OffsetDateTime>,

    /// Only leads from these sources (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub source: Vec<SourceArg>,

    /// Only these kinds of events (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<KindArg>,

    /// Only events of these integrations (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub integration: Vec<String>,

    /// Print heartbeats too (they are acknowledged either way).
    #[arg(long)]
    pub heartbeats: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    LeadHunter,
    Calltracking,
    Crm,
    Jivosite,
    Other,
}

/// The kinds `--kind` takes: the proto's `EventKind`s, by their names without the
/// prefix (a test holds the two lists equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KindArg {
    Lead,
    Message,
    Task,
    Call,
    UnknownAction,
    PersonsMerged,
    PersonSplit,
}

impl KindArg {
    /// The proto's value of the same name.
    fn proto(self) -> proto::EventKind {
        let name = self
            .to_possible_value()
            .map(|value| value.get_name().to_ascii_uppercase())
            .unwrap_or_default();
        proto::EventKind::from_str_name(&format!("EVENT_KIND_{name}"))
            .unwrap_or(proto::EventKind::Unspecified)
    }
}

fn parse_time(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|error| format!("not an RFC 3339 time: {error}"))
}

impl TailArgs {
    /// The client's TLS: the given CA or the system's roots, and the client
    /// certificate if one is given.
    fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read(path)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }

    fn request(&self) -> StreamLeadsRequest {
        StreamLeadsRequest {
            after_sequence: self.after.unwrap_or(0),
            only_new: self.only_new,
            first_time_only: self.first_time_only,
            consumer: self.consumer.clone().unwrap_or_default(),
            start_time: self.since.map(crate::proto::timestamp),
            integrations: self.integration.clone(),
            sources: self
                .source
                .iter()
                .map(|source| {
                    (match source {
                        SourceArg::LeadHunter => proto::LeadSource::LeadHunter,
                        SourceArg::Calltracking => proto::LeadSource::Calltracking,
                        SourceArg::Crm => proto::LeadSource::Crm,
                        SourceArg::Jivosite => proto::LeadSource::Jivosite,
                        SourceArg::Other => proto::LeadSource::Other,
                    }) as i32
                })
                .collect(),
            kinds: self.kind.iter().map(|kind| kind.proto() as i32).collect(),
        }
    }
}

/// Runs `tail` until the stream ends, Ctrl-C, or a closed output pipe.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let tls_asked =
        args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_server_name.is_some();
    let url = match args.grpc_addr.split_once("://") {
        Some(("http", _)) if tls_asked => {
            anyhow::bail!("--tls-* options need an https:// address, or one without a scheme")
        }
        Some(_) => args.grpc_addr.clone(),
        None if tls_asked => format!("https://{}", args.grpc_addr),
        None => format!("http://{}", args.grpc_addr),
    };
    // Wide windows and large frames: a tail from the start reads a whole history.
    let mut endpoint = Channel::from_shared(url.clone())?
        .initial_stream_window_size(8 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .max_frame_size(1024 * 1024);
    if url.starts_with("https://") {
        endpoint = endpoint.tls_config(args.client_tls()?)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to {url}: {}", causes(&error)))?;
    let authorization = match &args.grpc_token {
        Some(token) => Some(
            tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                anyhow::anyhow!("--grpc-token has characters a header cannot carry")
            })?,
        ),
        None => None,
    };
    let mut client =
        LeadServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(authorization) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
            }
            Ok(request)
        });
    let mut stream = client
        .stream_leads(args.request())
        .await
        .map_err(|status| anyhow::anyhow!("StreamLeads: {}", status_text(&status)))?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    // Created before the loop, so a Ctrl-C that arrives while an ack is under way
    // is not missed.
    let interrupted = crate::signal::shutdown_signal();
    tokio::pin!(interrupted);
    // `| head -1` closes the pipe while we wait for the next event: notice it then,
    // not only at the next write.
    let output_closed = output_closed();
    tokio::pin!(output_closed);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = &mut output_closed => return Ok(()),
            message = stream.message() => message,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(status) => anyhow::bail!("stream failed: {}", status_text(&status)),
        };
        let heartbeat = matches!(event.event, Some(Event::Heartbeat(_)));
        if !heartbeat || args.heartbeats {
            let mut line = serde_json::to_vec(&event_json(&event))?;
            line.push(b'\n');
            let written = stdout.write_all(&line).and_then(|()| stdout.flush());
            if let Err(error) = written {
                // The reader went away (`| head`): a clean end, and no ack.
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error.into());
            }
        }
        if let Some(consumer) = &args.consumer {
            let ack = AckLeadsRequest {
                consumer: consumer.clone(),
                sequence: event.sequence,
            };
            client
                .ack_leads(ack)
                .await
                .map_err(|status| anyhow::anyhow!("AckLeads: {}", status_text(&status)))?;
        }
    }
}

/// A status's message and what caused it (a TLS alert, a refused connection).
fn status_text(status: &tonic::Status) -> String {
    with_causes(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

/// Completes when standard output reports an error or a hang-up, as a pipe does
/// once its reader has gone; never where that cannot be watched.
async fn output_closed() {
    let (closed, watch) = tokio::sync::oneshot::channel::<()>();
    // A detached thread: poll(2) blocks, and must not hold up the runtime's exit.
    std::thread::spawn(move || {
        #[cfg(unix)]
        {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let stdout = std::io::stdout();
            // No events asked for: poll reports only errors and hang-ups.
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            while let Err(nix::errno::Errno::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
            let _ = closed.send(());
        }
        #[cfg(not(unix))]
        drop(closed);
    });
    if watch.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// An event as JSON: proto field names, enum value names, RFC 3339 times.
pub fn event_json(event: &LeadEvent) -> Value {
    let mut object = Map::new();
    object.insert("sequence".into(), json!(event.sequence));
    if let Some(time) = &event.receive_time {
        object.insert("receive_time".into(), time_json(time));
    }
    match &event.event {
        Some(Event::Lead(lead)) => {
            object.insert(
                "lead".into(),
                json!({
                    "integration": lead.integration,
                    "lead_id": lead.lead_id,
                    "visit": lead.visit,
                    "title": lead.title,
                    "text": lead.text,
                    "name": lead.name,
                    "phone": lead.phone,
                    "email": lead.email,
                    "page": lead.page,
                    "fields": lead.fields,
                    "data_json": lead.data_json,
                    "create_time": lead.create_time.as_ref().map(time_json),
                    "source": lead.source().as_str_name(),
                    "manager_id": lead.manager_id,
                    "extra": lead.extra,
                    "phone_e164": lead.phone_e164,
                    "email_normalized": lead.email_normalized,
                    "person_id": lead.person_id,
                    "returning": lead.returning,
                }),
            );
        }
        Some(Event::Message(message)) => {
            object.insert(
                "message".into(),
                json!({
                    "integration": message.integration,
                    "lead_id": message.lead_id,
                    "title": message.title,
                    "text": message.text,
                    "extra": message.extra,
                }),
            );
        }
        Some(Event::Task(task)) => {
            object.insert(
                "task".into(),
                json!({
                    "integration": task.integration,
                    "element_id": task.element_id,
                    "deadline": task.deadline.as_ref().map(time_json),
                    "text": task.text,
                    "extra": task.extra,
                }),
            );
        }
        Some(Event::Call(call)) => {
            object.insert(
                "call".into(),
                json!({
                    "integration": call.integration,
                    "call_id": call.call_id,
                    "callee": call.callee,
                    "caller": call.caller,
                    "date": call.date.as_ref().map(time_json),
                    "visit": call.visit,
                    "marker": call.marker,
                    "status": call.status,
                    "order_id": call.order_id,
                    "duration": call.duration,
                    "file_url": call.file_url,
                    "extra": call.extra,
                    "callee_e164": call.callee_e164,
                    "caller_e164": call.caller_e164,
                }),
            );
        }
        Some(Event::PersonsMerged(merged)) => {
            object.insert(
                "persons_merged".into(),
                json!({
                    "integration": merged.integration,
                    "kept_person_id": merged.kept_person_id,
                    "merged_person_id": merged.merged_person_id,
                    "lead_id": merged.lead_id,
                    "linked_by": merged.linked_by,
                }),
            );
        }
        Some(Event::PersonSplit(split)) => {
            object.insert(
                "person_split".into(),
                json!({
                    "integration": split.integration,
                    "person_id": split.person_id,
                    "new_person_id": split.new_person_id,
                    "unlinked": split.unlinked,
                    "lead_ids": split.lead_ids,
                }),
            );
        }
        Some(Event::UnknownAction(unknown)) => {
            let parameters: Vec<Value> = unknown
                .parameters
                .iter()
                .map(|parameter| json!({"name": parameter.name, "value": parameter.value}))
                .collect();
            object.insert(
                "unknown_action".into(),
                json!({
                    "integration": unknown.integration,
                    "action": unknown.action,
                    "parameters": parameters,
                }),
            );
        }
        Some(Event::Heartbeat(heartbeat)) => {
            object.insert(
                "heartbeat".into(),
                json!({ "latest_sequence": heartbeat.latest_sequence }),
            );
        }
        None => {}
    }
    Value::Object(object)
}

fn time_json(time: &prost_types::Timestamp) -> Value {
    crate::proto::from_timestamp(time)
        .and_then(|time| time.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_takes_every_kind_of_the_proto_by_its_name() {
        let proto_kinds: Vec<proto::EventKind> = (1..)
            .map_while(|value| proto::EventKind::try_from(value).ok())
            .collect();
        let taken: Vec<proto::EventKind> = KindArg::value_variants()
            .iter()
            .map(|kind| kind.proto())
            .collect();
        assert_eq!(
            taken, proto_kinds,
            "--kind takes each EventKind of the proto, in its order"
        );
    }
}
