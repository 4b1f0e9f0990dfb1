import * as grpc from '@grpc/grpc-js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { NotFoundError, NotReadyError, RemoteError, StepAheadError, TesseraError } from '../cluster/errors.js';
import { deadlineIn, dial } from '../cluster/grpc-client.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { layout } from '../cluster/model-spec.js';
import { shardAdminService } from '../cluster/proto.js';
import { formatRanges, slotElements, type SlotRange } from '../cluster/slots.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import type { ModelHeader__Output } from '../cluster/wire/proto-types/tessera/v1/ModelHeader.js';
import type { ModelPiece__Output } from '../cluster/wire/proto-types/tessera/v1/ModelPiece.js';
import { atAlignedStep } from './checkpoint-client.js';

/**
 * The trained model's values, read out of a running cluster while it trains
 * on: every shard of the map is asked at once for its snapshot
 * (`ShardAdmin.ExportModel`, proto/tessera/v1/admin.proto), which costs it the
 * pause of a checkpoint's snapshot and no more (docs/checkpoints.md).
 */

/** One shard's part of a {@link ModelSnapshot}. */
export interface ShardModelSnapshot {
  id: string;
  address: string;
  /** How many slots it owned at its snapshot, whose values it sent. */
  slots: number;
  /** Those slots, ascending. */
  ownedSlots: number[];
  /** Sparse rows it sent, over every table. */
  rows: number;
  /** Its map epoch at the snapshot. */
  epoch: number;
  /** How long it paused serving to take the snapshot. */
  snapshotMs: number;
  /** Under bsp: the steps it had applied. */
  closedSteps: number;
  /** When it took the snapshot (its clock). */
  createdAt: Date;
}

/** A sparse table's rows: ids ascending, `rows` holding ids.length × dim values, row by row. */
export interface SparseTableSnapshot {
  ids: BigUint64Array;
  rows: Float32Array;
}

export interface ModelSnapshot {
  config: ClusterConfig;
  /** The whole flat dense vector: length D = layout(config.model).elements. */
  dense: Float32Array;
  /** Every table of the model, by name (empty where it holds no row). */
  tables: Map<string, SparseTableSnapshot>;
  /** The map epoch every shard snapshotted at. */
  epoch: number;
  /** Under bsp, the step every shard snapshotted at; otherwise the most steps any shard had applied. */
  closedSteps: number;
  shards: ShardModelSnapshot[];
  /** When the last shard took its snapshot: each shard's is one instant of it, at most this late. */
  takenAt: Date;
}

/** How long one shard may take to answer, unless told otherwise: 10 minutes. */
export const MODEL_SNAPSHOT_DEADLINE_MS = 600_000;
/** Snapshots taken before giving up when the shards' answers do not fit together (slots moved meanwhile). */
export const MODEL_SNAPSHOT_ATTEMPTS = 3;

/** What {@link checkCoverage} needs of a shard's answer. */
export interface CoverageHeader {
  shardId: string;
  epoch: number;
  slots: readonly number[];
  closedSteps?: number;
}

/**
 * Whether the shards' answers together cover each of `slots` slots exactly
 * once, at one map epoch (and, with `sameStep`, at one bsp step): returns
 * what is wrong, or null.
 */
