import { InvalidArgumentError, MigrationError, PermissionDeniedError, TesseraError } from '../cluster/errors.js';
import { dial, unary } from '../cluster/grpc-client.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { shardAdminService } from '../cluster/proto.js';
import { type ShardMap, backupsOf, compactBackups, holdersOnly } from '../cluster/shard-map.js';
import { withBackup } from '../cluster/replica-plan.js';
import { slotStart } from '../cluster/slots.js';
import { badSeq, badWorkerId } from '../cluster/worker-id.js';
import { type TransportSecurity, processSecurity } from '../cluster/tls/transport-security.js';
import { applyGradient } from './optimizers.js';
import { FrameReader, frameArrays } from './array-frame.js';
import { type CheckpointImage, decodeCheckpoint, encodeCheckpoint } from './checkpoint-format.js';
import { restore, snapshot } from './checkpoint.js';
import { type LogEntry, MigrationLog } from './migration-log.js';
import { type ReplicaEntryHead } from '../cluster/wire/bulk-frames.js';
import { badDedupImage } from './push-dedup.js';
import { type Shard, firstNonFinite } from './shard.js';
import { type SparseStore } from './sparse-store.js';

/**
 * Live slot migration (docs/migration.md), in the shape of Redis/Valkey
 * atomic slot migration: the source records what it applies to the moving
 * slots, sends the target a snapshot of them while it goes on serving, then
 * what it applied meanwhile (in rounds, while that shrinks); then it freezes
 * the slots (their requests get a retryable not-ready), sends the last
 * updates, and flips their owner in the map by compare-and-set on its epoch.
 * The target holds what it received without serving it until the map gives
 * it the slots. At no instant do two shards apply pushes for a slot: the
 * source stops (freeze) before the map changes, and the target starts only
 * once it holds a map in which it owns the slot.
 */

/** Largest payload of one ImportSlots or ApplyLog call; a move's slots and log are sent in pieces under it. */
export const MIGRATION_PAYLOAD_BYTES = 12 << 20;
/** Rounds of log sent while serving before the slots are frozen; fewer when the log runs short. */
const LOG_ROUNDS = 8;
/** Entries left in the log below which the slots are frozen for the last round. */
const FREEZE_BELOW = 64;
const CALL_DEADLINE_MS = 60_000;

export interface MoveReport {
  epoch: number;
  slots: number;
  rows: number;
  logEntries: number;
  frozenMs: number;
  totalMs: number;
}

/** What is done with the slots a transfer sends: `move` hands them over, `copy` makes the target one more backup of them. */
export type TransferKind = 'move' | 'copy';

export interface TransferOptions {
  /** Resolves once what the source applied before the freeze is held by its backups (replication.ts): waited for before the map changes. */
  beforeFlip?: () => Promise<void> | null;
  security?: TransportSecurity;
}

/**
 * The source side of a move (`kind` 'move'): hands `slots` of `shard` to the
 * shard `targetId` at `targetAddress` and writes the map that gives them to
 * it. `adopt` installs that map here at once (so this shard redirects from
 * then on).
 *
 * A backup's catch-up (`kind` 'copy', docs/replication.md) takes the same
 * steps — snapshot while serving, the log in rounds, freeze, the last
 * updates — but the map written lists `targetId` as one more backup of
 * `slots`, and this shard keeps them. From that map on, every push to them
 * is held by the target before it is acknowledged.
 *
 * @throws InvalidArgumentError for slots this shard does not own, or a target
 *   that is this shard (or already their backup, for a copy); MigrationError
 *   under bsp (whose open step holds sums not yet applied), while another
 *   move or copy runs, or when the map changed under it; the target's errors
 *   as they come. Any failure before the map changed undoes it: the slots
 *   stay here, as they were, and serve on.
 */
