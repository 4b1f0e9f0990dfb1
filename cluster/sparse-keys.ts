import { fmix32 } from './hash.js';
import { InvalidArgumentError } from './errors.js';
import { type InitSpec, type ModelSpec, type SparseTableSpec } from './model-spec.js';
import { validateOptimizer } from './optimizer-config.js';

/**
 * The key space of sparse tables: which slot a row (table, id) lives in, and
 * the row's first values. Pure: no I/O, no clock, no state but a cache of
 * table-name hashes.
 *
 * Ids are 64-bit and handled as lo/hi uint32 halves (`lo = id mod 2^32`,
 * `hi = ⌊id / 2^32⌋`), the layout a Uint32Array gives over little-endian
 * uint64 bytes: every id round-trips exactly over its whole range, and the hot
 * paths never make a BigInt.
 *
 * slot(table, id) = murmur3_x86_32(id as 8 little-endian bytes, seed = T) mod S,
 * with T = murmur3_x86_32(UTF-8 bytes of the table name, seed 0). The table
 * name, not its index, seeds the hash: adding or reordering tables moves no row.
 */

/** Largest row dimension: one row is then 256 KiB, far below any message limit. */
export const MAX_SPARSE_DIM = 1 << 16;

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function rotl32(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}


function mixBlock(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = rotl32(k, 15);
  k = Math.imul(k, C2);
  h ^= k;
  h = rotl32(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3_x86_32 of `bytes`: the reference algorithm, so any language can compute the same slots. */
export function murmur3(bytes: Uint8Array, seed = 0): number {
  let h = seed | 0;
  const n = bytes.length;
  const body = n - (n % 4);
  for (let i = 0; i < body; i += 4) {
    h = mixBlock(h, bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
  }
  const tail = n % 4;
  if (tail > 0) {
    let k = 0;
    for (let i = tail - 1; i >= 0; i--) k = (k << 8) | bytes[body + i]!;
    k = Math.imul(k, C1);
    k = rotl32(k, 15);
    k = Math.imul(k, C2);
    h ^= k;
  }
  return fmix32(h ^ n);
}

const tableHashes = new Map<string, number>();
const utf8 = new TextEncoder();

/** T of a table: murmur3 of its UTF-8 name (cached). */
export function tableHash(table: string): number {
  let h = tableHashes.get(table);
  if (h === undefined) {
    h = murmur3(utf8.encode(table));
    tableHashes.set(table, h);
  }
  return h;
}

/** murmur3_x86_32 of the id's 8 little-endian bytes with seed `tHash`: the same as `murmur3(bytes, tHash)`, without the bytes. */
export function rowHash(tHash: number, lo: number, hi: number): number {
  return fmix32(mixBlock(mixBlock(tHash, lo | 0), hi | 0) ^ 8);
}

/** The slot of row (table, id), the id given as halves. */
export function rowSlot(tHash: number, lo: number, hi: number, slots: number): number {
  return rowHash(tHash, lo, hi) % slots;
}

/** The halves of a 64-bit id; throws unless 0 ≤ id < 2^64. */
export function idHalves(id: bigint): [lo: number, hi: number] {
  if (typeof id !== 'bigint' || id < 0n || id > 0xffffffffffffffffn) throw new InvalidArgumentError(`sparse id ${String(id)} is not an unsigned 64-bit integer`);
  return [Number(id & 0xffffffffn), Number(id >> 32n)];
}

/** The id of halves (lo, hi). */
export function idOf(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** The slot of row (table, id). Convenience for tools and tests; hot paths use {@link rowSlot}. */
export function slotOfId(table: string, id: bigint, slots: number): number {
  const [lo, hi] = idHalves(id);
  return rowSlot(tableHash(table), lo, hi, slots);
}

/**
 * Uniform in [0, 1) for column `column` of row (table, id) under `seed`: a
 * counter-based hash (as `uniformAt` in model-spec.ts), so every row draws its
 * values alone and any shard creates the same row.
 */
export function rowUniformAt(seed: number, tHash: number, lo: number, hi: number, column: number): number {
  const r = fmix32(fmix32(fmix32(seed ^ Math.imul(tHash ^ 0x5bd1e995, 0x9e3779b9)) ^ lo) ^ hi);
  return fmix32(r ^ Math.imul(column + 1, 0x85ebca6b)) / 0x100000000;
}

/**
 * Writes the first values of row (table, id) into `out[off, off + dim)`.
 * `glorot-uniform` draws from U(-l, l) with its given fans, as for a tensor.
 */
export function initialRow(init: InitSpec, dim: number, seed: number, tHash: number, lo: number, hi: number, out: Float32Array, off: number): void {
  switch (init.kind) {
    case 'zeros':
      out.fill(0, off, off + dim);
      return;
    case 'constant':
      out.fill(init.value, off, off + dim);
      return;
    case 'uniform': {
      const span = init.high - init.low;
      for (let c = 0; c < dim; c++) out[off + c] = init.low + span * rowUniformAt(seed, tHash, lo, hi, c);
      return;
    }
    case 'glorot-uniform': {
      const limit = Math.sqrt(6 / (init.fanIn + init.fanOut));
      for (let c = 0; c < dim; c++) out[off + c] = limit * (2 * rowUniformAt(seed, tHash, lo, hi, c) - 1);
      return;
    }
  }
}

/** The model's sparse table named `name`, or undefined. */
export function findTable(spec: ModelSpec, name: string): SparseTableSpec | undefined {
  return spec.sparse?.find((t) => t.name === name);
}

/** Throws a clear error for sparse tables no shard could hold. */
export function validateSparseTables(spec: ModelSpec): void {
  const names = new Set<string>();
  for (const t of spec.sparse ?? []) {
    if (!t.name) throw new InvalidArgumentError(`model ${spec.name} declares a sparse table with no name`);
    if (names.has(t.name)) throw new InvalidArgumentError(`model ${spec.name} declares sparse table ${t.name} twice`);
    names.add(t.name);
    if (!Number.isInteger(t.dim) || t.dim < 1 || t.dim > MAX_SPARSE_DIM) {
      throw new InvalidArgumentError(`sparse table ${t.name} has dim ${t.dim}; it must be an integer in [1, ${MAX_SPARSE_DIM}]`);
    }
    const bad = checkInit(t.init);
    if (bad) throw new InvalidArgumentError(`sparse table ${t.name}: ${bad}`);
    if (t.optimizer) {
      try {
        validateOptimizer(t.optimizer);
      } catch (err) {
        throw new InvalidArgumentError(`sparse table ${t.name}: ${(err as Error).message}`);
      }
    }
  }
}

function checkInit(init: InitSpec): string | null {
  switch (init?.kind) {
    case 'zeros':
      return null;
    case 'constant':
      return Number.isFinite(init.value) ? null : `constant initializer needs a finite value, got ${init.value}`;
    case 'uniform':
      return Number.isFinite(init.low) && Number.isFinite(init.high) && init.low <= init.high ? null : `uniform initializer needs finite low ≤ high, got [${init.low}, ${init.high})`;
    case 'glorot-uniform':
      return init.fanIn > 0 && init.fanOut > 0 ? null : `glorot-uniform initializer needs positive fanIn and fanOut, got ${init.fanIn}, ${init.fanOut}`;
    default:
      return `unknown initializer ${JSON.stringify(init)}; use zeros, constant, uniform or glorot-uniform`;
  }
}