export function checkCoverage(slots: number, headers: readonly CoverageHeader[], sameStep = false): string | null {
  if (headers.length === 0) return 'no shard answered';
  const list = (f: (h: CoverageHeader) => number | undefined) => headers.map((h) => `${h.shardId} at ${f(h)}`).join(', ');
  if (new Set(headers.map((h) => h.epoch)).size > 1) return `the shards answered at different map epochs (${list((h) => h.epoch)})`;
  const epoch = headers[0]!.epoch;
  if (sameStep && new Set(headers.map((h) => h.closedSteps ?? 0)).size > 1) return `the shards snapshotted different steps (${list((h) => h.closedSteps ?? 0)})`;
  const owner = new Array<string | undefined>(slots);
  const twice: string[] = [];
  for (const h of headers) {
    for (const s of h.slots) {
      if (!(Number.isInteger(s) && s >= 0 && s < slots)) return `shard ${h.shardId} sent slot ${s}, outside 0…${slots - 1}`;
      if (owner[s] !== undefined) twice.push(`slot ${s} by ${owner[s]} and ${h.shardId}`);
      else owner[s] = h.shardId;
    }
  }
  if (twice.length > 0) return `at map epoch ${epoch} ${twice.length} slot(s) came twice: ${twice.slice(0, 5).join('; ')}${twice.length > 5 ? '; …' : ''}`;
  const missing: SlotRange[] = [];
  for (let s = 0; s < slots; s++) {
    if (owner[s] !== undefined) continue;
    const last = missing[missing.length - 1];
    if (last && last.end === s) last.end = s + 1;
    else missing.push({ begin: s, end: s + 1 });
  }
  if (missing.length > 0) return `at map epoch ${epoch} no shard that answered owns slots ${formatRanges(missing)}`;
  return null;
}

/**
 * Takes the trained model out of the running cluster: asks every shard of
 * the map at once for a snapshot of the values it serves and assembles them.
 * Each shard's part is one instant of that shard (a push is in it whole or
 * not at all); under bsp every shard takes it when the same number of steps
 * is applied, chosen as `checkpointCluster` does, so the whole is one state
 * of the run. When the answers do not cover every slot exactly once at one
 * map epoch (a slot moved between two shards' snapshots, a shard answered at
 * another epoch), the whole snapshot is taken again, up to 3 times.
 * `deadlineMs` bounds each shard's answer (default 10 minutes).
 *
 * @throws NotFoundError when the store holds no cluster or no map;
 *   NotReadyError when no snapshot fits together after 3 attempts; the
 *   typed error of a shard that fails (StepAheadError when it passed the
 *   step chosen three times, ShardUnavailableError, …), its message naming
 *   the shard.
 */
export async function snapshotModel(store: MembershipStore, options: { deadlineMs?: number } = {}): Promise<ModelSnapshot> {
  const deadlineMs = options.deadlineMs ?? MODEL_SNAPSHOT_DEADLINE_MS;
  let dense: Float32Array | null = null;
  let problem = '';
  for (let attempt = 1; attempt <= MODEL_SNAPSHOT_ATTEMPTS; attempt++) {
    const [map, config] = await Promise.all([store.getMap(), store.getConfig()]);
    if (!config) throw new NotFoundError('no cluster is configured in the membership store: there is no model to snapshot');
    if (!map) throw new NotFoundError('the cluster has no shard map yet: no shard has joined, so there is no model to snapshot');
    const bsp = config.consistency === 'bsp';
    // Every attempt writes every slot it covers; only an attempt that covers all of them is kept.
    dense ??= new Float32Array(layout(config.model).elements);
    const into = dense;
    const shards = Object.entries(map.addresses);
    const round = await atAlignedStep(
      shards.map(([, address]) => address),
      bsp,
      deadlineMs,
      (atStep) => readAll(shards, atStep, deadlineMs, config, into),
      (r) => r.failure?.error instanceof StepAheadError,
    );
    if (round.failure) {
      const { id, address, error } = round.failure;
      if (!error.message.includes(`shard ${id}`)) error.message = `shard ${id} at ${address}: ${error.message}`;
      throw error;
    }
    const parts = round.parts;
    const wrong = checkCoverage(
      config.slots,
      parts.map((p) => ({ shardId: p.shard.id, epoch: p.shard.epoch, slots: p.shard.ownedSlots, closedSteps: p.shard.closedSteps })),
      bsp,
    );
    if (wrong) {
      problem = wrong;
      continue;
    }
    return {
      config,
      dense: into,
      tables: assembleTables(config, parts.flatMap((p) => p.rows)),
      epoch: parts[0]!.shard.epoch,
      closedSteps: Math.max(...parts.map((p) => p.shard.closedSteps)),
      shards: parts.map((p) => p.shard),
      takenAt: new Date(Math.max(...parts.map((p) => p.shard.createdAt.getTime()))),
    };
  }
  throw new NotReadyError(`no snapshot of the model fits together after ${MODEL_SNAPSHOT_ATTEMPTS} attempts (last: ${problem}); the shard map kept changing (slots moving?): try again once it settles`);
}

