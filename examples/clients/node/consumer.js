// A durable consumer of roistat-leads' lead stream, with @grpc/grpc-js.
//
// It resumes where the consumer named CONSUMER last acknowledged, processes each
// lead (here: appends its id to PROCESSED_LOG, if set, and prints it), reports the
// CRM's deal back with ReportDeal, and acknowledges the lead with AckLeads. A lead is
// acknowledged only after it was processed and its deal reported: stopped at any
// moment, the consumer sees again at most the lead it was working on (at least
// once), and ReportDeal with the same deal id is idempotent. SIGTERM lets it finish
// the current lead and exit.
//
// The proto is loaded at start from the repository with @grpc/proto-loader.
//
// Environment:
//   ROISTAT_LEADS_GRPC        address, host:port (default 127.0.0.1:50051)
//   ROISTAT_LEADS_GRPC_TOKEN  bearer token (the service's --grpc-token), if it has one
//   ROISTAT_LEADS_GRPC_CA     PEM file of the CA that signed the service's
//                             certificate: TLS is used when it is set
//   ROISTAT_LEADS_GRPC_CERT, ROISTAT_LEADS_GRPC_KEY
//                             client certificate and key (the service's --grpc-tls-client-ca)
//   CONSUMER                  consumer name (default node-example)
//   PROCESSED_LOG             file each processed lead id is appended to
//   PROCESS_DELAY_MS          pause per lead after it is logged, as more work would
//                             take (default 0)
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '../../../proto');

function loadService() {
  const definition = protoLoader.loadSync('roistat/leads/v1/leads.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).roistat.leads.v1.LeadService;
}

function credentials() {
  const ca = process.env.ROISTAT_LEADS_GRPC_CA;
  if (!ca) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(
    read(ca),
    read(process.env.ROISTAT_LEADS_GRPC_KEY),
    read(process.env.ROISTAT_LEADS_GRPC_CERT),
  );
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const LeadService = loadService();
  const address = process.env.ROISTAT_LEADS_GRPC || '127.0.0.1:50051';
  const client = new LeadService(address, credentials());
  const metadata = new grpc.Metadata();
  if (process.env.ROISTAT_LEADS_GRPC_TOKEN) {
    metadata.set('authorization', `Bearer ${process.env.ROISTAT_LEADS_GRPC_TOKEN}`);
  }
  const consumer = process.env.CONSUMER || 'node-example';
  const logPath = process.env.PROCESSED_LOG;
  const delay = Number(process.env.PROCESS_DELAY_MS || '0');

  let stopping = false;
  let busy = false;
  let stream = null;
  // Between leads the stream is cancelled at once; during one, after it.
  const stop = () => {
    stopping = true;
    if (!busy && stream) stream.cancel();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  while (!stopping) {
    stream = client.streamLeads({ consumer, kinds: ['EVENT_KIND_LEAD'] }, metadata);
    try {
      for await (const event of stream) {
        if (event.event === 'heartbeat') {
          // Everything up to here was delivered or filtered out: move on.
          if (event.sequence !== '0') {
            await call(client, 'ackLeads', { consumer, sequence: event.sequence }, metadata);
          }
        } else if (event.event === 'lead') {
          busy = true;
          const lead = event.lead;
          console.log(`lead ${lead.integration}/${lead.lead_id}: ${lead.title}`);
          if (logPath) fs.appendFileSync(logPath, `${lead.integration}/${lead.lead_id}\n`);
          if (delay) await sleep(delay); // the rest of the work
          await call(client, 'reportDeal', {
            integration: lead.integration,
            lead_id: lead.lead_id,
            deal_id: `node-${lead.lead_id}`,
            status: 'processed',
            price: '0',
          }, metadata);
          await call(client, 'ackLeads', { consumer, sequence: event.sequence }, metadata);
          busy = false;
        }
        if (stopping) {
          stream.cancel();
          break;
        }
      }
    } catch (error) {
      if (stopping && error.code === grpc.status.CANCELLED) break;
      if (error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.INTERNAL) {
        console.error(`stream interrupted (${error.code}); resuming`);
        await sleep(1000);
        continue;
      }
      console.error(`stream failed: ${error.code}: ${error.details}`);
      process.exit(1);
    }
  }
  client.close();
  console.log('stopped');
}

main();
