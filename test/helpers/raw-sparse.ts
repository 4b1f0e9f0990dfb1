import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from '../../cluster/grpc-client.js';
import { sparseShardService } from '../../cluster/proto.js';
import { type SparseStore } from '../../server/sparse-store.js';
import { type RawResult } from './raw-shard.js';

/**
 * A bare `tessera.v1.SparseShard` stub that sends exactly the messages a test
 * gives it, bypassing the SparseClient's own checks, to see what a shard answers.
 */
type Cb<T> = (err: grpc.ServiceError | null, res?: T) => void;
export type SparsePullReply = { epoch: number; dim: number; values: Buffer; rowsCreated: number };
export type SparsePushAck = { epoch: number; appliedSlots: number; duplicateSlots: number; rowsApplied: number; rowsCreated: number };
export type RawSparseClient = grpc.Client & {
  pull(req: object, opts: grpc.CallOptions, cb: Cb<SparsePullReply>): grpc.ClientUnaryCall;
  push(req: object, opts: grpc.CallOptions, cb: Cb<SparsePushAck>): grpc.ClientUnaryCall;
  describe(req: object, opts: grpc.CallOptions, cb: Cb<{ shardId: string; epoch: number; tables: object[] }>): grpc.ClientUnaryCall;
};

export function rawSparseClient(address: string): RawSparseClient {
  const Ctor = sparseShardService();
  return new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as RawSparseClient;
}

export function rawSparse<T>(client: RawSparseClient, method: 'pull' | 'push' | 'describe', req: object, options: grpc.CallOptions = {}): Promise<RawResult<T>> {
  return new Promise((resolve) => {
    (client[method] as (r: object, o: grpc.CallOptions, cb: Cb<T>) => void).call(client, req, options, (error, value) => resolve(error ? { ok: false, error } : { ok: true, value: value as T }));
  });
}

/** Little-endian uint64 bytes of `ids`. */
export function u64(ids: readonly bigint[] | BigUint64Array): Buffer {
  const a = ids instanceof BigUint64Array ? ids : BigUint64Array.from(ids);
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Every row a store holds, bit for bit (ids, values, optimizer state, steps,
 * per table and slot), and its row counts: equal snapshots mean nothing changed.
 */
export function snapshotSparse(store: SparseStore): Buffer {
  const parts: Buffer[] = [];
  for (const stats of store.stats()) {
    parts.push(Buffer.from(JSON.stringify([stats.name, stats.rows, stats.rowsCreated])));
    const table = store.table(stats.name);
    for (const s of table.heldSlots()) {
      const rows = table.slot(s)!;
      const d = table.dim;
      const view = (a: ArrayBufferView, elems: number) => Buffer.from(a.buffer, a.byteOffset, elems * 4);
      parts.push(Buffer.from(`slot ${s} rows ${rows.count}`), view(rows.ids, 2 * rows.count), view(rows.values, d * rows.count), view(rows.steps, rows.count));
      if (rows.s1) parts.push(view(rows.s1, d * rows.count));
      if (rows.s2) parts.push(view(rows.s2, d * rows.count));
    }
  }
  return Buffer.concat(parts);
}
