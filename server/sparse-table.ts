import { IdIndex } from '../cluster/id-index.js';
import { type SparseTableSpec } from '../cluster/model-spec.js';
import { type OptimizerConfig } from '../cluster/optimizer-config.js';
import { initialRow, tableHash } from '../cluster/sparse-keys.js';
import { type SlotState, applyGradient, newState } from './optimizers.js';
import { PushDedup } from './push-dedup.js';

/**
 * Storage of sparse tables. A table's rows are kept per slot ({@link SparseRows}),
 * so a slot's rows, their optimizer state and the pushes it applied are one
 * unit, as a dense slot's are: stored, checkpointed and migrated together.
 *
 * Within a slot, rows live in growable flat typed arrays (values, each kind of
 * optimizer state, ids, adam's step count t per row), found through an
 * {@link IdIndex}: no object per row, no BigInt.
 */

/** Rows a slot makes room for on its first row; capacity doubles after. */
const FIRST_CAPACITY = 8;

/** One slot's rows of one table. */
export class SparseRows {
  readonly index = new IdIndex();
  /** Pushes (worker, seq) this slot of this table applied. */
  readonly dedup = new PushDedup();
  /** Rows held. */
  count = 0;
  /** Row i's id as halves: ids[2i], ids[2i + 1]. */
  ids = new Uint32Array(0);
  /** Row i's values: values[i·dim, (i+1)·dim). */
  values = new Float32Array(0);
  /** Momentum velocity, adagrad accumulator or adam first moment, per row as `values`. */
  s1: Float32Array | null = null;
  /** Adam's second moment. */
  s2: Float32Array | null = null;
  /** Updates applied to each row (adam's t). */
  steps = new Uint32Array(0);

  constructor(
    readonly dim: number,
    private readonly stateArrays: number,
  ) {}

  /** The row of id (lo, hi), or -1. */
  find(lo: number, hi: number): number {
    return this.index.get(lo, hi);
  }

  /** Adds a row for id (lo, hi), not yet present; returns it. Its values and state are the caller's to fill. */
  add(lo: number, hi: number): number {
    const row = this.count;
    if (row === this.steps.length) this.grow(Math.max(FIRST_CAPACITY, 2 * row));
    this.index.getOrAdd(lo, hi, row);
    this.ids[2 * row] = lo;
    this.ids[2 * row + 1] = hi;
    this.count++;
    return row;
  }

  private grow(capacity: number): void {
    const d = this.dim;
    const widen = <T extends Float32Array | Uint32Array>(a: T, per: number, make: (n: number) => T): T => {
      const b = make(capacity * per);
      b.set(a);
      return b;
    };
    const f32 = (n: number) => new Float32Array(n);
    this.ids = widen(this.ids, 2, (n) => new Uint32Array(n));
    this.steps = widen(this.steps, 1, (n) => new Uint32Array(n));
    this.values = widen(this.values, d, f32);
    if (this.stateArrays >= 1) this.s1 = widen(this.s1 ?? f32(0), d, f32);
    if (this.stateArrays >= 2) this.s2 = widen(this.s2 ?? f32(0), d, f32);
  }

  /** Bytes held (capacity, not just rows in use). */
  get bytes(): number {
    return this.index.bytes + this.ids.byteLength + this.steps.byteLength + this.values.byteLength + (this.s1?.byteLength ?? 0) + (this.s2?.byteLength ?? 0);
  }
}

/**
 * One sparse table on one shard: its slots' rows, how a row starts, and how a
 * gradient is applied to a row (the dense optimizers' own code, so a row gets
 * the same bits a dense slot of the same values would).
 */
export class SparseTable {
  readonly dim: number;
  /** T: the table's hash seed (cluster/sparse-keys.ts). */
  readonly hash: number;
  private readonly slots = new Map<number, SparseRows>();
  /** A fresh row's optimizer state (adagrad's accumulator starts at its configured value). */
  private readonly fresh: SlotState;
  /** Where one row is updated: the dense kernels index a slot from 0, so a row is copied here and back. */
  private readonly scratch: SlotState;
  private readonly stateArrays: number;

