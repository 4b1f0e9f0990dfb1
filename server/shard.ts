import { firstNonFinite as firstNonFiniteScalar } from '../cluster/finite.js';
import { type ClusterConfig, WORKER_START_TIMEOUT_MS } from '../cluster/cluster-config.js';
import { parseConsistency } from '../cluster/consistency.js';
import { InvalidArgumentError, MovedError, NotReadyError, SlotLostError, StaleEpochError } from '../cluster/errors.js';
import { type ShardMap, backedRanges, backupsOf, ownedRanges } from '../cluster/shard-map.js';
import { type SlotRange, checkRanges, rangesLength, slotElements, slotStart } from '../cluster/slots.js';
import { copyBytes, floatBytes } from '../cluster/wire/dense-values.js';
import { ClockGate, toMean } from './clock-gate.js';
import { badSeq, badWorkerId } from '../cluster/worker-id.js';
import { type MigrationLog, type UpdateRecorder } from './migration-log.js';
import { applyGradient, applyGradientToSlots } from './optimizers.js';
import { addressOf, simdKernels } from './simd-kernels.js';
import { SlotLoad } from './slot-load.js';
import { type Slot, SlotStore } from './slot-store.js';

/** A push as the data plane hands it over, its gradient already assembled. */
export interface PushHeader {
  epoch: number;
  ranges: SlotRange[];
  workerId: string;
  seq: number;
  model?: string;
  /** Under ssp/bsp: the step the gradient belongs to (see ClockGate). */
  clock?: number;
}

/** A push being applied slot by slot: Shard.beginPush, applySlot, endPush. */
export interface OpenPush {
  readonly header: PushHeader;
  /** Under ssp/bsp, with a clock: the push ticks the worker's clock when it ends. */
  readonly clocked: boolean;
  /** bsp: slots are summed into the open step rather than applied. */
  readonly summed: boolean;
  /** The push's slots in order, and where each one's values end in its gradient. */
  readonly slots: readonly number[];
  readonly ends: readonly number[];
  /** Index into `slots` of the next slot to apply. */
  next: number;
  /** Slots applied so far, and slots found applied before (a retry). */
  applied: number;
  duplicates: number;
}

export interface PushResult {
  epoch: number;
  appliedSlots: number;
  duplicateSlots: number;
}

/**
 * A shard's logic without its transport: ownership checks against the cached
 * map, pulls as byte chunks, pushes validated and applied with the optimizer.
 * Single-threaded; a push is applied slot by slot as its values arrive, so a
 * pull served between two of its slots sees some of them applied (each slot
 * whole or not at all).
 */
export class Shard {
  readonly store: SlotStore;
  /** Worker clocks and waiting pulls under ssp/bsp; inert under async. */
  readonly gate: ClockGate;
  private map: ShardMap | null = null;
  /** bsp: the open step's pushes, summed per slot. */
  private readonly pending = new Map<number, Float32Array>();
  pushesApplied = 0;
  /** Slots being handed to another shard: what is applied to them is recorded here (migration.ts). */
  migration: MigrationLog | null = null;
  /** Slots with backups: what is applied to them is sent to each backup before the push is acknowledged (replication.ts). */
  replica: UpdateRecorder | null = null;
  /**
   * Resolves once every update recorded so far by {@link replica} is held by
   * every backup of its slot (null: nothing to wait for). The edges wait for
   * it before they acknowledge a push.
   */
  replicated: (() => Promise<void> | null) | null = null;
  /** Slots in the last moment of a hand-off: requests for them are answered "not ready", to be retried. */
  readonly frozen = new Set<number>();
  /**
   * Slots the map gives this shard that it holds no values for: it started
   * without a checkpoint that has them, so they would serve initial values as
   * if trained. Refused (SlotLostError) until restored or reset on purpose.
   */
  readonly lost = new Set<number>();
  /**
   * Whether slots the map gives this shard may start from their initial
   * values: only in the first map of a cluster the shard saw created (there
   * was none when it started). Afterwards a slot comes with values — from a
   * checkpoint, or a move — or is lost.
   */
  acceptsInitialValues = true;
  /** The traffic each slot carries (bytes/s, decayed): what `tessera rebalance --by load` reads from the shard's lease. */
  readonly load: SlotLoad;

