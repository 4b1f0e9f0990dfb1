import { firstNonFinite } from '../cluster/finite.js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { InvalidArgumentError, ResourceExhaustedError } from '../cluster/errors.js';
import { type SlotRange } from '../cluster/slots.js';
import { validateSparseTables } from '../cluster/sparse-keys.js';
import { type IdGroups, groupIds, rowCount, sumRows } from '../cluster/sparse-routing.js';
import { SPARSE_MAX_REPLY_BYTES } from '../cluster/wire/sparse-values.js';
import { type ClockGate, toMean } from './clock-gate.js';
import { type MigrationLog, type UpdateRecorder } from './migration-log.js';
import { DEFAULT_MAX_SPARSE_ROWS, checkRowCap, validRowCap } from './sparse-row-cap.js';
import { type SparseRows, SparseTable } from './sparse-table.js';
import { badSeq, badWorkerId } from '../cluster/worker-id.js';
import { type SlotLoad } from './slot-load.js';

/**
 * A shard's sparse tables and the data-plane operations on them, without the
 * transport. Every request is validated whole (model, table, ids, lengths,
 * finiteness, epoch, ownership of every row's slot, the cap on a table's rows)
 * before any row is created or changed, so a refused request leaves the tables
 * exactly as they were. Single-threaded, like Shard: a push is applied in one
 * synchronous pass.
 *
 * Only a push creates rows. A pull answers a row the shard does not hold with
 * the values it would be created with (a function of the seed, the table and
 * the id) and stores nothing: reading never makes a shard hold more, and what
 * a caller can make it hold is bounded by the cap (server/sparse-row-cap.ts).
 *
 * Under bsp a push that names its step is summed into that step, as a dense
 * push is, and applied as the step's mean when the shard's clock gate closes
 * the step (docs/consistency.md).
 */

/** What the store needs of its shard: its id, the cached map's epoch, ownership checks and the clock gate (Shard has them all). */
export interface OwnershipCheck {
  /** The shard's id, for messages. */
  readonly id: string;
  readonly epoch: number;
  /** Throws MovedError, StaleEpochError, NotReadyError or InvalidArgumentError for a request of `ranges` at `epoch`. */
  check(epoch: number, ranges: readonly SlotRange[], model?: string): void;
  /** The shard's worker clocks under ssp/bsp. */
  readonly gate: ClockGate;
  /** Slots being handed to another shard, whose updates are recorded. */
  readonly migration: MigrationLog | null;
  /** Slots with backups, whose updates are sent to them (replication.ts). */
  readonly replica: UpdateRecorder | null;
  /** Resolves once the backups hold every update sent them (Shard.replicated). */
  readonly replicated: (() => Promise<void> | null) | null;
  /** The traffic each slot carries: a sparse request adds its rows' bytes. */
  readonly load: SlotLoad;
}

export interface SparsePullInput {
  epoch: number;
  model?: string;
  table: string;
  workerId?: string;
  /** Ids as lo/hi halves. */
  ids: Uint32Array;
}

export interface SparsePullResult {
  epoch: number;
  dim: number;
  /** ids × dim, in the order of the request's ids. */
  values: Float32Array;
  /** Distinct rows read (held or not). */
  rowsTouched: number;
}

export interface SparsePushInput {
  epoch: number;
  model?: string;
  table: string;
  workerId: string;
  seq: number;
  ids: Uint32Array;
  /** ids × dim. */
  gradients: Float32Array;
  /** Under ssp/bsp: the step the gradients belong to (bsp sums them into it). */
  clock?: number;
}

export interface SparsePushResult {
  epoch: number;
  appliedSlots: number;
  duplicateSlots: number;
  /** Distinct rows updated. */
  rowsApplied: number;
  /** Rows this push created (a row is created by the first push that touches it). */
  rowsCreated: number;
}

