import { endianness } from 'node:os';
import { InvalidArgumentError } from '../errors.js';
import { idHalves } from '../sparse-keys.js';
import { MAX_MESSAGE_BYTES } from './dense-values.js';

/**
 * Wire encoding of sparse requests (proto/tessera/v1/sparse.proto): ids as
 * little-endian uint64 `bytes`, values and gradients as little-endian float32
 * `bytes`. In memory an id array is a Uint32Array of lo/hi halves, which on a
 * little-endian host is the very memory of a BigUint64Array: sending views it,
 * receiving copies it once into aligned memory (received `bytes` are not
 * aligned). Kept beside cluster/wire/dense-values.ts, which encodes dense values; the two
 * may merge.
 */

if (endianness() !== 'LE') throw new Error('Tessera sends ids and float32 as little-endian bytes and needs a little-endian host');

/**
 * Largest sparse message a Tessera client sends or asks a reply of: 8 MiB,
 * half the 16 MiB every endpoint accepts, so one message never comes near it.
 */
export const SPARSE_MESSAGE_BYTES = 8 << 20;

/** Room kept in a message for its fields other than ids and floats (epoch, names, seq). */
export const SPARSE_MESSAGE_OVERHEAD = 4 << 10;

/** Largest pull reply (values bytes) a shard builds: anything larger is refused before a row is read. */
export const SPARSE_MAX_REPLY_BYTES = MAX_MESSAGE_BYTES - (64 << 10);

/** Ids as a caller gives them: a BigUint64Array, or bigints each in [0, 2^64). */
export type SparseIds = BigUint64Array | readonly bigint[];

/** The ids as lo/hi halves: a view of a BigUint64Array, a checked copy of a bigint[]. */
export function toIdHalves(ids: SparseIds): Uint32Array {
  if (ids instanceof BigUint64Array) return new Uint32Array(ids.buffer, ids.byteOffset, ids.length * 2);
  if (!Array.isArray(ids)) throw new InvalidArgumentError('sparse ids must be a BigUint64Array or an array of bigints');
  const out = new Uint32Array(ids.length * 2);
  for (let i = 0; i < ids.length; i++) {
    const [lo, hi] = idHalves(ids[i]!);
    out[2 * i] = lo;
    out[2 * i + 1] = hi;
  }
  return out;
}

/** The halves as a BigUint64Array (a view when aligned, which every Uint32Array of halves is at an even offset). */
export function fromIdHalves(halves: Uint32Array): BigUint64Array {
  if (halves.byteOffset % 8 === 0) return new BigUint64Array(halves.buffer, halves.byteOffset, halves.length >>> 1);
  return new BigUint64Array(halves.slice().buffer);
}

/** The `bytes` of ids, sharing the halves' memory. */
export function idBytes(halves: Uint32Array): Buffer {
  return Buffer.from(halves.buffer, halves.byteOffset, halves.byteLength);
}

/** The `bytes` of floats, sharing their memory. */
export function f32Bytes(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/** Received id bytes as aligned halves; throws unless a whole number of uint64. */
export function bytesToIdHalves(bytes: Uint8Array): Uint32Array {
  if (bytes.byteLength % 8 !== 0) throw new InvalidArgumentError(`ids take ${bytes.byteLength} bytes, not a whole number of little-endian uint64 (8 bytes each)`);
  const out = new Uint32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** Received float bytes as an aligned Float32Array; throws unless a whole number of float32. */
export function bytesToF32(bytes: Uint8Array, what: string): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new InvalidArgumentError(`${what} take ${bytes.byteLength} bytes, not a whole number of little-endian float32 (4 bytes each)`);
  const out = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}
