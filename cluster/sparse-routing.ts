import { ResourceExhaustedError } from './errors.js';
import { IdIndex } from './id-index.js';
import { type ShardMap } from './shard-map.js';
import { rowSlot } from './sparse-keys.js';

/**
 * Routing of sparse rows, pure (`ids, map → shard batches`), in the manner of
 * routing.ts for dense slots. A request's ids (lo/hi halves, two uint32 per
 * id) are grouped into distinct rows, ordered by slot, and each row keeps the
 * places ("positions") it had in the caller's array, so replies scatter back
 * and gradients of a repeated id are summed.
 */

/**
 * Distinct rows of a request, grouped by slot: slots ascending, rows of one
 * slot in order of first appearance. Rows are numbered 0..R-1 in that order.
 */
export interface IdGroups {
  /** The rows' ids as lo/hi halves: row r is (ids[2r], ids[2r + 1]). */
  ids: Uint32Array;
  /** The slot of each row. */
  slots: Uint32Array;
  /** Row r's places in the caller's array are positions[rowStart[r] .. rowStart[r + 1]). R + 1 entries. */
  rowStart: Uint32Array;
  /** Caller positions, grouped by row, each row's in the order they were given. */
  positions: Uint32Array;
}

/** The rows one shard is asked for. */
export interface SparseBatch extends IdGroups {
  shardId: string;
  address: string;
}

/** Rows in a group. */
export function rowCount(g: IdGroups): number {
  return g.slots.length;
}

/**
 * Groups the ids at `subset` (caller positions; default all of them) of
 * `ids` (lo/hi halves) by row and slot. Positions of one row keep the order
 * they have in `subset`, so re-grouping a group's positions preserves it.
 */
export function groupIds(ids: Uint32Array, tHash: number, slots: number, subset?: Uint32Array): IdGroups {
  const n = subset ? subset.length : ids.length >>> 1;
  const index = new IdIndex(n);
  // Per distinct row u, in order of first appearance: its first position, slot and count.
  const uFirst = new Uint32Array(n);
  const uSlot = new Uint32Array(n);
  const uCount = new Uint32Array(n);
  const rowOfK = new Uint32Array(n);
  let rows = 0;
  for (let k = 0; k < n; k++) {
    const p = subset ? subset[k]! : k;
    const lo = ids[2 * p]!;
    const hi = ids[2 * p + 1]!;
    let u = index.getOrAdd(lo, hi, rows);
    if (u < 0) {
      u = rows++;
      uFirst[u] = p;
      uSlot[u] = rowSlot(tHash, lo, hi, slots);
    }
    rowOfK[k] = u;
    uCount[u]!++;
  }
  // Counting sort by slot, stable in u: row number of each u.
  const slotStart = new Uint32Array(slots + 1);
  for (let u = 0; u < rows; u++) slotStart[uSlot[u]! + 1]!++;
  for (let s = 0; s < slots; s++) slotStart[s + 1]! += slotStart[s]!;
  const rowOfU = new Uint32Array(rows);
  const out: IdGroups = { ids: new Uint32Array(2 * rows), slots: new Uint32Array(rows), rowStart: new Uint32Array(rows + 1), positions: new Uint32Array(n) };
  for (let u = 0; u < rows; u++) {
    const r = slotStart[uSlot[u]!]!++;
    rowOfU[u] = r;
    const p = uFirst[u]!;
    out.ids[2 * r] = ids[2 * p]!;
    out.ids[2 * r + 1] = ids[2 * p + 1]!;
    out.slots[r] = uSlot[u]!;
    out.rowStart[r + 1] = uCount[u]!;
  }
  for (let r = 0; r < rows; r++) out.rowStart[r + 1]! += out.rowStart[r]!;
  const cursor = out.rowStart.slice(0, rows);
  for (let k = 0; k < n; k++) {
    const r = rowOfU[rowOfK[k]!]!;
    out.positions[cursor[r]!++] = subset ? subset[k]! : k;
  }
  return out;
}

/** Rows [a, b) of `g` as a group of their own (views where possible). */
export function sliceGroups(g: IdGroups, a: number, b: number): IdGroups {
  const base = g.rowStart[a]!;
  const rowStart = new Uint32Array(b - a + 1);
  for (let r = a; r <= b; r++) rowStart[r - a] = g.rowStart[r]! - base;
  return { ids: g.ids.subarray(2 * a, 2 * b), slots: g.slots.subarray(a, b), rowStart, positions: g.positions.subarray(base, g.rowStart[b]!) };
}

/**
 * Splits the ids at `subset` (default all) into one batch per owning shard
 * under `map`, rows in slot order. Pure: no network, no clock.
 */
