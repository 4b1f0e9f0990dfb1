import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { CheckpointError, InvalidArgumentError, StepAheadError } from '../cluster/errors.js';
import { type CheckpointIdentity, type CheckpointImage, CHECKPOINT_FORMAT, decodeCheckpoint, encodeCheckpoint } from './checkpoint-format.js';
import { type ClockGate } from './clock-gate.js';
import { type Shard } from './shard.js';
import { type SparseStore } from './sparse-store.js';

/**
 * Checkpoints of one shard (docs/checkpoints.md): a snapshot of everything it
 * holds, taken synchronously — so between two requests, each push whole or
 * not at all — then written to a file while the shard serves on; and the
 * restore of such a file into a shard that has not started serving.
 */

/** Checkpoints this process has started writing: each gets its own temporary file. */
let writes = 0;

/**
 * The file a shard's checkpoint goes to in `directory`: `<shard id>.tessera-checkpoint`
 * (the one `--resume` reads), or for a named one `<shard id>.<name>.tessera-checkpoint`.
 */
export function checkpointPath(directory: string, shardId: string, name = ''): string {
  return join(directory, `${shardId.replace(/[^A-Za-z0-9._-]/g, '_')}${name ? `.${name}` : ''}.tessera-checkpoint`);
}

/** How many of its own checkpoints a shard keeps by default: the newest and the two before it (`--checkpoint-keep`). */
export const DEFAULT_CHECKPOINT_KEEP = 3;

/**
 * The files of a shard's own checkpoints in `directory`, newest first: its
 * checkpoint file, then the `keep - 1` before it (`<file>.1`, `<file>.2`, …).
 */
export function ownCheckpointFiles(directory: string, shardId: string, keep = DEFAULT_CHECKPOINT_KEEP): string[] {
  const newest = checkpointPath(directory, shardId);
  return [newest, ...Array.from({ length: keep - 1 }, (_, i) => `${newest}.${i + 1}`)];
}

/**
 * Makes room for a new checkpoint at `files[0]`: the oldest goes, each other
 * moves one place down, and the newest stays where it is (linked as
 * `files[1]` too) until the new one replaces it atomically, so that at every
 * instant the newest complete checkpoint is at `files[0]`.
 */
async function shiftOlder(files: readonly string[]): Promise<void> {
  if (files.length < 2) return;
  const exists = async (f: string) => (await stat(f).catch(() => null)) !== null;
  await unlink(files[files.length - 1]!).catch(() => undefined);
  for (let i = files.length - 2; i >= 1; i--) if (await exists(files[i]!)) await rename(files[i]!, files[i + 1]!);
  if (await exists(files[0]!)) await link(files[0]!, files[1]!);
}

/** The longest name a checkpoint request may give. */
export const MAX_CHECKPOINT_NAME = 64;

/**
 * Why `name` cannot name a checkpoint, or null: a request names a file in the
 * shard's own checkpoint directory at most (1–64 letters, digits, `.`, `_`,
 * `-`, starting with a letter or digit), never a path.
 */
export function badCheckpointName(name: string): string | null {
  if (name === '') return null;
  if (name.length > MAX_CHECKPOINT_NAME || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    return `a checkpoint name is 1–${MAX_CHECKPOINT_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit (it names a file in the shard's --checkpoint-dir, never a path), got ${JSON.stringify(name.slice(0, 80))}`;
  }
  return null;
}

/** What a checkpoint of this cluster must match to be restored here. */
export function identityOf(config: ClusterConfig, elements: number): CheckpointIdentity {
  return {
    cluster: config.name,
    model: config.model.name,
    seed: config.model.seed,
    slots: config.slots,
    elements,
    optimizer: config.optimizer.name,
    tables: Object.fromEntries((config.model.sparse ?? []).map((t) => [t.name, { dim: t.dim, optimizer: (t.optimizer ?? config.optimizer).name }])),
  };
}

/**
 * Memory to copy a snapshot into, taken up front: on hosts where touching
 * fresh pages is slow (zeroing them, page faults), a copy into new arrays
 * costs tens of times a copy into memory already touched (here ≈ 550 ms
 * against ≈ 13 ms for 192 MB). {@link prepare} touches it in pieces, yielding
 * between them, so the shard serves on while it does; the snapshot itself is
 * then one pass of copies. A snapshot that outgrows it (rows created since)
 * takes fresh arrays for the rest.
 */
export class SnapshotArena {
  private readonly buffer: ArrayBuffer;
  private used = 0;

  constructor(readonly words: number) {
    this.buffer = new ArrayBuffer(words * 4);
  }