  /** Rows created by pushes (and a move's log) since the shard started; rows loaded from a checkpoint or a move are not counted. */
  rowsCreated = 0;
  /** Distinct rows read or updated, summed over requests. */
  rowsTouched = 0;
  pulls = 0;
  pushes = 0;
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    readonly spec: SparseTableSpec,
    private readonly seed: number,
    private readonly optimizer: OptimizerConfig,
  ) {
    this.dim = spec.dim;
    this.hash = tableHash(spec.name);
    this.fresh = newState(new Float32Array(this.dim), optimizer);
    this.scratch = newState(new Float32Array(this.dim), optimizer);
    this.stateArrays = this.fresh.s2 ? 2 : this.fresh.s1 ? 1 : 0;
  }

  get name(): string {
    return this.spec.name;
  }

  /** Slot s's rows, if this table ever had one there. */
  slot(s: number): SparseRows | undefined {
    return this.slots.get(s);
  }

  /** Slot s's rows, created empty if needed. */
  ensureSlot(s: number): SparseRows {
    let rows = this.slots.get(s);
    if (!rows) this.slots.set(s, (rows = new SparseRows(this.dim, this.stateArrays)));
    return rows;
  }

  /** Forgets slot `s`'s rows. */
  dropSlot(s: number): void {
    this.slots.delete(s);
  }

  /** Slots that hold rows, ascending. */
  heldSlots(): number[] {
    return [...this.slots.keys()].sort((a, b) => a - b);
  }

  /** The row of id (lo, hi) in `rows`, created with its first values and fresh optimizer state if not held (pushes and a move's log create rows; pulls never do). */
  ensureRow(rows: SparseRows, lo: number, hi: number): number {
    const found = rows.find(lo, hi);
    if (found >= 0) return found;
    const row = rows.add(lo, hi);
    const off = row * this.dim;
    this.initialRow(lo, hi, rows.values, off);
    if (rows.s1) rows.s1.set(this.fresh.s1!, off);
    if (rows.s2) rows.s2.set(this.fresh.s2!, off);
    this.rowsCreated++;
    return row;
  }

  /**
   * Puts rows into slot `s` as a checkpoint holds them: ids as lo/hi halves,
   * update counts, values and optimizer state (row-major, `dim` per row). A
   * row already held is overwritten.
   */
  loadRows(s: number, ids: Uint32Array, steps: Uint32Array, values: Float32Array, state: readonly Float32Array[]): SparseRows {
    const rows = this.ensureSlot(s);
    const d = this.dim;
    for (let i = 0; i < steps.length; i++) {
      const lo = ids[2 * i]!;
      const hi = ids[2 * i + 1]!;
      const found = rows.find(lo, hi);
      const row = found >= 0 ? found : rows.add(lo, hi);
      const from = i * d;
      rows.values.set(values.subarray(from, from + d), row * d);
      if (rows.s1) rows.s1.set(state[0]!.subarray(from, from + d), row * d);
      if (rows.s2) rows.s2.set(state[1]!.subarray(from, from + d), row * d);
      rows.steps[row] = steps[i]!;
    }
    return rows;
  }

  /** Writes the values a row of id (lo, hi) is created with to out[off, off + dim): a function of the table, the seed and the id alone. */
  initialRow(lo: number, hi: number, out: Float32Array, off: number): void {
    initialRow(this.spec.init, this.dim, this.seed, this.hash, lo, hi, out, off);
  }

  /** Applies gradient g[gOff, gOff + dim) to `row` with the cluster's optimizer, and counts the update in its t. */
  applyRow(rows: SparseRows, row: number, g: Float32Array, gOff: number): void {
    const d = this.dim;
    const off = row * d;
    const sc = this.scratch;
    copy(rows.values, off, sc.values, d);
    if (sc.s1) copy(rows.s1!, off, sc.s1, d);
    if (sc.s2) copy(rows.s2!, off, sc.s2, d);
    sc.step = rows.steps[row]!;
    applyGradient(sc, g, gOff, this.optimizer);
    rows.steps[row] = sc.step;
    copyBack(sc.values, rows.values, off, d);
    if (sc.s1) copyBack(sc.s1, rows.s1!, off, d);
    if (sc.s2) copyBack(sc.s2, rows.s2!, off, d);
  }

  /** Rows held, over every slot. */
  get rows(): number {
    let n = 0;
    for (const r of this.slots.values()) n += r.count;
    return n;
  }

  get bytes(): number {
    let n = 0;
    for (const r of this.slots.values()) n += r.bytes;
    return n;
  }
}

function copy(src: Float32Array, off: number, dst: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) dst[i] = src[off + i]!;
}

function copyBack(src: Float32Array, dst: Float32Array, off: number, n: number): void {
  for (let i = 0; i < n; i++) dst[off + i] = src[i]!;
}
