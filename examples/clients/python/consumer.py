"""A durable consumer of roistat-leads' lead stream, with grpcio.

It resumes where the consumer named CONSUMER last acknowledged, processes each lead
(here: appends its id to PROCESSED_LOG, if set, and prints it), reports the CRM's
deal back with ReportDeal, and acknowledges the lead with AckLeads. A lead is
acknowledged only after it was processed and its deal reported: stopped at any
moment, the consumer sees again at most the lead it was working on (at least once),
and ReportDeal with the same deal id is idempotent. SIGTERM lets it finish the
current lead and exit.

The gRPC stubs are generated at start from the repository's proto with grpcio-tools.

Environment:
  ROISTAT_LEADS_GRPC        address, host:port (default 127.0.0.1:50051)
  ROISTAT_LEADS_GRPC_TOKEN  bearer token (the service's --grpc-token), if it has one
  ROISTAT_LEADS_GRPC_CA     PEM file of the CA that signed the service's certificate:
                            TLS is used when it is set
  ROISTAT_LEADS_GRPC_CERT, ROISTAT_LEADS_GRPC_KEY
                            client certificate and key (the service's --grpc-tls-client-ca)
  CONSUMER                  consumer name (default python-example)
  PROCESSED_LOG             file each processed lead id is appended to
  PROCESS_DELAY_MS          pause per lead after it is logged, as more work would take
                            (default 0)
"""

import os
import pathlib
import signal
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[3] / "proto"


def load_stubs():
    """Generates the Python modules of roistat/leads/v1/leads.proto and imports them."""
    out = tempfile.mkdtemp(prefix="roistat-leads-stubs-")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / "roistat/leads/v1/leads.proto"),
    ])
    if status != 0:
        sys.exit(f"cannot generate the stubs from {PROTO_ROOT}")
    sys.path.insert(0, out)
    from roistat.leads.v1 import leads_pb2, leads_pb2_grpc  # noqa: E402
    return leads_pb2, leads_pb2_grpc


def channel():
    address = os.environ.get("ROISTAT_LEADS_GRPC", "127.0.0.1:50051")
    ca = os.environ.get("ROISTAT_LEADS_GRPC_CA")
    if not ca:
        return grpc.insecure_channel(address)
    cert, key = os.environ.get("ROISTAT_LEADS_GRPC_CERT"), os.environ.get("ROISTAT_LEADS_GRPC_KEY")
    read = lambda path: pathlib.Path(path).read_bytes() if path else None
    credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    return grpc.secure_channel(address, credentials)


def main():
    pb, pb_grpc = load_stubs()
    token = os.environ.get("ROISTAT_LEADS_GRPC_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    consumer = os.environ.get("CONSUMER", "python-example")
    log_path = os.environ.get("PROCESSED_LOG")
    delay = int(os.environ.get("PROCESS_DELAY_MS", "0")) / 1000

    stopping = False
    busy = False
    stream = None

    # Between leads the stream is cancelled at once; during one, after it.
    def stop(*_):
        nonlocal stopping
        stopping = True
        if not busy and stream is not None:
            stream.cancel()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    client = pb_grpc.LeadServiceStub(channel())
    log = open(log_path, "a") if log_path else None
    while not stopping:
        stream = client.StreamLeads(
            pb.StreamLeadsRequest(consumer=consumer, kinds=[pb.EVENT_KIND_LEAD]),
            metadata=metadata,
        )
        try:
            for event in stream:
                if event.HasField("heartbeat"):
                    # Everything up to here was delivered or filtered out: move on.
                    if event.sequence:
                        client.AckLeads(pb.AckLeadsRequest(consumer=consumer, sequence=event.sequence),
                                        metadata=metadata)
                elif event.HasField("lead"):
                    busy = True
                    lead = event.lead
                    print(f"lead {lead.integration}/{lead.lead_id}: {lead.title}", flush=True)
                    if log:
                        log.write(f"{lead.integration}/{lead.lead_id}\n")
                        log.flush()
                    time.sleep(delay)  # the rest of the work
                    client.ReportDeal(pb.ReportDealRequest(
                        integration=lead.integration,
                        lead_id=lead.lead_id,
                        deal_id=f"py-{lead.lead_id}",
                        status="processed",
                        price="0",
                    ), metadata=metadata)
                    client.AckLeads(pb.AckLeadsRequest(consumer=consumer, sequence=event.sequence),
                                    metadata=metadata)
                    busy = False
                if stopping:
                    stream.cancel()
                    break
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED and stopping:
                break
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                print(f"stream interrupted ({error.code().name}); resuming", file=sys.stderr, flush=True)
                time.sleep(1)
                continue
            sys.exit(f"stream failed: {error.code().name}: {error.details()}")
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