  constructor(
    readonly id: string,
    readonly config: ClusterConfig,
  ) {
    this.store = new SlotStore(config);
    this.load = new SlotLoad(config.slots);
    this.gate = new ClockGate(parseConsistency(config.consistency), config.initialWorkers ?? 1, WORKER_START_TIMEOUT_MS);
    this.gate.onStepClosed((_step, workers) => this.applyPending(workers));
  }

  get epoch(): number {
    return this.map?.epoch ?? 0;
  }

  get elements(): number {
    return this.store.elements;
  }

  /** Adopts a newer map (older ones are ignored) and creates the slots it now owns. Returns whether it changed. */
  setMap(map: ShardMap): boolean {
    if (this.map && map.epoch <= this.map.epoch) return false;
    if (map.slots !== this.config.slots) throw new InvalidArgumentError(`shard map has ${map.slots} slots but the cluster has ${this.config.slots}`);
    this.map = map;
    for (const r of ownedRanges(map, this.id)) {
      if (this.acceptsInitialValues) this.store.ensureRange(r.begin, r.end);
      else for (let s = r.begin; s < r.end; s++) if (!this.store.has(s)) this.lost.add(s);
    }
    // A new cluster's first map may name backups: they start from the same initial values as the owner.
    if (this.acceptsInitialValues) for (const r of backedRanges(map, this.id)) this.store.ensureRange(r.begin, r.end);
    for (const s of this.lost) if (map.owners[s] !== this.id) this.lost.delete(s);
    this.acceptsInitialValues = false;
    return true;
  }

  /**
   * Gives lost slots (all of them, or those of `only`) their initial values,
   * on an operator's word that their history is gone; returns the slots reset.
   */
  resetLost(only?: readonly number[]): number[] {
    const slots = [...this.lost].filter((s) => !only || only.includes(s)).sort((a, b) => a - b);
    for (const s of slots) {
      this.store.ensure(s);
      this.lost.delete(s);
    }
    return slots;
  }

  /** Whether the current map lists this shard as a backup of slot `s`. */
  backs(s: number): boolean {
    return this.map !== null && backupsOf(this.map, s).includes(this.id);
  }

  /** The map this shard serves under, if it has one. */
  get currentMap(): ShardMap | null {
    return this.map;
  }

  /** The shard the current map gives slot `s` to, if any. */
  ownerOf(s: number): string | undefined {
    return this.map?.owners[s];
  }

  owned(): SlotRange[] {
    return this.map ? ownedRanges(this.map, this.id) : [];
  }