export interface SparseStoreOptions {
  /** Rows each table may hold on this shard (`--max-sparse-rows`); a push past it is refused whole. Default {@link DEFAULT_MAX_SPARSE_ROWS}. */
  maxRowsPerTable?: number;
}

export interface SparseTableStats {
  name: string;
  dim: number;
  rows: number;
  rowsCreated: number;
  rowsTouched: number;
  bytes: number;
  pulls: number;
  pushes: number;
  bytesIn: number;
  bytesOut: number;
}

export class SparseStore {
  private readonly tables = new Map<string, SparseTable>();
  /** bsp: the open step's row gradients, summed, per table, slot and row. */
  private readonly pending = new Map<SparseTable, Map<SparseRows, Map<number, Float32Array>>>();
  /** Rows each table may hold on this shard. */
  readonly maxRowsPerTable: number;

  constructor(
    private readonly config: ClusterConfig,
    private readonly owner: OwnershipCheck,
    options: SparseStoreOptions = {},
  ) {
    validateSparseTables(config.model);
    this.maxRowsPerTable = validRowCap(options.maxRowsPerTable ?? DEFAULT_MAX_SPARSE_ROWS);
    for (const spec of config.model.sparse ?? []) this.tables.set(spec.name, new SparseTable(spec, config.model.seed, spec.optimizer ?? config.optimizer));
    owner.gate.onStepClosed((_step, workers) => this.applyPending(workers));
  }

  /** What a push waits for before it is acknowledged: its backups (Shard.replicated). */
  get replicated(): (() => Promise<void> | null) | null {
    return this.owner.replicated;
  }

  /** The table named `name`; throws InvalidArgumentError naming the tables there are. */
  table(name: string): SparseTable {
    const t = this.tables.get(name);
    if (t) return t;
    const known = [...this.tables.keys()];
    throw new InvalidArgumentError(`unknown sparse table "${String(name).slice(0, 80)}": model ${this.config.model.name} has ${known.length ? known.join(', ') : 'no sparse tables'}`);
  }

  /**
   * Every check {@link pull} makes, without reading a row: a clocked pull is
   * checked before it waits for its step (and by `pull` again after).
   */
  checkPull(req: SparsePullInput): { table: SparseTable; g: IdGroups } {
    const table = this.admit(req.model, req.table, req.ids);
    const n = req.ids.length >>> 1;
    if (n * table.dim * 4 > SPARSE_MAX_REPLY_BYTES) {
      throw new ResourceExhaustedError(`a pull of ${n} rows of table ${table.name} would reply ${n * table.dim * 4} bytes, over the ${SPARSE_MAX_REPLY_BYTES}-byte limit; pull fewer ids at once (the Tessera client splits at 8 MiB)`);
    }
    const g = groupIds(req.ids, table.hash, this.config.slots);
    this.owner.check(req.epoch, slotRuns(g), req.model || undefined);
    this.owner.load.begin();
    for (let r = 0; r < g.slots.length; r++) this.owner.load.add(g.slots[r]!, table.dim * 4);
    return { table, g };
  }

  /**
   * The rows of `ids`: a row held, as it is; a row not held, as the first push
   * will create it (its initial values), without storing it.
   */
  pull(req: SparsePullInput): SparsePullResult {
    const { table, g } = this.checkPull(req);
    const n = req.ids.length >>> 1;
    const dim = table.dim;
    const values = new Float32Array(n * dim);
    const rows = rowCount(g);
    const fresh = new Float32Array(dim);
    for (let a = 0; a < rows; ) {
      const s = g.slots[a]!;
      const slot = table.slot(s);
      for (; a < rows && g.slots[a] === s; a++) {
        const lo = g.ids[2 * a]!;
        const hi = g.ids[2 * a + 1]!;
        let from: Float32Array;
        let src: number;
        const found = slot ? slot.find(lo, hi) : -1;
        if (found >= 0) {
          from = slot!.values;
          src = found * dim;
        } else {
          // The same function, the same bits, as ensureRow writes when a push creates the row.
          table.initialRow(lo, hi, fresh, 0);
          from = fresh;
          src = 0;
        }
        for (let k = g.rowStart[a]!; k < g.rowStart[a + 1]!; k++) {
          const dst = g.positions[k]! * dim;
          for (let c = 0; c < dim; c++) values[dst + c] = from[src + c]!;
        }
      }
    }
    table.pulls++;
    table.rowsTouched += rows;
    return { epoch: this.owner.epoch, dim, values, rowsTouched: rows };
  }