export async function transferSlots(
  kind: TransferKind,
  shard: Shard,
  sparse: SparseStore,
  store: MembershipStore,
  adopt: (map: ShardMap) => void,
  slots: readonly number[],
  targetId: string,
  targetAddress: string,
  options: TransferOptions,
): Promise<MoveReport> {
  const started = performance.now();
  const security = options.security ?? processSecurity();
  const what = kind === 'move' ? 'move' : 'copy';
  const map = await store.getMap();
  if (!map) throw new InvalidArgumentError('the cluster has no shard map yet');
  if (shard.gate.model.kind === 'bsp') throw new MigrationError('slots cannot move under bsp: the open step holds summed pushes that are not applied yet; move them between runs');
  if (targetId === shard.id) throw new InvalidArgumentError(`shard ${shard.id} cannot ${what} slots to itself`);
  if (!targetAddress) throw new InvalidArgumentError(`a ${what} needs the target shard’s address`);
  if (slots.length === 0) throw new InvalidArgumentError(`a ${what} needs at least one slot`);
  // The target must be a live shard at the address it registered: slots go nowhere else.
  const target0 = (await store.members('shard')).find((m) => m.id === targetId);
  if (!target0 || target0.address !== targetAddress) {
    throw new InvalidArgumentError(`the target of a ${what} must be a live shard at its own address: ${target0 ? `${targetId} is at ${target0.address}, not ${targetAddress.slice(0, 80)}` : `no live shard is called "${targetId.slice(0, 80)}"`}`);
  }
  const set = new Set(slots);
  for (const s of set) {
    if (!(Number.isInteger(s) && s >= 0 && s < map.slots)) throw new InvalidArgumentError(`slot ${s} is outside 0…${map.slots - 1}`);
    if (map.owners[s] !== shard.id) throw new InvalidArgumentError(`slot ${s} is owned by ${map.owners[s]}, not by ${shard.id}`);
    if (shard.lost.has(s)) throw new MigrationError(`slot ${s} is lost on shard ${shard.id} (it holds no values for it): restore it or reset it (tessera reset-slots) before moving it`);
    if (kind === 'copy' && backupsOf(map, s).includes(targetId)) throw new InvalidArgumentError(`shard ${targetId} is already a backup of slot ${s}`);
  }
  if (shard.migration) throw new MigrationError(`shard ${shard.id} is already moving or copying slots; one at a time`);

  const log = new MigrationLog(set);
  shard.migration = log;
  const target = dial(shardAdminService(), targetAddress, security);
  const call = (method: 'importSlots' | 'applyLog' | 'dropSlots', req: object) => unary(target, method, req, CALL_DEADLINE_MS, targetAddress);
  let logEntries = 0;
  let frozenAt = 0;
  let flipped = false;
  const sendLog = async () => {
    for (const piece of logPieces(log.take())) {
      logEntries += piece.count;
      await call('applyLog', { data: piece.data });
    }
  };
  try {
    // 1. The snapshot, while serving; sent in pieces of whole slots.
    const image = snapshot(shard, sparse, undefined, set);
    const rows = image.sparse.reduce((n, r) => n + r.count, 0);
    for (const part of imagePieces(image)) await call('importSlots', { data: Buffer.concat(encodeCheckpoint(part)) });
    // 2. What was applied meanwhile, while it shrinks.
    for (let round = 0; round < LOG_ROUNDS && log.pending >= FREEZE_BELOW; round++) await sendLog();
    // 3. Freeze, the last updates, the map.
    for (const s of set) shard.frozen.add(s);
    frozenAt = performance.now();
    await sendLog();
    // What the backups were sent before the freeze reaches them before another shard sends them more.
    await options.beforeFlip?.();
    const current = await store.getMap();
    if (!current || [...set].some((s) => current.owners[s] !== shard.id)) throw new MigrationError(`the map changed under the ${what}; nothing ${kind === 'move' ? 'moved' : 'copied'}`);
    const next = kind === 'move' ? movedMap(current, set, targetId, targetAddress) : withBackup(current, set, targetId, targetAddress, target0.bulkAddress);
    await store.casMap(current.epoch, next);
    flipped = true;
    adopt(next);
    const frozenMs = performance.now() - frozenAt;
    // Moved: the slots are the target's now: this shard redirects, and lets go of them.
    if (kind === 'move') dropSlots(shard, sparse, set);
    return { epoch: next.epoch, slots: set.size, rows, logEntries, frozenMs, totalMs: performance.now() - started };
  } catch (err) {
    // Before the flip the target lets go of what it received; after it, the slots are the target's.
    if (!flipped) await call('dropSlots', { slots: [...set] }).catch(() => undefined);
    throw err instanceof TesseraError ? err : new MigrationError(`the ${what} of ${set.size} slots to ${targetId} failed: ${(err as Error).message}`);
  } finally {
    for (const s of set) shard.frozen.delete(s);
    shard.migration = null;
    target.close();
  }
}