  /** Throws the typed error a request for `ranges` at `epoch` deserves, or returns. */
  check(epoch: number, ranges: readonly SlotRange[], model?: string): void {
    if (model && model !== this.config.model.name) {
      throw new InvalidArgumentError(`unknown model "${String(model).slice(0, 80)}": this cluster trains "${this.config.model.name}"`);
    }
    const bad = checkRanges(ranges, this.config.slots);
    if (bad) throw new InvalidArgumentError(bad);
    const map = this.map;
    if (!map) throw new NotReadyError(`shard ${this.id} has no shard map yet; retry shortly`);
    if (epoch < map.epoch) throw new StaleEpochError(epoch, map.epoch);
    if (epoch > map.epoch) throw new NotReadyError(`shard ${this.id} is at map epoch ${map.epoch}, behind the caller's ${epoch}; retry shortly`);
    const moving = this.frozen.size > 0;
    const lost = this.lost.size > 0;
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const owner = map.owners[s]!;
        if (owner !== this.id) throw new MovedError(s, map.epoch, owner, map.addresses[owner] ?? '');
        if (moving && this.frozen.has(s)) throw new NotReadyError(`slot ${s} is being handed to another shard; retry shortly`);
        if (lost && this.lost.has(s)) throw this.lostError(s);
      }
    }
  }

  /** @throws SlotLostError naming the lowest lost slot, if any (for what reads every owned slot: exports). */
  refuseLost(): void {
    if (this.lost.size > 0) throw this.lostError(Math.min(...this.lost));
  }

  private lostError(s: number): SlotLostError {
    return new SlotLostError(
      `slot ${s} is shard ${this.id}'s by the map (epoch ${this.epoch}) but the shard holds no values for it: it started without a checkpoint that has it, and serving it would start its training over from initial values. ` +
        `Restart the shard from a checkpoint that holds it (--resume, or --restore FILE), or accept the loss: \`tessera reset-slots --shard ${this.id}\` re-initialises its lost slots on purpose`,
    );
  }

  /** Adds a dense request's bytes to each slot of `ranges` ({@link load}). */
  countTraffic(ranges: readonly SlotRange[]): void {
    const elements = this.elements;
    const slots = this.config.slots;
    this.load.begin();
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const { start, end } = slotElements(s, elements, slots);
        this.load.add(s, (end - start) * 4);
      }
    }
  }

  /** Elements a request for `ranges` covers. */
  lengthOf(ranges: readonly SlotRange[]): number {
    return rangesLength(ranges, this.elements, this.config.slots);
  }

  /**
   * The values of `ranges`, concatenated, as chunks of at most `maxBytes`.
   * A chunk whose slots lie side by side in memory (slots created together,
   * see SlotStore) is a view of that memory; only a chunk spanning separately
   * allocated slots is copied together, once.
   */
  *pullChunks(ranges: readonly SlotRange[], maxBytes: number): Generator<{ offset: number; bytes: Buffer }> {
    const maxElems = Math.max(1, Math.floor(maxBytes / 4));
    let pieces: Buffer[] = [];
    let pending = 0;
    let offset = 0;
    const flush = () => {
      const bytes = pieces.length === 1 ? pieces[0]! : join(pieces, pending * 4);
      const chunk = { offset, bytes };
      offset += pending;
      pieces = [];
      pending = 0;
      return chunk;
    };
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const values = this.store.ensure(s).values;
        let i = 0;
        while (i < values.length) {
          const take = Math.min(values.length - i, maxElems - pending);
          const last = pieces[pieces.length - 1];
          const at = values.byteOffset + i * 4;
          if (last && last.buffer === values.buffer && last.byteOffset + last.byteLength === at) {
            // Adjacent in memory: widen the previous view instead of copying later.
            pieces[pieces.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.byteLength + take * 4);
          } else {
            pieces.push(floatBytes(values, i, i + take));
          }
          pending += take;
          i += take;
          if (pending === maxElems) yield flush();
        }
      }
    }
    if (pending > 0 || offset === 0) yield flush();
  }

  /**
   * Opens a push: checks what the whole push must satisfy (worker id, seq,
   * ownership of every slot at the caller's epoch, the clock under ssp/bsp)
   * before any of its values has arrived. Its slots are then applied in order
   * with {@link applySlots} as their values come in, and {@link endPush}
   * closes it. docs/wire-protocol.md, "Push".
   */
  beginPush(header: PushHeader): OpenPush {
    if (!header.workerId) throw new InvalidArgumentError('push has no worker_id; every push needs (worker_id, seq) to be applied once');
    const bad = badWorkerId(header.workerId) ?? badSeq(header.seq);
    if (bad) throw new InvalidArgumentError(bad);
    this.check(header.epoch, header.ranges, header.model);
    this.countTraffic(header.ranges);
    const clocked = header.clock !== undefined && this.gate.clocked;
    if (clocked && !(Number.isSafeInteger(header.clock) && header.clock! >= 0)) throw new InvalidArgumentError(`push clock must be a non-negative integer, got ${header.clock}`);
    if (clocked) this.gate.checkPush(header.workerId, header.clock!);
    const slots: number[] = [];
    const ends: number[] = [];
    let end = 0;
    for (const r of header.ranges) {
      for (let s = r.begin; s < r.end; s++) {
        slots.push(s);
        ends.push((end += slotStart(s + 1, this.elements, this.config.slots) - slotStart(s, this.elements, this.config.slots)));
      }
    }
    return { header, clocked, summed: clocked && this.gate.model.kind === 'bsp', slots, ends, next: 0, applied: 0, duplicates: 0 };
  }

  /**
   * Applies the push's next slots, up to (not including) its `until`-th, their
   * values in `gradient` at the push's offsets (OpenPush.ends). Each slot is
   * checked again (the map or a hand-off may have moved on since the push
   * began), its values must all be finite, and a slot that already applied
   * (worker, seq) counts as a duplicate. All or nothing per slot: a refusal
   * leaves that slot and every later one as they were, while the slots before
   * it stay applied (a retry with the same seq applies the rest, once).
   * Slots side by side in memory are applied by one optimizer call.
   * `gradient` may hold only part of the push: its element 0 is element
   * `base` of the push, and it holds at least the slots being applied.
   * @throws the typed error of a moved, frozen or stale slot, or InvalidArgumentError for a non-finite value.
   */
  applySlots(push: OpenPush, until: number, gradient: Float32Array, base = 0): void {
    const { header, slots, ends } = push;
    const first = push.next;
    if (until <= first) return;
    const from = first === 0 ? 0 : ends[first - 1]!;
    // One pass over the values of every slot in the run; a bad value stops the run at its slot.
    const found = firstNonFinite(gradient, from - base, ends[until - 1]! - base);
    const bad = found < 0 ? -1 : found + base;
    let stop = until;
    if (bad >= 0) for (stop = first; ends[stop]! <= bad; ) stop++;
    const run: Slot[] = [];
    let runFrom = 0;
    const flush = () => {
      if (run.length > 0) applyGradientToSlots(run, gradient, runFrom, this.config.optimizer);
      run.length = 0;
    };
    try {
      for (let k = first; k < stop; k++) {
        const s = slots[k]!;
        this.checkSlot(header.epoch, s);
        const slot = this.store.ensure(s);
        const off = (k === 0 ? 0 : ends[k - 1]!) - base;
        if (slot.dedup.has(header.workerId, header.seq)) {
          push.duplicates++;
          flush();
        } else {
          if (push.summed) this.sum(s, gradient.subarray(off, ends[k]! - base));
          else {
            if (run.length === 0) runFrom = off;
            run.push(slot);
          }
          slot.dedup.add(header.workerId, header.seq);
          if (this.migration?.has(s)) this.migration.dense(s, header.workerId, header.seq, gradient.subarray(off, ends[k]! - base));
          if (this.replica?.has(s)) this.replica.dense(s, header.workerId, header.seq, gradient.subarray(off, ends[k]! - base));
          if (push.applied++ === 0) this.pushesApplied++;
        }
        push.next = k + 1;
      }
    } finally {
      // Slots marked applied above are applied before anything is thrown.
      flush();
    }
    if (stop < until) {
      const s = slots[stop]!;
      throw new InvalidArgumentError(
        `push gradient has a non-finite value (${gradient[bad - base]}) at element ${bad} (slot ${s}); ${push.applied + push.duplicates} slots before it were applied, none from slot ${s} on (a retry with the same seq applies the rest once)`,
      );
    }
  }

  /** Closes a push whose every slot was applied (or found applied before); under ssp/bsp its clock ticks. */
  endPush(push: OpenPush): PushResult {
    const { header } = push;
    if (push.next !== push.slots.length) throw new InvalidArgumentError(`push closed after ${push.next} of its ${push.slots.length} slots`);
    // May close a bsp step, which applies what was summed (this push included).
    if (push.clocked) this.gate.afterPush(header.workerId, header.clock!, push.summed && push.applied > 0);
    return { epoch: this.epoch, appliedSlots: push.applied, duplicateSlots: push.duplicates };
  }

  /**
   * A whole push at once: `gradient` holds the elements of `header.ranges`,
   * concatenated. Its slots are applied in order, each all or nothing, as
   * {@link applySlots} says.
   */
  push(header: PushHeader, gradient: Float32Array): PushResult {
    const open = this.beginPush(header);
    const expected = this.lengthOf(header.ranges);
    if (gradient.length !== expected) {
      throw new InvalidArgumentError(`push carries ${gradient.length} values but slots ${describe(header.ranges)} hold ${expected}`);
    }
    this.applySlots(open, open.slots.length, gradient);
    return this.endPush(open);
  }

  /** {@link check} for one slot of a push already admitted: same epoch, still owned, not frozen. */
  private checkSlot(epoch: number, s: number): void {
    const map = this.map!;
    if (epoch < map.epoch) throw new StaleEpochError(epoch, map.epoch);
    const owner = map.owners[s]!;
    if (owner !== this.id) throw new MovedError(s, map.epoch, owner, map.addresses[owner] ?? '');
    if (this.frozen.size > 0 && this.frozen.has(s)) throw new NotReadyError(`slot ${s} is being handed to another shard; retry shortly`);
    if (this.lost.size > 0 && this.lost.has(s)) throw this.lostError(s);
  }

  /** bsp: adds one push's part for slot `s` to the open step's sum. */
  private sum(s: number, part: Float32Array): void {
    let sum = this.pending.get(s);
    if (!sum) this.pending.set(s, (sum = new Float32Array(part.length)));
    for (let i = 0; i < part.length; i++) sum[i] = sum[i]! + part[i]!;
  }

  /** bsp: applies the open step, each slot's summed pushes divided by the step's `workers` (the mean gradient). */
  private applyPending(workers: number): void {
    for (const [s, sum] of this.pending) {
      toMean(sum, workers);
      applyGradient(this.store.ensure(s), sum, 0, this.config.optimizer);
    }
    this.pending.clear();
  }
}

