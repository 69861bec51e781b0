#!/usr/bin/env node
// A generic command-line client of peat.sidecar.v1 on @grpc/grpc-js, for the interop tests.
// One operation per run; its response as one line of JSON on stdout (subscribe: one line per
// event). A failed call prints {"code": "INVALID_ARGUMENT", "details": "..."} on stderr and
// exits 1; bad usage exits 2.
//
// The proto is loaded at run time, with no generated code, as a JavaScript user of the API
// would load it. Messages are printed as proto-loader decodes them:
//   keepCase      field names as the proto spells them (json_data, not jsonData);
//   longs: String uint64 fields (sequence, ...) as decimal strings: a JS number is not exact
//                 above 2^53;
//   enums: String enum values by their proto names (CHANGE_TYPE_RESYNC, RESYNC_REASON_...),
//                 so a renumbering would show;
//   defaults      unset fields at their default value, so every key is there; except unset
//                 proto3 `optional` fields (json_data of an absent document, or of a
//                 delete), which are left out.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'sidecar.proto');
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true };
const USAGE = `usage: node client.js ADDRESS OPERATION [ARGUMENTS] [--deadline SECONDS]
operations:
  status
  put COLLECTION DOC_ID JSON
  get COLLECTION DOC_ID
  delete COLLECTION DOC_ID
  list COLLECTION
  subscribe --count N [--collections A,B] [--since SEQUENCE] [--epoch EPOCH] [--snapshot]
ADDRESS is HOST:PORT or unix:///PATH. --deadline bounds the whole call (default 10).
subscribe prints the first N events, then cancels the stream.`;

// operation -> [rpc, request from the positional arguments]
const UNARY = {
  status: ['GetStatus', () => ({})],
  put: ['PutDocument', (collection, doc_id, json_data) => ({ collection, doc_id, json_data })],
  get: ['GetDocument', (collection, doc_id) => ({ collection, doc_id })],
  delete: ['DeleteDocument', (collection, doc_id) => ({ collection, doc_id })],
  list: ['ListDocuments', (collection) => ({ collection })],
};

const OPTIONS = {
  collections: { type: 'string' },
  since: { type: 'string' },
  epoch: { type: 'string' },
  snapshot: { type: 'boolean', default: false },
  count: { type: 'string' },
  deadline: { type: 'string', default: '10' },
};

function usage(problem) {
  process.stderr.write(`${problem}\n${USAGE}\n`);
  process.exit(2);
}

function fail(client, error) {
  const failure = { code: grpc.status[error.code] ?? String(error.code), details: error.details };
  process.stderr.write(`${JSON.stringify(failure)}\n`);
  process.exitCode = 1;
  client.close();
}

function unary(client, operation, args, deadline) {
  const [rpc, makeRequest] = UNARY[operation];
  if (args.length !== makeRequest.length) {
    usage(`${operation} takes ${makeRequest.length} arguments`);
  }
  client[rpc](makeRequest(...args), { deadline }, (error, response) => {
    if (error) return fail(client, error);
    console.log(JSON.stringify(response));
    client.close();
  });
}

function subscribe(client, values, deadline) {
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1) usage('subscribe needs --count N (N >= 1)');
  const request = {
    collections: values.collections ? values.collections.split(',') : [],
    snapshot: values.snapshot,
    control_events: true,
  };
  // Left out unless given: both are proto3 `optional`, and unset means something other than
  // 0 or "". The sequence stays a string, exact for any uint64.
  if (values.since !== undefined) request.since_sequence = values.since;
  if (values.epoch !== undefined) request.epoch = values.epoch;

  let received = 0;
  const stream = client.Subscribe(request, { deadline });
  stream.on('data', (change) => {
    if (received === count) return; // already cancelled: ignore what was in flight
    console.log(JSON.stringify(change));
    if (++received === count) {
      stream.cancel(); // reported as a CANCELLED error, which is ours: ignored below
      client.close();
    }
  });
  stream.on('error', (error) => {
    if (received < count) fail(client, error);
  });
  stream.on('status', (status) => {
    if (status.code === grpc.status.OK && received < count) {
      const details = `the stream ended after ${received} of ${count} events`;
      fail(client, { code: status.code, details });
    }
  });
}

function main() {
  let parsed;
  try {
    parsed = parseArgs({ options: OPTIONS, allowPositionals: true });
  } catch (error) {
    usage(error.message);
  }
  const { values, positionals } = parsed;
  const [address, operation, ...args] = positionals;
  if (!(operation in UNARY || operation === 'subscribe')) usage(`no operation ${operation ?? ''}`);
  const seconds = Number(values.deadline);
  if (!(seconds > 0)) usage('--deadline takes a positive number of seconds');
  const deadline = new Date(Date.now() + seconds * 1000);

  const api = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, LOADER_OPTIONS));
  const client = new api.peat.sidecar.v1.PeatSidecar(address, grpc.credentials.createInsecure());
  if (operation === 'subscribe') {
    if (args.length) usage('subscribe takes no positional arguments');
    subscribe(client, values, deadline);
  } else {
    unary(client, operation, args, deadline);
  }
}

main();
