import { endianness } from 'node:os';

/**
 * All wire encoding of dense values: float32 arrays travel as little-endian
 * `bytes`. Sending views the array's memory without copying; receiving copies
 * once into an aligned Float32Array (received buffers are not 4-byte aligned).
 */

if (endianness() !== 'LE') throw new Error('Tessera sends float32 as little-endian bytes and needs a little-endian host');

/** Largest chunk of values sent in one message unless a caller asks for less: 1 MiB. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;

/**
 * Largest message any Tessera gRPC endpoint receives: 16 MiB. Chunks stay far
 * below it; anything larger is refused with RESOURCE_EXHAUSTED before it is read.
 */
export const MAX_MESSAGE_BYTES = 16 << 20;

/** The bytes of `values[start, end)`, sharing its memory. */
export function floatBytes(values: Float32Array, start = 0, end = values.length): Buffer {
  return Buffer.from(values.buffer, values.byteOffset + start * 4, (end - start) * 4);
}

/** Copies little-endian float32 `bytes` into `out` from element `offset`. */
export function copyBytesInto(bytes: Uint8Array, out: Float32Array, offset: number): void {
  new Uint8Array(out.buffer, out.byteOffset + offset * 4, bytes.byteLength).set(bytes);
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
