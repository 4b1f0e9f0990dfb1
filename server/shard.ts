import { firstNonFinite as firstNonFiniteScalar } from '../cluster/finite.js';
import { type ClusterConfig, WORKER_START_TIMEOUT_MS } from '../cluster/cluster-config.js';
import { parseConsistency } from '../cluster/consistency.js';
import { InvalidArgumentError, MovedError, NotReadyError, StaleEpochError } from '../cluster/errors.js';
import { type ShardMap, ownedRanges } from '../cluster/shard-map.js';
import { type SlotRange, checkRanges, rangesLength } from '../cluster/slots.js';
import { copyBytes, floatBytes } from '../cluster/wire/dense-values.js';
import { ClockGate, toMean } from './clock-gate.js';
import { type MigrationLog } from './migration-log.js';
import { applyGradient } from './optimizers.js';
import { addressOf, simdKernels } from './simd-kernels.js';
import { SlotStore } from './slot-store.js';

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

export interface PushResult {
  epoch: number;
  appliedSlots: number;
  duplicateSlots: number;
}

/**
 * A shard's logic without its transport: ownership checks against the cached
 * map, pulls as byte chunks, pushes validated and applied with the optimizer.
 * Single-threaded: a push is applied in one synchronous pass, so pulls see it
 * whole or not at all.
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
  /** Slots in the last moment of a hand-off: requests for them are answered "not ready", to be retried. */
  readonly frozen = new Set<number>();

  constructor(
    readonly id: string,
    readonly config: ClusterConfig,
  ) {
    this.store = new SlotStore(config);
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
    for (const r of ownedRanges(map, this.id)) this.store.ensureRange(r.begin, r.end);
    return true;
  }

  owned(): SlotRange[] {
    return this.map ? ownedRanges(this.map, this.id) : [];
  }

  /** Throws the typed error a request for `ranges` at `epoch` deserves, or returns. */
  check(epoch: number, ranges: readonly SlotRange[], model?: string): void {
    if (model && model !== this.config.model.name) {
      throw new InvalidArgumentError(`unknown model "${model}": this cluster trains "${this.config.model.name}"`);
    }
    const bad = checkRanges(ranges, this.config.slots);
    if (bad) throw new InvalidArgumentError(bad);
    const map = this.map;
    if (!map) throw new NotReadyError(`shard ${this.id} has no shard map yet; retry shortly`);
    if (epoch < map.epoch) throw new StaleEpochError(epoch, map.epoch);
    if (epoch > map.epoch) throw new NotReadyError(`shard ${this.id} is at map epoch ${map.epoch}, behind the caller's ${epoch}; retry shortly`);
    const moving = this.frozen.size > 0;
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const owner = map.owners[s]!;
        if (owner !== this.id) throw new MovedError(s, map.epoch, owner, map.addresses[owner] ?? '');
        if (moving && this.frozen.has(s)) throw new NotReadyError(`slot ${s} is being handed to another shard; retry shortly`);
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
   * Validates and applies a whole push: `gradient` holds the elements of
   * `header.ranges`, concatenated. Every check runs before any value changes,
   * so a rejected push leaves the shard exactly as it was.
   */
  push(header: PushHeader, gradient: Float32Array): PushResult {
    if (!header.workerId) throw new InvalidArgumentError('push has no worker_id; every push needs (worker_id, seq) to be applied once');
    if (!Number.isSafeInteger(header.seq) || header.seq < 0) throw new InvalidArgumentError(`push seq must be a non-negative integer, got ${header.seq}`);
    this.check(header.epoch, header.ranges, header.model);
    const clocked = header.clock !== undefined && this.gate.clocked;
    if (clocked && !(Number.isSafeInteger(header.clock) && header.clock! >= 0)) throw new InvalidArgumentError(`push clock must be a non-negative integer, got ${header.clock}`);
    if (clocked) this.gate.checkPush(header.workerId, header.clock!);
    const summed = clocked && this.gate.model.kind === 'bsp';
    const expected = this.lengthOf(header.ranges);
    if (gradient.length !== expected) {
      throw new InvalidArgumentError(`push carries ${gradient.length} values but slots ${describe(header.ranges)} hold ${expected}`);
    }
    const bad = firstNonFinite(gradient);
    if (bad >= 0) throw new InvalidArgumentError(`push gradient has a non-finite value (${gradient[bad]}) at element ${bad}; nothing was applied`);
    let applied = 0;
    let duplicates = 0;
    let off = 0;
    for (const r of header.ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const slot = this.store.ensure(s);
        if (slot.dedup.has(header.workerId, header.seq)) duplicates++;
        else {
          if (summed) this.sum(s, gradient, off, slot.values.length);
          else applyGradient(slot, gradient, off, this.config.optimizer);
          slot.dedup.add(header.workerId, header.seq);
          if (this.migration?.has(s)) this.migration.dense(s, header.workerId, header.seq, gradient.subarray(off, off + slot.values.length));
          applied++;
        }
        off += slot.values.length;
      }
    }
    if (applied > 0) this.pushesApplied++;
    // May close a bsp step, which applies what was summed (this push included).
    if (clocked) this.gate.afterPush(header.workerId, header.clock!, summed && applied > 0);
    return { epoch: this.epoch, appliedSlots: applied, duplicateSlots: duplicates };
  }

  /** bsp: adds one push's part for slot `s` to the open step's sum. */
  private sum(s: number, gradient: Float32Array, off: number, length: number): void {
    let sum = this.pending.get(s);
    if (!sum) this.pending.set(s, (sum = new Float32Array(length)));
    for (let i = 0; i < length; i++) sum[i] = sum[i]! + gradient[off + i]!;
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
 * Index of the first NaN or ±Inf, or -1. The common case — all finite — is
 * one SIMD pass over the exponent bits when `g` lies in the float heap (as a
 * pushed gradient does); otherwise one multiply-add per element (x·0 is 0 for
 * finite x, NaN otherwise), in four independent sums so the adds overlap
 * instead of waiting on each other. Only a gradient with a bad value is
 * scanned again, element by element, to name it.
 */
export function firstNonFinite(g: Float32Array): number {
  const k = simdKernels();
  const body = g.length - (g.length % 8);
  if (k && k.heap.holds(g) && k.fn.nonfinite(addressOf(g), body) === 0) return firstNonFiniteScalar(g, body, g.length);
  return firstNonFiniteScalar(g, 0, g.length);
}

