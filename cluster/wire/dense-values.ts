import { endianness } from 'node:os';
import type * as grpc from '@grpc/grpc-js';

/**
 * All wire encoding of dense values: float32 arrays travel as little-endian
 * `bytes`. Sending views the array's memory without copying (a shard encodes
 * pull chunks straight from slot memory into one reused buffer, see
 * {@link encodePullChunk}); receiving copies once into an aligned Float32Array
 * (received buffers are not 4-byte aligned), at memcpy speed even into shared
 * memory ({@link copyBytes}).
 */

if (endianness() !== 'LE') throw new Error('Tessera sends float32 as little-endian bytes and needs a little-endian host');

/** Largest chunk of values sent in one message unless a caller asks for less: 1 MiB. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;

/**
 * HTTP/2 flow-control window, per stream and per connection, on both ends:
 * 8 MiB instead of HTTP/2's 64 KiB, so one stream keeps a loopback or LAN link
 * full (measured: ≈ 300 MB/s each way with 64 KiB windows, several times that
 * with these; docs/benchmarks.md).
 */
export const FLOW_CONTROL_WINDOW_BYTES = 8 << 20;

/**
 * Largest message any Tessera gRPC endpoint receives: 16 MiB. Chunks stay far
 * below it; anything larger is refused with RESOURCE_EXHAUSTED before it is read.
 */
export const MAX_MESSAGE_BYTES = 16 << 20;

/** The bytes of `values[start, end)`, sharing its memory. */
export function floatBytes(values: Float32Array, start = 0, end = values.length): Buffer {
  return Buffer.from(values.buffer, values.byteOffset + start * 4, (end - start) * 4);
}

/** Bytes staged at a time when copying into shared memory (small enough to stay in cache). */
const STAGING_BYTES = 256 << 10;
let staging: Uint8Array | undefined;

/**
 * Copies `src` into `dst` (same length). To or from shared memory (a
 * SharedArrayBuffer, as the shard's float heap is), V8 copies with relaxed
 * atomic accesses: word by word when source and target are equally aligned,
 * but byte by byte otherwise, about 5× slower than memcpy (measured: 30 vs
 * 6 ms per 64 MB). Received bytes are never word-aligned, so a misaligned copy
 * is staged through a small buffer placed at the shared side's alignment: two
 * copies, one of them from cache, at ≈ memcpy speed.
 */
export function copyBytes(src: Uint8Array, dst: Uint8Array): void {
  const shared = dst.buffer instanceof SharedArrayBuffer ? dst : src.buffer instanceof SharedArrayBuffer ? src : null;
  if (!shared || (src.byteOffset & 7) === (dst.byteOffset & 7) || src.byteLength < 64) {
    dst.set(src);
    return;
  }
  staging ??= new Uint8Array(STAGING_BYTES + 8);
  for (let at = 0; at < src.byteLength; at += STAGING_BYTES) {
    const n = Math.min(STAGING_BYTES, src.byteLength - at);
    const lead = (shared.byteOffset + at) & 7;
    staging.set(src.subarray(at, at + n), lead);
    dst.set(staging.subarray(lead, lead + n), at);
  }
}

/** Copies little-endian float32 `bytes` into `out` from element `offset`. */
export function copyBytesInto(bytes: Uint8Array, out: Float32Array, offset: number): void {
  copyBytes(bytes, new Uint8Array(out.buffer, out.byteOffset + offset * 4, bytes.byteLength));
}

/** A fresh aligned Float32Array holding `bytes`. */
export function bytesToFloats(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.byteLength / 4);
  copyBytesInto(bytes, out, 0);
  return out;
}

/** Chunk boundaries [start, end) in elements for sending `length` floats in chunks of at most `maxBytes`. */
export function* chunkBounds(length: number, maxBytes: number = DEFAULT_CHUNK_BYTES): Generator<[number, number]> {
  const step = Math.max(1, Math.floor(maxBytes / 4));
  for (let start = 0; start < length; start += step) yield [start, Math.min(length, start + step)];
  if (length === 0) yield [0, 0];
}

/** A pull chunk as the shard writes it (see `PullChunk` in shard.proto). */
export interface PullChunkOut {
  offset: number;
  values: Uint8Array;
  total?: number;
  epoch?: number;
}

/**
 * Where pull chunks are encoded. A grpc-js server copies each serialized
 * response into its own framed buffer before it serializes the next one, so
 * one scratch buffer serves every pull of the process: a 64 MB pull then
 * allocates 64 MB less, and V8 collects garbage (whole-heap marks, triggered
 * by every 64 MB of new buffers) half as often (docs/benchmarks.md).
 */
let scratch = Buffer.allocUnsafeSlow(0);

function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * `PullChunk` in the protobuf wire format (offset = 1, values = 2, total = 3,
 * epoch = 4; zero counts omitted, as proto3 does), encoded into the shared
 * scratch buffer: the result is valid only until the next call. Null when
 * `msg` is not a plain pull chunk, so the caller falls back to the generic
 * encoder.
 */
export function encodePullChunk(msg: PullChunkOut): Buffer | null {
  const { offset, values } = msg;
  const total = msg.total ?? 0;
  const epoch = msg.epoch ?? 0;
  if (!(values instanceof Uint8Array) || !isCount(offset) || !isCount(total) || !isCount(epoch)) return null;
  const head = (offset ? 1 + varintLength(offset) : 0) + 1 + varintLength(values.byteLength);
  const size = head + values.byteLength + (total ? 1 + varintLength(total) : 0) + (epoch ? 1 + varintLength(epoch) : 0);
  // Start where the values land at their source's alignment mod 8: a copy out of
  // shared memory (the shard's float heap) is then word by word, not byte by byte.
  const start = (values.byteOffset - head) & 7;
  if (scratch.byteLength < start + size) scratch = Buffer.allocUnsafeSlow(Math.max(start + size, 2 * scratch.byteLength));
  let pos = start;
  if (offset) {
    scratch[pos++] = 0x08;
    pos = writeVarint(scratch, pos, offset);
  }
  scratch[pos++] = 0x12;
  pos = writeVarint(scratch, pos, values.byteLength);
  copyBytes(values, scratch.subarray(pos, pos + values.byteLength));
  pos += values.byteLength;
  if (total) {
    scratch[pos++] = 0x18;
    pos = writeVarint(scratch, pos, total);
  }
  if (epoch) {
    scratch[pos++] = 0x20;
    pos = writeVarint(scratch, pos, epoch);
  }
  return scratch.subarray(start, pos);
}

/** Response encoders that replace the generic (protobufjs) one, by method path; each may decline with null. */
const RESPONSE_ENCODERS: Record<string, (msg: never) => Buffer | null> = {
  '/tessera.v1.Shard/Pull': encodePullChunk,
};

/**
 * A server-side service definition whose hot responses are encoded by this
 * module instead of the generic encoder: the same message on the wire (in
 * canonical proto3 form: fields set to zero are left out, where the generic
 * encoder writes them), without the generic encoder's fresh buffer per message. Only for definitions a
 * grpc-js server serves (its serializer output is copied at once; a client's
 * is not, so clients keep the generic encoder).
 */
export function withWireEncoders(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition)) {
    const encode = RESPONSE_ENCODERS[method.path];
    const generic = method.responseSerialize;
    out[name] = encode ? { ...method, responseSerialize: (msg: unknown) => encode(msg as never) ?? generic(msg) } : method;
  }
  return out as grpc.ServiceDefinition;
}