/**
 * The map after a move of `set` to `targetId`: the target owns them (and is
 * no longer one of their backups, if it was); a shard left holding no slot,
 * owned or backed, leaves the map.
 */
function movedMap(current: ShardMap, set: ReadonlySet<number>, targetId: string, targetAddress: string): ShardMap {
  const owners = current.owners.map((o, s) => (set.has(s) ? targetId : o));
  const backups = current.backups?.map((b, s) => (set.has(s) ? b.filter((id) => id !== targetId) : [...b]));
  const kept = backups ? compactBackups(backups) : {};
  // The target's bulk address is not known here: clients ask it with Describe until a map rebuilt from the leases names it.
  const bulk = current.bulk ? Object.fromEntries(Object.entries(current.bulk).filter(([id]) => id !== targetId)) : undefined;
  return { epoch: current.epoch + 1, slots: current.slots, owners, ...holdersOnly(owners, kept.backups, { ...current.addresses, [targetId]: targetAddress }, bulk), ...kept, ...(current.rollBacks ? { rollBacks: current.rollBacks } : {}) };
}

/**
 * Refuses a move's payload for `slots` unless `sender` (the shard in the
 * caller's certificate; null under plaintext) is what the map names as their
 * owner: only the source of a move hands its slots over.
 * @throws PermissionDeniedError naming the slot, its owner and the sender.
 */
function checkSender(shard: Shard, sender: string | null, slots: Iterable<number>): void {
  if (sender === null) return;
  for (const s of slots) {
    const owner = shard.ownerOf(s);
    if (owner !== sender) throw new PermissionDeniedError(`slot ${s} belongs to ${owner ?? 'no shard'} in the map of epoch ${shard.epoch}; only its owner moves it, and the caller is shard "${sender}"`);
  }
}

/** The target side: slots from a move's snapshot, kept until the map gives them here; `sender` as in checkSender. */
export function importSlots(data: Buffer, shard: Shard, sparse: SparseStore, sender: string | null = null): number {
  const image = decodeCheckpoint(data, 'a moved slot');
  checkSender(shard, sender, [...image.dense.map((d) => d.slot), ...image.sparse.map((r) => r.slot)]);
  checkImport(image, shard);
  return restore(image, shard, sparse, 'a moved slot').slots;
}

/**
 * What restore would take on trust from a move's snapshot, checked before
 * any of it is kept (a refused one creates nothing): only slots this shard is
 * receiving — in the key space, not its own by the map, dense and sparse
 * alike — each dense slot of its length, finite values and optimizer state,
 * records of applied pushes a shard can hold.
 * @throws InvalidArgumentError naming the first slot that fails.
 */
