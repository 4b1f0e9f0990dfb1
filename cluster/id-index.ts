import { fmix32 } from './hash.js';

/**
 * A map from 64-bit ids, given as lo/hi uint32 halves, to non-negative int32
 * values (row numbers), in flat typed arrays: open addressing with linear
 * probing, no per-entry object and no BigInt. Entries are never removed (rows
 * of a sparse table live as long as their slot), so there are no tombstones.
 *
 * Why not `Map<bigint, number>`: every id read from a BigUint64Array is a fresh
 * heap BigInt, and a Map entry costs several times the 8 bytes of the key.
 */

/** Smallest table, in entries (a power of two). */
const MIN_CAPACITY = 16;
/** Grow when more than half full: probes stay short. */
const MAX_LOAD = 0.5;


/**
 * The probe start of an id. Deliberately unrelated to the slot hash of
 * cluster/sparse-keys.ts: every id of one slot has the same slot hash modulo
 * S, so reusing its low bits here would pile a slot's ids into a few buckets.
 */
function bucketHash(lo: number, hi: number): number {
  return fmix32(fmix32(hi ^ 0x2545f491) ^ lo);
}

export class IdIndex {
  private keys: Uint32Array;
  private vals: Int32Array;
  private mask: number;
  private count = 0;

  /** @param expected entries to make room for without growing. */
  constructor(expected = 0) {
    let capacity = MIN_CAPACITY;
    while (capacity * MAX_LOAD < expected) capacity *= 2;
    this.keys = new Uint32Array(2 * capacity);
    this.vals = new Int32Array(capacity).fill(-1);
    this.mask = capacity - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the index's arrays. */
  get bytes(): number {
    return this.keys.byteLength + this.vals.byteLength;
  }

  /** The value of id (lo, hi), or -1. */
  get(lo: number, hi: number): number {
    lo >>>= 0;
    hi >>>= 0;
    const keys = this.keys;
    const vals = this.vals;
    for (let i = bucketHash(lo, hi) & this.mask; ; i = (i + 1) & this.mask) {
      const v = vals[i]!;
      if (v < 0) return -1;
      if (keys[2 * i] === lo && keys[2 * i + 1] === hi) return v;
    }
  }

  /**
   * The value of id (lo, hi) if present; otherwise stores `value` (≥ 0) for it
   * and returns -1, so one probe sequence both finds and adds.
   */
  getOrAdd(lo: number, hi: number, value: number): number {
    lo >>>= 0;
    hi >>>= 0;
    if ((this.count + 1) > (this.mask + 1) * MAX_LOAD) this.grow();
    const keys = this.keys;
    const vals = this.vals;
    let i = bucketHash(lo, hi) & this.mask;
    for (; ; i = (i + 1) & this.mask) {
      const v = vals[i]!;
      if (v < 0) break;
      if (keys[2 * i] === lo && keys[2 * i + 1] === hi) return v;
    }
    keys[2 * i] = lo;
    keys[2 * i + 1] = hi;
    vals[i] = value;
    this.count++;
    return -1;
  }

  private grow(): void {
    const oldKeys = this.keys;
    const oldVals = this.vals;
    const capacity = 2 * (this.mask + 1);
    this.keys = new Uint32Array(2 * capacity);
    this.vals = new Int32Array(capacity).fill(-1);
    this.mask = capacity - 1;
    for (let j = 0; j < oldVals.length; j++) {
      const v = oldVals[j]!;
      if (v < 0) continue;
      const lo = oldKeys[2 * j]!;
      const hi = oldKeys[2 * j + 1]!;
      let i = bucketHash(lo, hi) & this.mask;
      while (this.vals[i]! >= 0) i = (i + 1) & this.mask;
      this.keys[2 * i] = lo;
      this.keys[2 * i + 1] = hi;
      this.vals[i] = v;
    }
  }
}