/** Rows of one table in one slot, as a shard sent them. */
interface RowBatch {
  table: string;
  ids: Buffer;
  values: Buffer;
  count: number;
}

interface ShardPart {
  shard: ShardModelSnapshot;
  rows: RowBatch[];
}

interface Failure {
  id: string;
  address: string;
  error: TesseraError;
}

/** Every shard's snapshot at `atStep`; at the first failure the other calls are cancelled and it is reported. */
async function readAll(shards: [string, string][], atStep: number, deadlineMs: number, config: ClusterConfig, dense: Float32Array): Promise<{ parts: ShardPart[]; failure?: Failure }> {
  const stop = new AbortController();
  let failure: Failure | undefined;
  const parts = await Promise.all(
    shards.map(([id, address]) =>
      readShard(id, address, atStep, deadlineMs, config, dense, stop.signal).catch((err: unknown) => {
        if (!failure && !stop.signal.aborted) {
          failure = { id, address, error: err instanceof TesseraError ? err : new RemoteError(grpc.status.INTERNAL, String(err)) };
          stop.abort();
        }
        return null;
      }),
    ),
  );
  return failure ? { parts: [], failure } : { parts: parts as ShardPart[] };
}

// Messages as typed from proto/ (scripts/gen-proto-types.mjs).
type HeaderMsg = ModelHeader__Output;
type PieceMsg = ModelPiece__Output;

/**
 * One shard's ExportModel stream: its dense slots written into `dense` as
 * they come (each slot where the key space puts it), its rows kept; checked
 * as it goes (a header first, only the slots it names, each slot whole, the
 * rows it announced).
 */