function checkImport(image: CheckpointImage, shard: Shard): void {
  const slots = shard.config.slots;
  for (const x of [...image.dense, ...image.sparse]) {
    const s = x.slot;
    if (!(Number.isInteger(s) && s >= 0 && s < slots)) throw new InvalidArgumentError(`a moved slot ${s}: no such slot in a cluster of ${slots}`);
    if (shard.ownerOf(s) === shard.id) throw new InvalidArgumentError(`slot ${s} is already served by ${shard.id}; a move cannot overwrite it`);
    if (firstNonFinite(x.values) >= 0 || x.state.some((a) => firstNonFinite(a) >= 0)) throw new InvalidArgumentError(`a moved slot ${s}: a non-finite value`);
    for (const d of x.dedup) {
      const bad = badDedupImage(d);
      if (bad) throw new InvalidArgumentError(`a moved slot ${s}: ${bad}`);
    }
  }
  for (const d of image.dense) {
    const length = slotStart(d.slot + 1, shard.elements, slots) - slotStart(d.slot, shard.elements, slots);
    if (d.values.length !== length) throw new InvalidArgumentError(`a moved slot ${d.slot}: ${d.values.length} values, the slot ${length}`);
  }
}

/**
 * The target side: the source's updates since the snapshot, applied in order,
 * once each (per slot, by worker and seq). Every entry is checked before any
 * is applied, as a push is: only slots this shard holds as the target of a
 * move (imported, not yet its own by the map), the slot's length, finite
 * values, a known table.
 * @throws InvalidArgumentError naming the first entry that fails; nothing is applied then.
 */
export function applyLog(data: Buffer, shard: Shard, sparse: SparseStore, sender: string | null = null): number {
  return applyEntries(decodeLog(data), shard, sparse, sender);
}

/** {@link applyLog} of entries already decoded (a backup's updates over the bulk port: {@link entriesOf}). */
export function applyEntries(entries: readonly LogEntry[], shard: Shard, sparse: SparseStore, sender: string | null = null): number {
  checkSender(shard, sender, entries.map((e) => e.slot));
  entries.forEach((e, i) => {
    const what = `logged update #${i} (slot ${e.slot})`;
    if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot >= shard.config.slots) throw new InvalidArgumentError(`${what}: no such slot in a cluster of ${shard.config.slots}`);
    if (shard.ownerOf(e.slot) === shard.id) throw new InvalidArgumentError(`${what}: the slot is served by ${shard.id}; a move's updates go only to slots it is receiving`);
    const bad = badWorkerId(e.worker) ?? badSeq(e.seq);
    if (bad) throw new InvalidArgumentError(`${what}: ${bad}`);
    if (firstNonFinite(e.gradient) >= 0) throw new InvalidArgumentError(`${what}: a non-finite value`);
    if (e.kind === 'dense') {
      const slot = shard.store.get(e.slot);
      if (!slot) throw new InvalidArgumentError(`${what}: no move brought this slot to ${shard.id} (import it first)`);
      if (e.gradient.length !== slot.values.length) throw new InvalidArgumentError(`${what}: ${e.gradient.length} values, the slot ${slot.values.length}`);
    } else {
      const table = sparse.table(e.table);
      if (e.gradient.length !== (e.ids.length / 2) * table.dim) throw new InvalidArgumentError(`${what}: ${e.gradient.length} values for ${e.ids.length / 2} rows of ${table.dim}`);
    }
  });
  for (const e of entries) {
    if (e.kind === 'dense') {
      const slot = shard.store.get(e.slot)!;
      if (slot.dedup.has(e.worker, e.seq)) continue;
      applyGradient(slot, e.gradient, 0, shard.config.optimizer);
      slot.dedup.add(e.worker, e.seq);
    } else {
      const table = sparse.table(e.table);
      const rows = table.ensureSlot(e.slot);
      if (rows.dedup.has(e.worker, e.seq)) continue;
      for (let i = 0; i < e.ids.length / 2; i++) table.applyRow(rows, table.ensureRow(rows, e.ids[2 * i]!, e.ids[2 * i + 1]!), e.gradient, i * table.dim);
      rows.dedup.add(e.worker, e.seq);
    }
  }
  return entries.length;
}

