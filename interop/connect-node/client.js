#!/usr/bin/env node
// A generic command-line client of peat.sidecar.v1 on Connect-Node (@connectrpc/connect-node),
// for the interop tests: any RPC of the service, through the Connect protocol (JSON or binary)
// or gRPC-Web, over HTTP/1.1 or HTTP/2 without TLS (h2c).
//
// The service and its messages come from gen/sidecar_pb.js, which protoc-gen-es generated from
// proto/sidecar.proto (see ../README.md): nothing here knows the wire format.
//
// The request is given in the proto's JSON mapping, and every response or streamed message is
// printed on one line of stdout in it, as @bufbuild/protobuf's toJson writes it: field names in
// lowerCamelCase (jsonData), uint64 as decimal strings (exact above 2^53), enum values by
// their proto names (CHANGE_TYPE_RESYNC), fields at their default value left out, and an unset
// proto3 `optional` left out while one set to its default is shown. A failed call prints
// {"code": "invalid_argument", "message": "..."} on stderr, with the Connect protocol's name
// of the code, and exits 1; bad usage exits 2.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { fromJsonString, toJson } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { codeToString } from '@connectrpc/connect/protocol-connect';
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { PeatSidecar } from './gen/sidecar_pb.js';

const USAGE = `usage: node client.js --transport TRANSPORT [--http-version 1.1|2] BASE_URL RPC [REQUEST]
       [--deadline SECONDS] [--count N] [--pause-after N]
TRANSPORT is connect-json, connect-binary or grpc-web; BASE_URL is http://HOST:PORT; RPC is a
method of peat.sidecar.v1.PeatSidecar (GetStatus, Subscribe ...); REQUEST is its request
message as JSON (default {}). --http-version defaults to 1.1; 2 is HTTP/2 with prior knowledge.
--deadline bounds the whole call (default 10).
A server-streaming RPC prints each message as it arrives, and ends:
  --count N        after N messages (fewer is a failure: code "ok" and what arrived);
  otherwise        when stdin closes (the call is cancelled, exit 0) or the server ends it.
  --pause-after N  stops reading the stream after N messages, until a line comes on stdin.`;

const TRANSPORTS = {
  'connect-json': (options) => createConnectTransport({ ...options, useBinaryFormat: false }),
  'connect-binary': (options) => createConnectTransport({ ...options, useBinaryFormat: true }),
  'grpc-web': (options) => createGrpcWebTransport({ ...options, useBinaryFormat: true }),
};

const OPTIONS = {
  transport: { type: 'string' },
  'http-version': { type: 'string', default: '1.1' },
  deadline: { type: 'string', default: '10' },
  count: { type: 'string' },
  'pause-after': { type: 'string' },
};

function usage(problem) {
  process.stderr.write(`${problem}\n${USAGE}\n`);
  process.exit(2);
}

function positiveInteger(values, name) {
  if (values[name] === undefined) return undefined;
  const value = Number(values[name]);
  if (!Number.isInteger(value) || value < 1) usage(`--${name} takes a whole number >= 1`);
  return value;
}

function print(schema, message) {
  process.stdout.write(`${JSON.stringify(toJson(schema, message))}\n`);
}

// Ends the process: an HTTP/2 session would otherwise keep it alive until it idles out.
// Writes to pipes are synchronous on Linux and macOS, so everything printed is out.
function exit(code, failure) {
  if (failure) process.stderr.write(`${JSON.stringify(failure)}\n`);
  process.exit(code);
}

function failure(error) {
  const connectError = ConnectError.from(error);
  return { code: codeToString(connectError.code), message: connectError.rawMessage };
}

// stdin, line by line: `next()` resolves to the next line, or null once stdin is closed.
function stdinLines() {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async () => {
    const { value, done } = await lines.next();
    return done ? null : value;
  };
}

async function unary(client, method, request, callOptions) {
  let response;
  try {
    response = await client[method.localName](request, callOptions);
  } catch (error) {
    exit(1, failure(error));
  }
  print(method.output, response);
  exit(0);
}

async function serverStreaming(client, method, request, callOptions, values) {
  const count = positiveInteger(values, 'count');
  const pauseAfter = positiveInteger(values, 'pause-after');
  const abort = new AbortController();
  let nextLine;
  let cancelled = false;
  if (count === undefined || pauseAfter !== undefined) {
    nextLine = stdinLines();
  }
  if (count === undefined) {
    // The first unread line is the pause's; the end of stdin ends the call.
    process.stdin.on('end', () => {
      cancelled = true;
      abort.abort();
    });
  }
  let received = 0;
  try {
    const stream = client[method.localName](request, { ...callOptions, signal: abort.signal });
    for await (const message of stream) {
      print(method.output, message);
      received += 1;
      if (received === count) exit(0);
      if (received === pauseAfter) {
        // Nothing reads the stream until a line comes: the transport's buffers fill up, then
        // flow control stops the server.
        if ((await nextLine()) === null) exit(0);
      }
    }
  } catch (error) {
    if (cancelled && ConnectError.from(error).code === Code.Canceled) exit(0);
    exit(1, failure(error));
  }
  if (count !== undefined) {
    exit(1, { code: 'ok', message: `the stream ended after ${received} of ${count} messages` });
  }
  exit(0);
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({ options: OPTIONS, allowPositionals: true });
  } catch (error) {
    usage(error.message);
  }
  const { values, positionals } = parsed;
  const [baseUrl, rpc, requestJson = '{}', ...rest] = positionals;
  if (rest.length || !rpc) usage('takes BASE_URL RPC [REQUEST]');
  const makeTransport = TRANSPORTS[values.transport];
  if (!makeTransport) usage(`no transport ${values.transport ?? ''}`);
  if (!['1.1', '2'].includes(values['http-version'])) usage('--http-version is 1.1 or 2');
  const seconds = Number(values.deadline);
  if (!(seconds > 0)) usage('--deadline takes a positive number of seconds');
  const method = PeatSidecar.methods.find((m) => m.name === rpc);
  if (!method) usage(`PeatSidecar has no method ${rpc}`);

  let request;
  try {
    request = fromJsonString(method.input, requestJson);
  } catch (error) {
    usage(`REQUEST is not a ${method.input.typeName} in JSON: ${error.message}`);
  }
  const transport = makeTransport({
    baseUrl,
    httpVersion: values['http-version'],
    // A field name the proto does not have fails, in what the server sends too.
    jsonOptions: { ignoreUnknownFields: false },
  });
  const client = createClient(PeatSidecar, transport);
  const callOptions = { timeoutMs: seconds * 1000 };
  if (method.methodKind === 'unary') {
    await unary(client, method, request, callOptions);
  } else if (method.methodKind === 'server_streaming') {
    await serverStreaming(client, method, request, callOptions, values);
  } else {
    usage(`${rpc} is a ${method.methodKind} method, which this client does not call`);
  }
}

main();
