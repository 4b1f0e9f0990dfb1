import { createLogger } from '../cluster/log.js';
import { floatBytes } from '../cluster/wire/dense-values.js';
import { SnapshotArena, snapshotAtStep } from './checkpoint.js';
import { type Shard } from './shard.js';
import { type SparseStore } from './sparse-store.js';

/**
 * The model's values as one shard serves them, at one instant, for
 * `ShardAdmin.ExportModel` (proto/tessera/v1/admin.proto): what a checkpoint
 * snapshot copies (docs/checkpoints.md), but only the values — no optimizer
 * state, no applied pushes — and only of the slots the shard owns per its map,
 * not the ones it holds as the target of a move in progress. Copied in one
 * synchronous pass (each slot of a push whole or not at all), into memory made ready
 * while the shard serves, then streamed in pieces while it serves on.
 */

/** Largest payload (values and ids) of one streamed piece. */
export const MODEL_PIECE_BYTES = (4 << 20) - (4 << 10);

const log = createLogger('shard');

export interface ModelExportHeader {
  shardId: string;
  /** The shard's map epoch at the snapshot. */
  epoch: number;
  /** Under bsp: the steps applied. */
  closedSteps: number;
  /** The slots the shard owned per its map at `epoch`, ascending: the ones whose values are in the export. */
  slots: number[];
  /** Sparse rows, over every table. */
  rows: number;
  createdAtMs: number;
  /** How long serving paused for the copy. */
  snapshotMs: number;
}

export interface ModelExport {
  header: ModelExportHeader;
  dense: { slot: number; values: Float32Array }[];
  /** Per table and slot: `count` ids as lo/hi halves (so little-endian uint64 in memory) and count × dim values. */
  sparse: { table: string; slot: number; count: number; ids: Uint32Array; values: Float32Array }[];
}

/** The slots `shard` owns per its map, ascending. */
function servedSlots(shard: Shard): number[] {
  const out: number[] = [];
  for (const r of shard.owned()) for (let s = r.begin; s < r.end; s++) out.push(s);
  return out;
}

/** 4-byte words {@link copyModel} copies now. */
export function exportWords(shard: Shard, sparse: SparseStore): number {
  const served = servedSlots(shard);
  const owned = new Set(served);
  let n = 0;
  for (const s of served) n += shard.store.get(s)?.values.length ?? 0;
  for (const spec of shard.config.model.sparse ?? []) {
    const table = sparse.table(spec.name);
    for (const s of table.heldSlots()) if (owned.has(s)) n += table.slot(s)!.count * (2 + table.dim);
  }
  return n;
}

/**
 * Copies the values of every dense slot and sparse row of the slots `shard`
 * owns per its map, in one synchronous pass, into `arena` while it has room.
 * Under bsp the open step's summed pushes are not applied yet and so not in it.
 */
export function copyModel(shard: Shard, sparse: SparseStore, arena: SnapshotArena = new SnapshotArena(0)): Omit<ModelExport, 'header'> & { header: Omit<ModelExportHeader, 'snapshotMs'> } {
  // A shard with lost slots has no values to give for them (and must not create them): refused, naming one.
  shard.refuseLost();
  const slots = servedSlots(shard);
  const owned = new Set(slots);
  const dense = slots.map((slot) => ({ slot, values: arena.copy(shard.store.ensure(slot).values) })); // every owned slot is held: lost ones were refused above
  const rows: ModelExport['sparse'] = [];
  let count = 0;
  for (const spec of shard.config.model.sparse ?? []) {
    const table = sparse.table(spec.name);
    for (const s of table.heldSlots()) {
      if (!owned.has(s)) continue;
      const r = table.slot(s)!;
      const n = r.count;
      if (n === 0) continue;
      rows.push({ table: spec.name, slot: s, count: n, ids: arena.copy(r.ids.subarray(0, 2 * n)), values: arena.copy(r.values.subarray(0, n * table.dim)) });
      count += n;
    }
  }
  const header = { shardId: shard.id, epoch: shard.epoch, closedSteps: shard.gate.closedSteps, slots, rows: count, createdAtMs: Date.now() };
  return { header, dense, sparse: rows };
}

/**
 * The export of one shard: memory for the copy made ready while it serves,
 * then the copy (the one pause), at a bsp step where asked — as a
 * checkpoint's snapshot ({@link snapshotAtStep}).
 *
 * @throws StepAheadError, ClockTimeoutError, InvalidArgumentError as snapshotAtStep; `signal`'s reason once it aborts.
 */
export async function takeModelExport(shard: Shard, sparse: SparseStore, atStep = 0, signal?: AbortSignal): Promise<ModelExport> {
  // A shard with lost slots has no values to give for them (and must not create them): refused, naming one.
  shard.refuseLost();
  const { image, pauseMs } = await snapshotAtStep(
    shard.gate,
    atStep,
    async () => {
      const arena = new SnapshotArena(exportWords(shard, sparse));
      await arena.prepare();
      return () => copyModel(shard, sparse, arena);
    },
    signal,
  );
  const h = image.header;
  log.info(`shard ${shard.id}: model export of ${h.slots.length} slots and ${h.rows} rows at map epoch ${h.epoch}${shard.gate.model.kind === 'bsp' ? `, step ${h.closedSteps}` : ''} (serving paused ${pauseMs.toFixed(1)} ms)`);
  return { ...image, header: { ...h, snapshotMs: pauseMs } };
}

/** A `tessera.v1.ModelPiece`, as the proto loader takes it. */
export type ModelPieceMessage =
  | { header: ModelExportHeader }
  | { dense: { slot: number; offset: number; values: Buffer } }
  | { rows: { table: string; slot: number; ids: Buffer; values: Buffer; count: number } };

/**
 * `image` as the messages of an ExportModel stream: the header, then each
 * dense slot, then each slot's rows per table, each message's payload at most
 * `maxBytes` (a large slot in several). Views of the image's memory, no copy.
 */
export function* modelPieces(image: ModelExport, maxBytes = MODEL_PIECE_BYTES): Generator<ModelPieceMessage> {
  yield { header: image.header };
  const per = Math.max(1, Math.floor(maxBytes / 4));
  for (const { slot, values } of image.dense) {
    // A slot of no elements (more slots than elements) still gets its (empty) message.
    let at = 0;
    do {
      yield { dense: { slot, offset: at, values: floatBytes(values, at, Math.min(values.length, at + per)) } };
      at += per;
    } while (at < values.length);
  }
  for (const r of image.sparse) {
    const dim = r.values.length / r.count;
    const batch = Math.max(1, Math.floor(maxBytes / (8 + 4 * dim)));
    for (let at = 0; at < r.count; at += batch) {
      const n = Math.min(batch, r.count - at);
      const ids = Buffer.from(r.ids.buffer, r.ids.byteOffset + at * 8, n * 8);
      yield { rows: { table: r.table, slot: r.slot, ids, values: floatBytes(r.values, at * dim, (at + n) * dim), count: n } };
    }
  }
}