function readShard(id: string, address: string, atStep: number, deadlineMs: number, config: ClusterConfig, dense: Float32Array, signal: AbortSignal): Promise<ShardPart> {
  const elements = dense.length;
  const target = Buffer.from(dense.buffer, dense.byteOffset, dense.byteLength);
  const dims = new Map((config.model.sparse ?? []).map((t) => [t.name, t.dim]));
  const stub = dial(shardAdminService(), address) as grpc.Client & { exportModel(req: object, opts: grpc.CallOptions): grpc.ClientReadableStream<PieceMsg> };
  return new Promise<ShardPart>((resolve, reject) => {
    const call = stub.exportModel({ atStep }, { deadline: deadlineIn(deadlineMs) });
    let header: HeaderMsg | null = null;
    let owned = new Set<number>();
    /** Elements received per slot. */
    const filled = new Map<number, number>();
    const rows: RowBatch[] = [];
    let rowCount = 0;
    let settled = false;
    const finish = (err: TesseraError | null) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', cancel);
      stub.close();
      if (err) reject(err);
      else resolve({ shard: { id, address, slots: header!.slots.length, ownedSlots: header!.slots, rows: rowCount, epoch: header!.epoch, snapshotMs: header!.snapshotMs, closedSteps: header!.closedSteps, createdAt: new Date(header!.createdAtMs) }, rows });
    };
    const bad = (what: string) => {
      call.cancel();
      finish(new RemoteError(grpc.status.INTERNAL, `shard ${id} at ${address} sent ${what}`));
    };
    const cancel = () => {
      call.cancel();
      finish(new RemoteError(grpc.status.CANCELLED, `the snapshot of shard ${id} was called off`));
    };
    signal.addEventListener('abort', cancel, { once: true });
    if (signal.aborted) cancel();
    call.on('data', (m: PieceMsg) => {
      if (settled) return;
      const kind = m.piece ?? (m.header ? 'header' : m.dense ? 'dense' : m.rows ? 'rows' : undefined);
      if (kind === 'header') {
        if (header) return bad('a second header');
        header = m.header!;
        owned = new Set(header.slots);
        return;
      }
      if (!header) return bad('values before its header');
      if (kind === 'dense') {
        const { slot, offset, values } = m.dense!;
        if (!owned.has(slot)) return bad(`values of slot ${slot}, not one its header names`);
        const { start, end } = slotElements(slot, elements, config.slots);
        const n = values.byteLength / 4;
        if (offset !== (filled.get(slot) ?? 0) || !Number.isInteger(n) || start + offset + n > end) return bad(`values [${offset}, ${offset + n}) of slot ${slot}, which holds ${end - start} elements`);
        values.copy(target, (start + offset) * 4);
        filled.set(slot, offset + n);
      } else if (kind === 'rows') {
        const r = m.rows!;
        const dim = dims.get(r.table);
        if (dim === undefined) return bad(`rows of table "${r.table}", which the model does not have`);
        if (!owned.has(r.slot)) return bad(`rows of slot ${r.slot}, not one its header names`);
        if (!(r.count > 0) || r.ids.byteLength !== r.count * 8 || r.values.byteLength !== r.count * dim * 4) return bad(`a batch of ${r.count} rows of table ${r.table} with ${r.ids.byteLength} bytes of ids and ${r.values.byteLength} of values`);
        rows.push({ table: r.table, ids: r.ids, values: r.values, count: r.count });
        rowCount += r.count;
      } else return bad('an empty message');
    });
    call.on('error', (err: grpc.ServiceError) => finish(fromStatus(err, address)));
    call.on('end', () => {
      if (settled) return;
      if (!header) return bad('no header');
      for (const s of header.slots) {
        const { start, end } = slotElements(s, elements, config.slots);
        if ((filled.get(s) ?? 0) !== end - start) return bad(`${filled.get(s) ?? 0} of the ${end - start} values of slot ${s}`);
      }
      if (rowCount !== header.rows) return bad(`${rowCount} of the ${header.rows} rows its header announced`);
      finish(null);
    });
  });
}

/** Each table's rows from every shard, ids ascending. */
function assembleTables(config: ClusterConfig, batches: readonly RowBatch[]): Map<string, SparseTableSnapshot> {
  const tables = new Map<string, SparseTableSnapshot>();
  for (const spec of config.model.sparse ?? []) {
    const dim = spec.dim;
    const mine = batches.filter((b) => b.table === spec.name);
    const n = mine.reduce((k, b) => k + b.count, 0);
    // As received: ids as lo/hi halves, values row by row.
    const halves = new Uint32Array(2 * n);
    const values = new Float32Array(n * dim);
    const halfBytes = Buffer.from(halves.buffer);
    const valueBytes = Buffer.from(values.buffer);
    let at = 0;
    for (const b of mine) {
      b.ids.copy(halfBytes, at * 8);
      b.values.copy(valueBytes, at * dim * 4);
      at += b.count;
    }
    const order = Uint32Array.from({ length: n }, (_, i) => i).sort((a, b) => halves[2 * a + 1]! - halves[2 * b + 1]! || halves[2 * a]! - halves[2 * b]!);
    const ids = new BigUint64Array(n);
    const idHalves = new Uint32Array(ids.buffer);
    const rows = new Float32Array(n * dim);
    for (let i = 0; i < n; i++) {
      const o = order[i]!;
      idHalves[2 * i] = halves[2 * o]!;
      idHalves[2 * i + 1] = halves[2 * o + 1]!;
      for (let c = 0; c < dim; c++) rows[i * dim + c] = values[o * dim + c]!;
    }
    tables.set(spec.name, { ids, rows });
  }
  return tables;
}
