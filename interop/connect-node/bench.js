#!/usr/bin/env node
// The load of `peat-sync bench`'s connect scenario: one Connect-Node client, speaking the
// Connect protocol (binary) to the HTTP listener or gRPC to the gRPC port, so that the two
// protocols are measured with the same client in the same run.
//
//   node bench.js --transport T --http-version V BASE_URL subscribe SINCE UNTIL
//     reads Subscribe from SINCE until the event at sequence UNTIL, as fast as it can;
//   node bench.js --transport T --http-version V BASE_URL put COUNT CONCURRENCY
//     makes COUNT PutDocument calls, CONCURRENCY at a time.
//
// T is connect-binary, connect-json or grpc; V is 1.1 or 2 (gRPC is HTTP/2 only). Prints one
// line of JSON: {"count": N, "seconds": S} (and, for put, "latencies_ms": [...] sorted).
import { parseArgs } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { ChangeType, PeatSidecar, SubscribeRequestSchema } from './gen/sidecar_pb.js';

const TRANSPORTS = {
  'connect-binary': (options) => createConnectTransport({ ...options, useBinaryFormat: true }),
  'connect-json': (options) => createConnectTransport({ ...options, useBinaryFormat: false }),
  grpc: (options) => createGrpcTransport({ ...options, httpVersion: '2' }),
};

function fail(problem) {
  process.stderr.write(`${problem}\n`);
  process.exit(2);
}

async function subscribe(client, since, until) {
  const request = create(SubscribeRequestSchema, { sinceSequence: since });
  const started = process.hrtime.bigint();
  let count = 0;
  for await (const change of client.subscribe(request)) {
    if (change.changeType === ChangeType.HEARTBEAT) continue;
    count += 1;
    if (change.sequence >= until) break;
  }
  return { count, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

async function put(client, count, concurrency) {
  const latencies = [];
  let next = 0;
  const json = JSON.stringify({ pad: 'x'.repeat(200) });
  async function loop() {
    while (next < count) {
      const number = next++;
      const sent = process.hrtime.bigint();
      await client.putDocument({ collection: 'bench', docId: `c${number}`, jsonData: json });
      latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
    }
  }
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, loop));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  return { count, seconds, latencies_ms: latencies };
}

const { values, positionals } = parseArgs({
  options: {
    transport: { type: 'string' },
    'http-version': { type: 'string', default: '2' },
  },
  allowPositionals: true,
});
const makeTransport = TRANSPORTS[values.transport];
if (!makeTransport) fail(`--transport is one of ${Object.keys(TRANSPORTS).join(', ')}`);
const [baseUrl, mode, first, second] = positionals;
const client = createClient(
  PeatSidecar,
  makeTransport({ baseUrl, httpVersion: values['http-version'] }),
);
let result;
if (mode === 'subscribe') {
  result = await subscribe(client, BigInt(first), BigInt(second));
} else if (mode === 'put') {
  result = await put(client, Number(first), Number(second));
} else {
  fail('the mode is subscribe SINCE UNTIL or put COUNT CONCURRENCY');
}
process.stdout.write(`${JSON.stringify(result)}\n`);
// An HTTP/2 session would otherwise keep the process alive until it idles out.
process.exit(0);