/** Forgets `slots` (dense and sparse) unless the map gives them to this shard, as their owner or a backup. */
export function dropSlots(shard: Shard, sparse: SparseStore, slots: Iterable<number>, sender: string | null = null): number {
  checkSender(shard, sender, slots);
  let n = 0;
  for (const s of slots) {
    if (shard.ownerOf(s) === shard.id || shard.backs(s)) continue;
    shard.store.drop(s);
    for (const spec of shard.config.model.sparse ?? []) sparse.table(spec.name).dropSlot(s);
    n++;
  }
  return n;
}

/** A snapshot cut into images of whole slots, each encoding to at most about MIGRATION_PAYLOAD_BYTES. */
function imagePieces(image: ReturnType<typeof snapshot>): ReturnType<typeof snapshot>[] {
  const bySlot = new Map<number, { dense: typeof image.dense; sparse: typeof image.sparse; bytes: number }>();
  const entry = (s: number) => bySlot.get(s) ?? bySlot.set(s, { dense: [], sparse: [], bytes: 4096 }).get(s)!;
  for (const d of image.dense) {
    const e = entry(d.slot);
    e.dense.push(d);
    e.bytes += 4 * d.values.length * (1 + d.state.length) + 1024;
  }
  for (const r of image.sparse) {
    const e = entry(r.slot);
    e.sparse.push(r);
    e.bytes += 4 * (r.ids.length + r.steps.length + r.values.length * (1 + r.state.length)) + 1024;
  }
  const pieces: ReturnType<typeof snapshot>[] = [];
  let current = { header: image.header, dense: [] as typeof image.dense, sparse: [] as typeof image.sparse };
  let bytes = 0;
  for (const [s, e] of [...bySlot].sort((a, b) => a[0] - b[0])) {
    if (e.bytes > MIGRATION_PAYLOAD_BYTES) throw new InvalidArgumentError(`slot ${s} holds about ${e.bytes} bytes, more than one move message carries (${MIGRATION_PAYLOAD_BYTES}); it cannot move`);
    if (bytes + e.bytes > MIGRATION_PAYLOAD_BYTES && bytes > 0) {
      pieces.push(current);
      current = { header: image.header, dense: [], sparse: [] };
      bytes = 0;
    }
    current.dense.push(...e.dense);
    current.sparse.push(...e.sparse);
    bytes += e.bytes;
  }
  if (current.dense.length + current.sparse.length > 0) pieces.push(current);
  return pieces;
}

/**
 * Entries as the bulk port carries them (ReplicaEntryHead, then each
 * entry's ids and gradient in `payload`), as views of `payload`, which must
 * be 4-byte aligned. Their fields are checked by applyEntries.
 * @throws InvalidArgumentError when the heads are not a list of entries or their arrays do not fill `payload` exactly.
 */
export function entriesOf(heads: unknown, payload: Buffer): LogEntry[] {
  if (!Array.isArray(heads) || !heads.every((h: unknown) => typeof h === 'object' && h !== null)) throw new InvalidArgumentError('replicated updates need a list of entries');
  let at = payload.byteOffset;
  const end = payload.byteOffset + payload.byteLength;
  const take = <T>(count: unknown, make: (buffer: ArrayBufferLike, offset: number, length: number) => T): T => {
    if (!(Number.isSafeInteger(count) && (count as number) >= 0 && at + 4 * (count as number) <= end)) throw new InvalidArgumentError(`replicated updates: an entry's length (${String(count).slice(0, 20)}) runs past the ${payload.byteLength} bytes sent`);
    const out = make(payload.buffer, at, count as number);
    at += 4 * (count as number);
    return out;
  };
  const entries = (heads as ReplicaEntryHead[]).map((h): LogEntry => {
    if (h.k === 'd') return { kind: 'dense', slot: h.s, worker: h.w, seq: h.q, gradient: take(h.n, (b, o, n) => new Float32Array(b, o, n)) };
    const ids = take(h.i ?? 0, (b, o, n) => new Uint32Array(b, o, n));
    return { kind: 'sparse', table: typeof h.t === 'string' ? h.t : '', slot: h.s, worker: h.w, seq: h.q, ids, gradient: take(h.n, (b, o, n) => new Float32Array(b, o, n)) };
  });
  if (at !== end) throw new InvalidArgumentError(`replicated updates: ${end - at} bytes sent beyond their entries`);
  return entries;
}