/**
 * Runs `then` once every backup holds what `shard` applied so far (at once
 * when it has no backups, or nothing is outstanding), or `refuse` with the
 * error that stopped it: how an edge acknowledges a push.
 */
export function whenReplicated(shard: Pick<Shard, 'replicated'>, then: () => void, refuse: (err: unknown) => void): void {
  const durable = shard.replicated?.() ?? null;
  if (durable) durable.then(then, refuse);
  else then();
}

/** Pieces copied into one buffer (out of shared memory at word speed, see copyBytes). */
function join(pieces: readonly Buffer[], bytes: number): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let at = 0;
  for (const p of pieces) {
    copyBytes(p, out.subarray(at, at + p.byteLength));
    at += p.byteLength;
  }
  return out;
}

function describe(ranges: readonly SlotRange[]): string {
  return ranges.map((r) => `[${r.begin}, ${r.end})`).join(' ');
}

/**
 * Index of the first NaN or ±Inf in `g[from, to)`, or -1. The common case —
 * all finite — is one SIMD pass over the exponent bits when `g` lies in the
 * float heap (as a pushed gradient does); otherwise one multiply-add per
 * element (x·0 is 0 for finite x, NaN otherwise), in four independent sums so
 * the adds overlap instead of waiting on each other. Only a range with a bad
 * value is scanned again, element by element, to name it.
 */
export function firstNonFinite(g: Float32Array, from = 0, to = g.length): number {
  const k = simdKernels();
  const body = from + ((to - from) & ~7);
  if (k && k.heap.holds(g) && k.fn.nonfinite(addressOf(g, from), body - from) === 0) return firstNonFiniteScalar(g, body, to);
  return firstNonFiniteScalar(g, from, to);
}