  /**
   * Applies a push: gradients of a repeated id are summed first (float64, in
   * request order, rounded once), then each distinct row gets one update (under
   * bsp, with a clock: is summed into the open step); a row not held is created
   * first, with its initial values. A slot that already applied (worker, seq)
   * skips its rows. A push that would create rows past the table's cap is
   * refused whole (ResourceExhaustedError), before anything is applied.
   */
  push(req: SparsePushInput): SparsePushResult {
    if (!req.workerId) throw new InvalidArgumentError('sparse push has no worker_id; every push needs (worker_id, seq) to be applied once');
    const badId = badWorkerId(req.workerId) ?? badSeq(req.seq);
    if (badId) throw new InvalidArgumentError(`sparse push: ${badId}`);
    const table = this.admit(req.model, req.table, req.ids);
    const n = req.ids.length >>> 1;
    const dim = table.dim;
    if (req.gradients.length !== n * dim) {
      throw new InvalidArgumentError(`sparse push carries ${req.gradients.length} gradient values for ${n} ids of table ${table.name} (dim ${dim}); it needs ids × dim = ${n * dim}`);
    }
    const bad = firstNonFinite(req.gradients);
    if (bad >= 0) {
      throw new InvalidArgumentError(`sparse push gradient has a non-finite value (${req.gradients[bad]}) at id #${Math.floor(bad / dim)}, column ${bad % dim}; nothing was applied`);
    }
    const g = groupIds(req.ids, table.hash, this.config.slots);
    this.owner.check(req.epoch, slotRuns(g), req.model || undefined);
    this.owner.load.begin();
    for (let r = 0; r < g.slots.length; r++) this.owner.load.add(g.slots[r]!, table.dim * 4);
    const gate = this.owner.gate;
    const clocked = req.clock !== undefined && gate.clocked;
    if (clocked && !(Number.isSafeInteger(req.clock) && req.clock! >= 0)) throw new InvalidArgumentError(`sparse push clock must be a non-negative integer, got ${req.clock}`);
    if (clocked) gate.checkPush(req.workerId, req.clock!);
    const summed = clocked && gate.model.kind === 'bsp';
    checkRowCap(table, g, (s) => table.slot(s)?.dedup.has(req.workerId, req.seq) ?? false, this.maxRowsPerTable, this.owner.id);

    // Everything is valid: from here on, apply.
    const sums = sumRows(g, req.gradients, dim);
    const created = table.rowsCreated;
    let appliedSlots = 0;
    let duplicateSlots = 0;
    let rowsApplied = 0;
    const rows = rowCount(g);
    for (let a = 0; a < rows; ) {
      const s = g.slots[a]!;
      let b = a;
      while (b < rows && g.slots[b] === s) b++;
      if (table.slot(s)?.dedup.has(req.workerId, req.seq)) {
        duplicateSlots++;
      } else {
        const slot = table.ensureSlot(s);
        for (let r = a; r < b; r++) {
          const row = table.ensureRow(slot, g.ids[2 * r]!, g.ids[2 * r + 1]!);
          if (summed) this.sum(table, slot, row, sums, r * dim);
          else table.applyRow(slot, row, sums, r * dim);
        }
        slot.dedup.add(req.workerId, req.seq);
        const log = this.owner.migration;
        if (log?.has(s)) log.sparse(table.name, s, req.workerId, req.seq, g.ids.subarray(2 * a, 2 * b), sums.subarray(a * dim, b * dim));
        const replica = this.owner.replica;
        if (replica?.has(s)) replica.sparse(table.name, s, req.workerId, req.seq, g.ids.subarray(2 * a, 2 * b), sums.subarray(a * dim, b * dim));
        appliedSlots++;
        rowsApplied += b - a;
      }
      a = b;
    }
    table.pushes++;
    table.rowsTouched += rowsApplied;
    if (summed && appliedSlots > 0) gate.noteSummed(req.workerId);
    return { epoch: this.owner.epoch, appliedSlots, duplicateSlots, rowsApplied, rowsCreated: table.rowsCreated - created };
  }