/** What the bulk port sends of `entries`: their heads, and their arrays as views (no copy), in order. */
export function entryFrames(entries: readonly LogEntry[]): { heads: ReplicaEntryHead[]; arrays: Buffer[]; bytes: number } {
  const heads: ReplicaEntryHead[] = [];
  const arrays: Buffer[] = [];
  let bytes = 0;
  const view = (a: Float32Array | Uint32Array) => {
    arrays.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    bytes += a.byteLength;
  };
  for (const e of entries) {
    if (e.kind === 'dense') heads.push({ k: 'd', s: e.slot, w: e.worker, q: e.seq, n: e.gradient.length });
    else {
      heads.push({ k: 's', t: e.table, s: e.slot, w: e.worker, q: e.seq, i: e.ids.length, n: e.gradient.length });
      view(e.ids);
    }
    view(e.gradient);
  }
  return { heads, arrays, bytes };
}

const LOG_MAGIC = 'TSRMLOG1';

/**
 * Log entries as bytes (array-frame.ts, magic TSRMLOG1): a JSON header with,
 * per entry, its kind, slot, worker, seq, table and lengths; then each
 * entry's ids (sparse) and gradient.
 */
export function encodeLog(entries: readonly LogEntry[]): Buffer {
  const header = entries.map((e) => (e.kind === 'dense' ? { k: 'd', s: e.slot, w: e.worker, q: e.seq, n: e.gradient.length } : { k: 's', t: e.table, s: e.slot, w: e.worker, q: e.seq, i: e.ids.length, n: e.gradient.length }));
  return Buffer.concat(frameArrays(LOG_MAGIC, header, entries.flatMap((e) => (e.kind === 'sparse' ? [e.ids, e.gradient] : [e.gradient]))));
}

/** @throws InvalidArgumentError for bytes that are not an encoded log. */
export function decodeLog(data: Buffer): LogEntry[] {
  type Head = { k: 'd' | 's'; s: number; w: string; q: number; n: number; t?: string; i?: number };
  const frame = new FrameReader<Head[]>(data, data.byteLength, LOG_MAGIC, 'a slot-move log', (problem) => new InvalidArgumentError(`the migration log ${problem}`));
  // The header is JSON from whoever sent the bytes: a list of entries, each an object, before it is read (the entries' fields are checked by applyLog).
  if (!Array.isArray(frame.header) || !frame.header.every((h: unknown) => typeof h === 'object' && h !== null)) throw new InvalidArgumentError('the migration log has a header that is not a list of entries');
  const entries = frame.header.map((h): LogEntry => {
    if (h.k === 'd') return { kind: 'dense', slot: h.s, worker: h.w, seq: h.q, gradient: frame.f32(h.n) };
    const ids = frame.u32(h.i ?? 0);
    return { kind: 'sparse', table: h.t ?? '', slot: h.s, worker: h.w, seq: h.q, ids, gradient: frame.f32(h.n) };
  });
  frame.finish();
  return entries;
}

/** Entries encoded in pieces of at most about MIGRATION_PAYLOAD_BYTES. */
export function logPieces(entries: LogEntry[]): { data: Buffer; count: number }[] {
  const out: { data: Buffer; count: number }[] = [];
  let batch: LogEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = 4 * e.gradient.length + (e.kind === 'sparse' ? 4 * e.ids.length : 0) + 128;
    if (bytes + size > MIGRATION_PAYLOAD_BYTES && batch.length > 0) {
      out.push({ data: encodeLog(batch), count: batch.length });
      batch = [];
      bytes = 0;
    }
    batch.push(e);
    bytes += size;
  }
  if (batch.length > 0) out.push({ data: encodeLog(batch), count: batch.length });
  return out;
}