export function routeIds(ids: Uint32Array, tHash: number, map: ShardMap, subset?: Uint32Array): SparseBatch[] {
  const g = groupIds(ids, tHash, map.slots, subset);
  const rows = rowCount(g);
  // Rows per owner and positions per owner, then copy each owner's rows (slot runs) in order.
  const counts = new Map<string, { rows: number; positions: number }>();
  for (let r = 0; r < rows; r++) {
    const owner = map.owners[g.slots[r]!]!;
    let c = counts.get(owner);
    if (!c) counts.set(owner, (c = { rows: 0, positions: 0 }));
    c.rows++;
    c.positions += g.rowStart[r + 1]! - g.rowStart[r]!;
  }
  if (counts.size === 1) {
    const [owner] = counts.keys();
    return [{ ...g, shardId: owner!, address: map.addresses[owner!] ?? '' }];
  }
  const batches = new Map<string, SparseBatch & { nRows: number; nPos: number }>();
  for (const [owner, c] of counts) {
    batches.set(owner, {
      shardId: owner,
      address: map.addresses[owner] ?? '',
      ids: new Uint32Array(2 * c.rows),
      slots: new Uint32Array(c.rows),
      rowStart: new Uint32Array(c.rows + 1),
      positions: new Uint32Array(c.positions),
      nRows: 0,
      nPos: 0,
    });
  }
  for (let r = 0; r < rows; r++) {
    const b = batches.get(map.owners[g.slots[r]!]!)!;
    const i = b.nRows++;
    b.ids[2 * i] = g.ids[2 * r]!;
    b.ids[2 * i + 1] = g.ids[2 * r + 1]!;
    b.slots[i] = g.slots[r]!;
    for (let k = g.rowStart[r]!; k < g.rowStart[r + 1]!; k++) b.positions[b.nPos++] = g.positions[k]!;
    b.rowStart[i + 1] = b.nPos;
  }
  return [...batches.values()].map(({ nRows: _r, nPos: _p, ...batch }) => batch);
}

/**
 * Cuts a batch into parts of at most `maxBytes` at `rowBytes` per row. With
 * `wholeSlots`, parts end only at slot boundaries: a push's (worker, seq) is
 * applied once per slot, so one slot's rows must travel in one message. Throws
 * ResourceExhaustedError when one row (or, with `wholeSlots`, one slot's rows)
 * alone exceeds `maxBytes`.
 */
export function splitBatch(batch: SparseBatch, rowBytes: number, maxBytes: number, wholeSlots: boolean): SparseBatch[] {
  const rows = rowCount(batch);
  const maxRows = Math.floor(maxBytes / rowBytes);
  if (maxRows < 1) throw new ResourceExhaustedError(`one sparse row takes ${rowBytes} bytes, more than the ${maxBytes}-byte message limit; raise maxMessageBytes`);
  if (rows <= maxRows) return [batch];
  const parts: SparseBatch[] = [];
  for (let a = 0; a < rows; ) {
    let b = Math.min(rows, a + maxRows);
    if (wholeSlots && b < rows) {
      while (b > a && batch.slots[b] === batch.slots[b - 1]) b--;
      if (b === a) {
        throw new ResourceExhaustedError(
          `slot ${batch.slots[a]} alone holds more than ${maxRows} of this push's rows (${maxBytes} bytes); push fewer distinct ids at once or raise maxMessageBytes`,
        );
      }
    }
    parts.push({ ...sliceGroups(batch, a, b), shardId: batch.shardId, address: batch.address });
    a = b;
  }
  return parts;
}

/**
 * The gradient of each row: the sum of the gradients at its positions, in
 * float64 in the order of its positions, rounded once to float32 (a row given
 * once gets its gradient bit for bit). `gradients` holds `dim` floats per
 * caller position.
 */
export function sumRows(g: IdGroups, gradients: Float32Array, dim: number, out = new Float32Array(rowCount(g) * dim)): Float32Array {
  const rows = rowCount(g);
  const rowStart = g.rowStart;
  const positions = g.positions;
  let acc: Float64Array | null = null;
  for (let r = 0; r < rows; r++) {
    const k0 = rowStart[r]!;
    const k1 = rowStart[r + 1]!;
    const o = r * dim;
    if (k1 - k0 === 1) {
      const src = positions[k0]! * dim;
      for (let c = 0; c < dim; c++) out[o + c] = gradients[src + c]!;
      continue;
    }
    acc ??= new Float64Array(dim);
    acc.fill(0);
    for (let k = k0; k < k1; k++) {
      const src = positions[k]! * dim;
      for (let c = 0; c < dim; c++) acc[c]! += gradients[src + c]!;
    }
    for (let c = 0; c < dim; c++) out[o + c] = acc[c]!;
  }
  return out;
}

/** Copies row r of `rowValues` (dim floats per row) to every position of row r in `out`. */
export function scatterRows(g: IdGroups, rowValues: Float32Array, dim: number, out: Float32Array): void {
  const rows = rowCount(g);
  for (let r = 0; r < rows; r++) {
    const src = r * dim;
    for (let k = g.rowStart[r]!; k < g.rowStart[r + 1]!; k++) {
      const dst = g.positions[k]! * dim;
      for (let c = 0; c < dim; c++) out[dst + c] = rowValues[src + c]!;
    }
  }
}
