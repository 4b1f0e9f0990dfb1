import { type SlotRange } from '../slots.js';
import { parseUntrustedJson } from './untrusted-json.js';

/**
 * The bulk transport's frames (docs/wire-protocol.md, "Bulk transport"): dense
 * values over a plain TCP connection beside each shard's gRPC server, for
 * payloads where HTTP/2's framing and per-read buffers cost more than the
 * work (docs/benchmarks.md).
 *
 * A frame is a 4-byte little-endian header length, the header as UTF-8 JSON,
 * then the payload the header announces: a push request carries
 * `length × 4` bytes of little-endian float32 gradient (or, with
 * `compression`, `wireBytes` of the encoded gradient), a successful pull
 * reply `total × 4` bytes of values. One request at a time per connection;
 * the reply names the request's `id`.
 */

/** Bytes of the buffer each end of a bulk connection reads into, reused read after read. */
export const BULK_READ_BUFFER_BYTES = 1 << 20;

/** Largest header accepted, in bytes: a header names slot runs, never values. */
export const MAX_BULK_HEADER_BYTES = 1 << 20;

/**
 * One update a primary sends a backup (server/replication.ts): its kind
 * (`d` dense, `s` sparse), slot, worker, seq, the table (sparse) and the
 * lengths of its ids (sparse, uint32 halves) and gradient (float32) in the
 * payload, in that order. The same fields as a slot move's log entries.
 */
export interface ReplicaEntryHead {
  k: 'd' | 's';
  s: number;
  w: string;
  q: number;
  n: number;
  t?: string;
  i?: number;
}

export interface BulkRequest {
  id: number;
  /** `replicate`: a primary's updates for a backup (`entries`, their arrays in `length` payload bytes). */
  op: 'pull' | 'push' | 'replicate';
  epoch: number;
  ranges: SlotRange[];
  workerId: string;
  model: string;
  /** push: the per-worker sequence number. */
  seq?: number;
  /** push: values in the gradient (float32 values follow the header unless `compression` says otherwise). */
  length?: number;
  /** push: the codec of the gradient that follows (`fp16`, `int8`, `topk:R`; cluster/wire/gradient-codec.ts); absent for float32. */
  compression?: string;
  /** push with `compression`: bytes of the encoded gradient that follow the header. */
  wireBytes?: number;
  /** Under ssp/bsp: the step (see PullRequest.clock / PushHeader.clock). */
  clock?: number;
  /** pull: the worker's first clocked pull since it (re)started. */
  join?: boolean;
  /** replicate: the updates whose arrays follow, in order (`length` is then their bytes). */
  entries?: ReplicaEntryHead[];
}

export type BulkReply =
  /** pull: `total` float32 values follow. */
  | { id: number; ok: true; total: number; epoch: number }
  /** push: what the push did. */
  | { id: number; ok: true; epoch: number; appliedSlots: number; duplicateSlots: number; wireBytes: number }
  /** replicate: the updates taken. */
  | { id: number; ok: true; entries: number }
  /** The typed error, as a gRPC status would carry it (cluster/wire/status-codec.ts). */
  | { id: number; ok: false; code: number; details: string; metadata: Record<string, string> };

/** A frame's head: the length prefix and the JSON header. */
export function encodeHead(header: object): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(4 + json.length);
  out.writeUInt32LE(json.length, 0);
  json.copy(out, 4);
  return out;
}

/**
 * Reads bulk-transport frames off a byte stream (server/array-frame.ts's
 * FrameReader reads the other kind: one magic-headed frame of arrays held
 * whole in memory, a checkpoint or a slot-move log): `onHeader` gets each
 * header and says how many payload bytes follow it; `onPayload` gets them as
 * they arrive, in pieces that are views of the received chunks (no copy),
 * with their offset in the payload; they are only valid during the call (the
 * socket may reuse its read buffer). Throws on a header longer than {@link MAX_BULK_HEADER_BYTES}
 * or one that is not JSON: the stream cannot be trusted after either.
 */
export class BulkFrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private payloadLeft = 0;
  private payloadAt = 0;

  constructor(
    private readonly onHeader: (header: unknown) => number,
    private readonly onPayload: (bytes: Buffer, offset: number) => void,
    private readonly onPayloadEnd: () => void,
  ) {}

  push(chunk: Buffer): void {
    let data = chunk;
    while (data.length > 0) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, data.length);
        this.onPayload(data.subarray(0, take), this.payloadAt);
        this.payloadAt += take;
        this.payloadLeft -= take;
        data = data.subarray(take);
        if (this.payloadLeft === 0) this.onPayloadEnd();
        continue;
      }
      // Kept across reads: copied, since a reader may reuse its buffer for the next read.
      this.pending.push(Buffer.from(data));
      this.pendingBytes += data.length;
      data = Buffer.alloc(0);
      if (this.pendingBytes < 4) return;
      const head = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      const len = head.readUInt32LE(0);
      if (len > MAX_BULK_HEADER_BYTES) throw new Error(`a bulk frame header of ${len} bytes is over the ${MAX_BULK_HEADER_BYTES}-byte limit`);
      if (head.length < 4 + len) {
        this.pending = [head];
        return;
      }
      let header: unknown;
      try {
        header = parseUntrustedJson(head.toString('utf8', 4, 4 + len));
      } catch {
        throw new Error('a bulk frame header is not JSON');
      }
      this.pending = [];
      this.pendingBytes = 0;
      data = head.subarray(4 + len);
      this.payloadLeft = this.onHeader(header);
      this.payloadAt = 0;
      if (this.payloadLeft === 0) this.onPayloadEnd();
    }
  }
}
