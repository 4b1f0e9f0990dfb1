import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from '../../cluster/grpc-client.js';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { ANY_ROLE } from '../../cluster/tls/authorization.js';
import { nowNs, serve } from '../child-rpc.js';

/**
 * One end of the gRPC transport baseline: what grpc-js itself streams between
 * two processes, with Tessera's server and channel settings (message limits,
 * raised flow-control windows), but no protobuf, no copies of our own and no
 * shard work: messages are raw bytes (identity codecs) sent from one prebuilt
 * buffer. Tessera's dense figures can be no better than this.
 */

const identity = (b: Buffer): Buffer => b;
const DEFINITION: grpc.ServiceDefinition = {
  push: { path: '/tessera.bench.Stream/Push', requestStream: true, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
  pull: { path: '/tessera.bench.Stream/Pull', requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
};

type Stub = grpc.Client & {
  push(cb: (err: grpc.ServiceError | null) => void): grpc.ClientWritableStream<Buffer>;
  pull(req: Buffer): grpc.ClientReadableStream<Buffer>;
};

let server: TesseraGrpcServer | undefined;
let client: Stub | undefined;
let payload = Buffer.alloc(0);

/** Writes `total` bytes as messages of `chunk` bytes, waiting for drain as the Tessera client does. */
async function writeAll(stream: grpc.ClientWritableStream<Buffer> | grpc.ServerWritableStream<Buffer, Buffer>, total: number, chunk: number): Promise<void> {
  for (let at = 0; at < total; at += chunk) {
    const n = Math.min(chunk, total - at);
    if (!stream.write(payload.subarray(0, n))) await new Promise((r) => stream.once('drain', r));
  }
}

serve(
  {
    listen: async ({ chunk }: { chunk: number }) => {
      payload = Buffer.alloc(chunk, 0x3c);
      server = await startGrpcServer('127.0.0.1:0', [
        {
          name: 'tessera.bench.Stream',
          definition: DEFINITION,
          rules: { Push: ANY_ROLE, Pull: ANY_ROLE },
          implementation: {
            push: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
              call.on('data', () => undefined);
              call.on('end', () => cb(null, Buffer.alloc(0)));
            },
            pull: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
              const total = call.request.readUInt32LE(0);
              void writeAll(call, total, chunk).then(() => call.end());
            },
          },
        },
      ]);
      return { port: server.port };
    },
    connect: ({ port, chunk }: { port: number; chunk: number }) => {
      payload = Buffer.alloc(chunk, 0x5a);
      const Ctor = grpc.makeGenericClientConstructor(DEFINITION, 'Stream');
      client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as Stub;
    },
    push: ({ bytes, chunk }: { bytes: number; chunk: number }) =>
      new Promise<{ start: number; end: number }>((resolve, reject) => {
        const start = nowNs();
        const call = client!.push((err) => (err ? reject(err) : resolve({ start, end: nowNs() })));
        void writeAll(call, bytes, chunk).then(() => call.end());
      }),
    pull: ({ bytes }: { bytes: number }) =>
      new Promise<{ start: number; end: number }>((resolve, reject) => {
        const req = Buffer.alloc(4);
        req.writeUInt32LE(bytes);
        const start = nowNs();
        const call = client!.pull(req);
        call.on('data', () => undefined);
        call.on('error', reject);
        call.on('end', () => resolve({ start, end: nowNs() }));
      }),
  },
  async () => {
    client?.close();
    await server?.close(200);
  },
);