  /** bsp: adds a row's gradient g[off, off + dim) to the open step's sum for that row. */
  private sum(table: SparseTable, slot: SparseRows, row: number, g: Float32Array, off: number): void {
    let bySlot = this.pending.get(table);
    if (!bySlot) this.pending.set(table, (bySlot = new Map()));
    let byRow = bySlot.get(slot);
    if (!byRow) bySlot.set(slot, (byRow = new Map()));
    const dim = table.dim;
    let sum = byRow.get(row);
    if (!sum) byRow.set(row, (sum = new Float32Array(dim)));
    for (let c = 0; c < dim; c++) sum[c] = sum[c]! + g[off + c]!;
  }

  /** bsp: applies the open step: each summed row moves by its sum over the step's `workers` (its mean gradient). */
  private applyPending(workers: number): void {
    for (const [table, bySlot] of this.pending) {
      for (const [slot, byRow] of bySlot) {
        for (const [row, sum] of byRow) {
          toMean(sum, workers);
          table.applyRow(slot, row, sum, 0);
        }
      }
    }
    this.pending.clear();
  }

  /** Counts payload bytes of a request served for `table` (the service calls it). */
  countBytes(table: string, bytesIn: number, bytesOut: number): void {
    const t = this.tables.get(table);
    if (!t) return;
    t.bytesIn += bytesIn;
    t.bytesOut += bytesOut;
  }

  stats(): SparseTableStats[] {
    return [...this.tables.values()].map((t) => ({
      name: t.name,
      dim: t.dim,
      rows: t.rows,
      rowsCreated: t.rowsCreated,
      rowsTouched: t.rowsTouched,
      bytes: t.bytes,
      pulls: t.pulls,
      pushes: t.pushes,
      bytesIn: t.bytesIn,
      bytesOut: t.bytesOut,
    }));
  }

  /** Bytes held by every table. */
  heldBytes(): number {
    let n = 0;
    for (const t of this.tables.values()) n += t.bytes;
    return n;
  }

  /** The checks every request gets before its ids are looked at further. */
  private admit(model: string | undefined, tableName: string, ids: Uint32Array): SparseTable {
    if (model && model !== this.config.model.name) throw new InvalidArgumentError(`unknown model "${String(model).slice(0, 80)}": this cluster trains "${this.config.model.name}"`);
    const table = this.table(tableName);
    if (ids.length === 0) throw new InvalidArgumentError(`sparse request for table ${table.name} carries no ids`);
    if (ids.length % 2 !== 0) throw new InvalidArgumentError('sparse ids must be whole uint64 (two uint32 halves each)');
    return table;
  }
}

/** The distinct slots of grouped rows (ascending), merged into runs for Shard.check. */
function slotRuns(g: IdGroups): SlotRange[] {
  const runs: SlotRange[] = [];
  const slots = g.slots;
  for (let r = 0; r < slots.length; r++) {
    const s = slots[r]!;
    const last = runs[runs.length - 1];
    if (last && last.end > s) continue;
    if (last && last.end === s) last.end = s + 1;
    else runs.push({ begin: s, end: s + 1 });
  }
  return runs;
}