  /** Touches every page, 4 MiB at a time, yielding to other work between pieces. */
  async prepare(): Promise<void> {
    const piece = 1 << 20;
    for (let at = 0; at < this.words; at += piece) {
      new Uint32Array(this.buffer, at * 4, Math.min(piece, this.words - at)).fill(0);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** A copy of `a`, in the arena while it has room. */
  copy<T extends Float32Array | Uint32Array>(a: T): T {
    if (this.used + a.length > this.words) return a.slice() as T;
    const out = (a instanceof Float32Array ? new Float32Array(this.buffer, this.used * 4, a.length) : new Uint32Array(this.buffer, this.used * 4, a.length)) as T;
    out.set(a);
    this.used += a.length;
    return out;
  }
}

/** 4-byte words a snapshot of the shard copies now: every array {@link snapshot} takes. */
export function snapshotWords(shard: Shard, sparse: SparseStore): number {
  let n = 0;
  for (const [, s] of shard.store.held()) n += s.values.length * (1 + (s.s1 ? 1 : 0) + (s.s2 ? 1 : 0));
  for (const spec of shard.config.model.sparse ?? []) {
    const table = sparse.table(spec.name);
    for (const slot of table.heldSlots()) {
      const r = table.slot(slot)!;
      n += r.count * (3 + table.dim * (1 + (r.s1 ? 1 : 0) + (r.s2 ? 1 : 0)));
    }
  }
  return n;
}

/**
 * Copies every slot the shard holds — dense slots and sparse rows, each with
 * its optimizer state, update count and applied pushes — in one synchronous
 * pass, into `arena` where given; only the slots in `only`, where given.
 * Under bsp the open step's summed pushes are not applied yet and so not in it.
 */
export function snapshot(shard: Shard, sparse: SparseStore, arena: SnapshotArena = new SnapshotArena(0), only?: ReadonlySet<number>): CheckpointImage {
  const config = shard.config;
  const wanted = (s: number) => !only || only.has(s);
  const copies = (...arrays: (Float32Array | null)[]) => arrays.filter((a): a is Float32Array => a !== null).map((a) => arena.copy(a));
  const dense = shard.store.held().filter(([slot]) => wanted(slot)).map(([slot, s]) => ({ slot, step: s.step, values: arena.copy(s.values), state: copies(s.s1, s.s2), dedup: s.dedup.save() }));
  const rows = [];
  for (const spec of config.model.sparse ?? []) {
    const table = sparse.table(spec.name);
    const d = table.dim;
    for (const s of table.heldSlots()) {
      if (!wanted(s)) continue;
      const r = table.slot(s)!;
      const n = r.count;
      rows.push({
        table: spec.name,
        slot: s,
        count: n,
        ids: arena.copy(r.ids.subarray(0, 2 * n)),
        steps: arena.copy(r.steps.subarray(0, n)),
        values: arena.copy(r.values.subarray(0, n * d)),
        state: copies(r.s1?.subarray(0, n * d) ?? null, r.s2?.subarray(0, n * d) ?? null),
        dedup: r.dedup.save(),
      });
    }
  }
  const header = { format: CHECKPOINT_FORMAT, ...identityOf(config, shard.elements), shard: shard.id, epoch: shard.epoch, closedSteps: shard.gate.closedSteps, createdAt: new Date().toISOString() };
  return { header, dense, sparse: rows };
}

/** @throws InvalidArgumentError for no directory, CheckpointError where `directory` is not one on this host. */
export async function checkDirectory(directory: string, shardId: string): Promise<void> {
  if (!directory) throw new InvalidArgumentError('a checkpoint needs a directory on the shard’s host to write to');
  const where = await stat(directory).catch(() => null);
  if (!where?.isDirectory()) throw new CheckpointError(`${directory} is not a directory on shard ${shardId}’s host; create it first`);
}

/**
 * Writes `image` to its shard's file in `directory` (named `name`, see
 * {@link checkpointPath}), atomically: to a temporary file, synced, then
 * renamed over any earlier checkpoint of that name. The shard's own file
 * (`name` '') keeps `keep - 1` before it ({@link ownCheckpointFiles}).
 *
 * @throws InvalidArgumentError for no directory; CheckpointError where the
 *   directory does not exist or the file cannot be written (nothing is left
 *   half-written).
 */
export async function writeCheckpoint(image: CheckpointImage, directory: string, name = '', keep = 1): Promise<{ path: string; bytes: number }> {
  await checkDirectory(directory, image.header.shard);
  const bad = badCheckpointName(name);
  if (bad) throw new InvalidArgumentError(bad);
  const path = checkpointPath(directory, image.header.shard, name);
  const temporary = `${path}.${process.pid}.${++writes}.partial`;
  let bytes = 0;
  try {
    const file = await open(temporary, 'w');
    try {
      for (const piece of encodeCheckpoint(image)) {
        await file.write(piece);
        bytes += piece.byteLength;
      }
      await file.sync();
    } finally {
      await file.close();
    }
    // The shard's own file keeps the ones before it (`keep` in all); a named one is replaced.
    if (name === '' && keep > 1) await shiftOlder(ownCheckpointFiles(directory, image.header.shard, keep));
    await rename(temporary, path);
  } catch (err) {
    await unlink(temporary).catch(() => undefined);
    throw new CheckpointError(`cannot write the checkpoint ${path}: ${(err as Error).message}`);
  }
  return { path, bytes };
}

/** How long a checkpoint (or a model export) at a bsp step waits for that step. */
export const CHECKPOINT_STEP_WAIT_MS = 60_000;

/**
 * Takes a snapshot of a shard, at a bsp step where asked: `prepare` makes
 * ready what the copy needs while the shard serves on (the memory, see
 * {@link SnapshotArena}) and returns the copy itself, which is then run
 * synchronously — between two requests, the one pause in serving. Under bsp,
 * `atStep` > 0 takes it when exactly that many steps are applied: no later
 * step closes until it is taken (the gate holds them), and it waits up to
 * {@link CHECKPOINT_STEP_WAIT_MS} for that step. `signal` aborting gives up
 * the wait (and the hold) and rejects with its reason.
 *
 * @throws StepAheadError when the shard has applied more than `atStep` steps;
 *   ClockTimeoutError when it does not get there in time; InvalidArgumentError
 *   for a step asked for outside bsp.
 */
export async function snapshotAtStep<T>(gate: ClockGate, atStep: number, prepare: () => Promise<() => T>, signal?: AbortSignal): Promise<{ image: T; pauseMs: number }> {
  const aligned = atStep > 0 && gate.model.kind === 'bsp';
  if (aligned && gate.closedSteps > atStep) throw new StepAheadError(`step ${atStep} is past: this shard has applied ${gate.closedSteps} steps`);
  const release = aligned ? gate.hold(atStep) : () => undefined;
  try {
    const copy = await prepare();
    signal?.throwIfAborted();
    let pauseMs = 0;
    const take = () => {
      const paused = performance.now();
      const image = copy();
      pauseMs = performance.now() - paused;
      return image;
    };
    let image: T;
    if (atStep > 0) {
      // Once given up, a step reached later takes no copy.
      const applied = gate.whenApplied(atStep, () => (signal?.aborted ? (undefined as T) : take()), CHECKPOINT_STEP_WAIT_MS);
      image = await (signal ? Promise.race([applied, abortion(signal)]) : applied);
    } else image = take();
    return { image, pauseMs };
  } finally {
    release();
  }
}

/** A promise rejected with `signal`'s reason once it aborts. */
function abortion(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * A whole checkpoint of one shard: the memory for the copy made ready while
 * the shard serves, the snapshot (the one pause), the file written. Under
 * bsp, `atStep` > 0 takes the snapshot when exactly that many steps are
 * applied ({@link snapshotAtStep}). `name`: which file in `directory`
 * ({@link checkpointPath}); '' for the shard's own. `closing`: the shard's
 * last, after its last request (marked so in the header).
 *
 * @throws StepAheadError when the shard has applied more than `atStep` steps;
 *   ClockTimeoutError when it does not get there in time; CheckpointError and
 *   InvalidArgumentError as {@link writeCheckpoint}.
 */
export async function takeCheckpoint(shard: Shard, sparse: SparseStore, directory: string, atStep = 0, name = '', keep = 1, closing = false): Promise<CheckpointInfo> {
  const started = performance.now();
  await checkDirectory(directory, shard.id);
  const bad = badCheckpointName(name);
  if (bad) throw new InvalidArgumentError(bad);
  const { image, pauseMs: snapshotMs } = await snapshotAtStep(shard.gate, atStep, async () => {
    const arena = new SnapshotArena(snapshotWords(shard, sparse));
    await arena.prepare();
    // The slots it serves, not those it holds as a backup (their primary's checkpoint has them; a backup is copied again when it comes back).
    const own = new Set(Array.from({ length: shard.config.slots }, (_, s) => s).filter((s) => !shard.backs(s)));
    return () => snapshot(shard, sparse, arena, own);
  });
  if (closing) image.header.closing = true;
  const { path, bytes } = await writeCheckpoint(image, directory, name, keep);
  const rows = image.sparse.reduce((n, r) => n + r.count, 0);
  return { shardId: shard.id, path, epoch: image.header.epoch, slots: image.dense.length, rows, bytes, closedSteps: image.header.closedSteps, snapshotMs, totalMs: performance.now() - started };
}

/** Reads and checks a checkpoint file. @throws CheckpointError for a missing, unreadable or damaged file. */
export async function readCheckpoint(path: string): Promise<CheckpointImage> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new CheckpointError(`cannot read the checkpoint ${path}: ${(err as Error).message}`);
  }
  return decodeCheckpoint(bytes, path);
}

/**
 * Loads `image` into a shard that serves nothing yet: every slot and row it
 * holds, with its optimizer state, update count and applied pushes. Slots the
 * map gives the shard later and the file lacks start from their initial
 * values, as always.
 *
 * @throws CheckpointError when the checkpoint is of another model, key space,
 *   optimizer or table layout (the cluster's name and the model's seed may
 *   differ: a run can resume in a new cluster).
 */
export function restore(image: CheckpointImage, shard: Shard, sparse: SparseStore, source: string): { slots: number; rows: number; epoch: number } {
  const want = identityOf(shard.config, shard.elements);
  const have = image.header;
  const differs: string[] = [];
  // The header may come over the network (a move's snapshot): quoted short, its tables' entries of any type.
  const quote = (v: unknown) => String(JSON.stringify(v)).slice(0, 80);
  for (const key of ['model', 'slots', 'elements', 'optimizer'] as const) if (have[key] !== want[key]) differs.push(`${key} ${quote(have[key])} (this cluster: ${JSON.stringify(want[key])})`);
  for (const [name, t] of Object.entries(have.tables ?? {}) as [string, Partial<CheckpointIdentity['tables'][string]> | null][]) {
    const here = want.tables[name];
    if (!here || here.dim !== t?.dim || here.optimizer !== t?.optimizer) differs.push(`table ${name.slice(0, 80)} of dim ${String(t?.dim).slice(0, 80)} with ${String(t?.optimizer).slice(0, 80)} (this cluster: ${here ? `dim ${here.dim} with ${here.optimizer}` : 'no such table'})`);
  }
  if (differs.length > 0) throw new CheckpointError(`${source} is a checkpoint of another model or layout: ${differs.slice(0, 4).join('; ')}${differs.length > 4 ? `; and ${differs.length - 4} more` : ''}`);

  // Runs of consecutive slots share one allocation, as a shard's own slots do.
  const dense = [...image.dense].sort((a, b) => a.slot - b.slot);
  for (let i = 0; i < dense.length; ) {
    let j = i + 1;
    while (j < dense.length && dense[j]!.slot === dense[j - 1]!.slot + 1) j++;
    const slots = shard.store.ensureRange(dense[i]!.slot, dense[j - 1]!.slot + 1);
    for (let k = i; k < j; k++) {
      const from = dense[k]!;
      const to = slots[k - i]!;
      if (from.values.length !== to.values.length) throw new CheckpointError(`${source}: slot ${from.slot} holds ${from.values.length} values, this cluster's ${to.values.length}`);
      to.values.set(from.values);
      if (to.s1) to.s1.set(from.state[0]!);
      if (to.s2) to.s2.set(from.state[1]!);
      to.step = from.step;
      to.dedup.load(from.dedup);
    }
    i = j;
  }
  let rows = 0;
  for (const r of image.sparse) {
    sparse.table(r.table).loadRows(r.slot, r.ids, r.steps, r.values, r.state).dedup.load(r.dedup);
    rows += r.count;
  }
  return { slots: dense.length, rows, epoch: image.header.epoch };
}

/**
 * Restores into `shard` the newest of its own checkpoints in `directory` that
 * reads whole ({@link ownCheckpointFiles}): a damaged or unreadable one is
 * reported through `warn` and the one before it tried; one that reads whole
 * but does not fit this cluster is refused (CheckpointError from restore).
 * Returns the file restored, or null when there is none at all (a first start).
 *
 * @throws CheckpointError when checkpoints are there but none can be restored
 *   (the shard must not start afresh over them), naming each and why.
 */
export async function resumeFrom(directory: string, shard: Shard, sparse: SparseStore, keep: number, warn: (message: string) => void): Promise<{ path: string; slots: number; rows: number; epoch: number; closing: boolean; createdAt: string; fellBack: boolean } | null> {
  const failures: string[] = [];
  for (const path of ownCheckpointFiles(directory, shard.id, keep)) {
    if (!(await stat(path).catch(() => null))) continue;
    let image: CheckpointImage;
    try {
      image = await readCheckpoint(path);
    } catch (err) {
      failures.push(`${path} cannot be restored (${(err as Error).message})`);
      continue;
    }
    // A file that reads whole but does not fit (another model or layout) is not a reason to fall back:
    // restore() may have loaded part of it, and the shard must not start on that. It refuses to start.
    const done = restore(image, shard, sparse, path);
    if (failures.length > 0) warn(`shard ${shard.id}: resuming from ${path}, an older checkpoint: ${failures.join('; ')}`);
    return { path, ...done, closing: image.header.closing === true, createdAt: image.header.createdAt, fellBack: failures.length > 0 };
  }
  if (failures.length > 0) throw new CheckpointError(`shard ${shard.id} has checkpoints in ${directory} but none it can restore: ${failures.join('; ')}; restore one by hand (--restore FILE) or move them away to start afresh`);
  return null;
}
