import type * as grpc from '@grpc/grpc-js';
import { type Compression } from '../../cluster/wire/gradient-codec.js';
import { type TesseraError } from '../../cluster/errors.js';
import { type ShardBatch } from '../../cluster/routing.js';

/**
 * The client's transport layer (in the manner of ps-lite's `Van`): how dense
 * values reach one shard, whatever carries them. One implementation per wire
 * — gRPC streams (grpc-dense.ts), the bulk transport's TCP frames
 * (bulk-dense.ts), an in-memory one for the client's unit tests — behind one
 * provider keyed by shard address (node-pool.ts). Routing, recovery, codecs
 * and error feedback stay above it, in TesseraClient.
 */

/** Where a training worker's pull or push stands under ssp/bsp (see cluster/consistency.ts). */
export interface StepClock {
  /** The step: the clock of the pull it computes from, and of the push it sends. */
  clock: number;
  /** On a worker's first pull after it (re)started: its clock on the shards becomes `clock`. */
  join?: boolean;
}

/** What every dense request says of its sender. */
export interface DenseRequest {
  /** The sender's map epoch. */
  epoch: number;
  workerId: string;
  model: string;
}

export interface DensePull extends DenseRequest {
  at?: StepClock;
}

export interface DensePush extends DenseRequest {
  seq: number;
  clock?: number;
  /** The float32 gradient, laid out as the batch's `offset`s say (sent when `encoded` is null). */
  gradient: Float32Array;
  compression: Compression;
  /** Under a codec: each slot's encoding, by slot (sent instead of `gradient`). */
  encoded: ReadonlyMap<number, Uint8Array> | null;
}

export interface PushAck {
  appliedSlots: number;
  duplicateSlots: number;
  /** Bytes of gradient the push put on the wire. */
  wireBytes: number;
}

/** Dense pulls and pushes to one shard. Errors are typed (cluster/errors.ts), as the shard sent them or as the wire failed. */
export interface DenseTransport {
  /** "grpc", "bulk", or another name, for logs and tests. */
  readonly kind: string;
  /** Writes the values of `batch`'s ranges into `out` at each range's `offset`. */
  pull(batch: ShardBatch, out: Float32Array, req: DensePull): Promise<void>;
  push(batch: ShardBatch, req: DensePush): Promise<PushAck>;
}

/** The client's connections, one set per shard address: dense transports, the stubs beside them. */
export interface TransportProvider {
  /** The dense transport to the shard at `address` (opened on first use); `bulkAddress`, when the map names the shard's bulk port, spares asking it. */
  dense(address: string, bulkAddress?: string): Promise<DenseTransport>;
  /** The `tessera.v1.SparseShard` stub of the shard at `address` (sparse tables travel over gRPC only). */
  sparse(address: string): grpc.Client;
  /** The shard's Describe: its clock, and where its bulk transport listens. */
  describe(address: string): Promise<{ clock: number; bulkAddress: string }>;
  /** Told of every failed call: drops what may be stale for `address` (a closed bulk channel), so the retry opens afresh. */
  failed(address: string, err: TesseraError): void;
  /** Closes what it holds for addresses not in `live`. */
  prune(live: ReadonlySet<string>): void;
  close(): void;
}

/** The encoded bytes of `batch`'s slots, in the order of its ranges. */
export function encodedPayload(batch: ShardBatch, encoded: ReadonlyMap<number, Uint8Array>): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const r of batch.ranges) for (let s = r.begin; s < r.end; s++) out.push(encoded.get(s)!);
  return out;
}
