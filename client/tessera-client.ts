import { type ClusterConfig } from '../cluster/cluster-config.js';
import { isClocked, parseConsistency } from '../cluster/consistency.js';
import { InvalidArgumentError, NotFoundError, NotReadyError, TesseraError } from '../cluster/errors.js';
import { firstNonFinite } from '../cluster/finite.js';
import { type Compression, ErrorFeedback, parseCompression } from '../cluster/wire/gradient-codec.js';
import { createLogger } from '../cluster/log.js';
import { layout } from '../cluster/model-spec.js';
import { type RoutedRange, type ShardBatch, allSlots, route } from '../cluster/routing.js';
import { type ShardMap, checkMapFor } from '../cluster/shard-map.js';
import { type SlotRange, checkRanges, rangesLength, slotStart } from '../cluster/slots.js';
import { NodePool } from './node-pool.js';
import { type ClientOptions, type ClientOptionsInput, clientWithDefaults } from './options.js';
import { withRecovery } from './recovery.js';
import { type PushAck, type StepClock, type TransportProvider } from './transport/dense-transport.js';

const log = createLogger('client');

/** What one push did across the shards it reached. */
export interface PushStats {
  seq: number;
  appliedSlots: number;
  duplicateSlots: number;
  /** Bytes of gradient the push put on the wire (encoded, under a codec), summed over its shards and any retries. */
  wireBytes: number;
}

/** Bytes of dense gradient pushed so far: as float32 (`raw`) and as sent (`wire`, after the codec). */
export interface PushTraffic {
  raw: number;
  wire: number;
}

export { type StepClock } from './transport/dense-transport.js';

/**
 * The typed client: caches the shard map, routes each request to the shards
 * that own its slots, runs the per-shard calls in parallel over one pooled
 * channel per shard, streams values in chunks, follows redirects within a
 * budget and turns statuses into typed errors.
 */
export class TesseraClient {
  readonly options: ClientOptions;
  readonly elements: number;
  private map: ShardMap;
  private seq: number;
  /** Every connection to the shards, by address: dense transports, the sparse client's stubs. */
  readonly nodes: TransportProvider;
  private readonly stopWatch: () => void;
  private readonly refreshTimer: NodeJS.Timeout;
  /** How pushes are encoded (options.compression, else the cluster's). */
  readonly compression: Compression;
  /** Lossy codecs: what earlier pushes did not send, per element, added to the next gradient (error feedback). */
  private feedback: ErrorFeedback | null = null;
  private readonly pushed: PushTraffic = { raw: 0, wire: 0 };

  private constructor(
    options: ClientOptions,
    readonly config: ClusterConfig,
    map: ShardMap,
  ) {
    this.options = options;
    this.nodes = options.transports ?? new NodePool(options);
    this.map = map;
    this.seq = options.firstSeq;
    this.elements = layout(config.model).elements;
    this.compression = parseCompression(options.compression ?? config.compression ?? 'none');
    this.stopWatch = options.store.watchMap((m) => this.adopt(m));
    // Announcements can be missed (a store reconnecting): re-read on a timer too.
    this.refreshTimer = setInterval(() => void this.refreshMap().catch(() => undefined), options.mapRefreshMs);
    this.refreshTimer.unref();
  }

  /** Reads the cluster's configuration and map; fails clearly when either is missing. */
  static async connect(input: ClientOptionsInput): Promise<TesseraClient> {
    const options = clientWithDefaults(input);
    const config = await options.store.getConfig();
    if (!config) throw new NotFoundError('no cluster is configured; create one first (tessera init, or tessera local)');
    const map = await options.store.getMap();
    if (!map) throw new NotReadyError('the cluster has no shard map yet: no shard has been given slots; start shards and retry');
    return new TesseraClient(options, config, map);
  }

  get epoch(): number {
    return this.map.epoch;
  }

  get shardMap(): ShardMap {
    return this.map;
  }

  /** Roll-backs of shards (a crash, resumed from an older checkpoint) announced by maps this client adopted since it connected: pushes they had acknowledged are lost. */
  get rollBacks(): readonly { shard: string; to: string; epoch: number }[] {
    return this.rollBacksSeen;
  }

  private readonly rollBacksSeen: { shard: string; to: string; epoch: number }[] = [];

  private adopt(map: ShardMap): void {
    try {
      checkMapFor(this.config.slots, map);
    } catch (err) {
      log.warn(`${this.options.workerId}: ignoring a shard map that does not fit this cluster (${(err as Error).message})`);
      return;
    }
    if (map.epoch <= this.map.epoch) return;
    log.debug(`${this.options.workerId}: map epoch ${this.map.epoch} → ${map.epoch}`);
    for (const n of map.rollBacks ?? []) {
      if (n.epoch <= this.map.epoch) continue;
      this.rollBacksSeen.push(n);
      log.warn(`${this.options.workerId}: shard ${n.shard} crashed and resumed from its checkpoint of ${n.to}: the pushes it had acknowledged since then are lost (map epoch ${n.epoch}; tessera status shows it)`);
    }
    this.map = map;
    this.nodes.prune(new Set(Object.values(map.addresses)));
  }

  /** Re-reads the map from the store (also done after every redirect). */
  async refreshMap(): Promise<void> {
    const map = await this.options.store.getMap();
    if (map) this.adopt(map);
  }

  /** Whether the cluster's consistency model (ssp, bsp) wants training workers to send clocks. */
  get clocked(): boolean {
    return isClocked(parseConsistency(this.config.consistency));
  }

  /**
   * The whole model's values. A training worker under ssp/bsp passes the
   * step it is about to compute (`at`): the shards answer once that step may
   * see the weights. Without `at` a pull never waits.
   */
  pull(out?: Float32Array, at?: StepClock): Promise<Float32Array> {
    return this.pullRanges(allSlots(this.map), out, at);
  }

  /**
   * The clock a worker joining now starts from: the highest any shard reports
   * (under bsp its open step, under ssp its slowest live worker's clock).
   */
  async clusterClock(): Promise<number> {
    const addresses = [...new Set(Object.values(this.map.addresses))];
    const clocks = await Promise.all(addresses.map(async (address) => (await this.nodes.describe(address)).clock));
    return Math.max(0, ...clocks);
  }

  /**
   * The values of one dense tensor of the model, by name. Tensors do not align
   * with slots: the slots that cover it are pulled and the tensor cut out.
   */
  async pullTensor(name: string): Promise<Float32Array> {
    const tensor = layout(this.config.model).tensors.find((t) => t.name === name);
    if (!tensor) {
      throw new InvalidArgumentError(`unknown tensor "${name}" in model ${this.config.model.name}; its tensors are ${this.config.model.tensors.map((t) => t.name).join(', ')}`);
    }
    const { slots } = this.config;
    // The slots whose elements intersect [offset, offset + size).
    let begin = Math.floor((tensor.offset * slots) / this.elements);
    while (begin > 0 && slotStart(begin, this.elements, slots) > tensor.offset) begin--;
    while (slotStart(begin + 1, this.elements, slots) <= tensor.offset) begin++;
    let end = begin + 1;
    while (end < slots && slotStart(end, this.elements, slots) < tensor.offset + tensor.size) end++;
    const values = await this.pullRanges([{ begin, end }]);
    const skip = tensor.offset - slotStart(begin, this.elements, slots);
    return values.slice(skip, skip + tensor.size);
  }

  /** The next push sequence number of this client (dense and sparse pushes share the counter). */
  nextSeq(): number {
    return ++this.seq;
  }

  /** The values of `ranges` (ordered, disjoint slot runs), concatenated into `out`. */
  async pullRanges(ranges: readonly SlotRange[], out?: Float32Array, at?: StepClock): Promise<Float32Array> {
    this.checkRanges(ranges);
    const length = rangesLength(ranges, this.elements, this.config.slots);
    const target = out ?? new Float32Array(length);
    if (target.length !== length) throw new InvalidArgumentError(`pull target holds ${target.length} values but the slots hold ${length}`);
    await this.fanOut(pieces(ranges, this.elements, this.config.slots), (b) => this.pullBatch(b, target, at));
    return target;
  }

  /**
   * Pushes a gradient for the whole model; resolves once every owning shard
   * applied it. Retrying with the same `seq` after a failure never applies a
   * slot twice.
   */
  push(gradient: Float32Array, seq?: number, clock?: number): Promise<PushStats> {
    return this.pushRanges(allSlots(this.map), gradient, seq, clock);
  }

  /** Pushes a gradient for `ranges`; `clock` is the step it belongs to under ssp/bsp (see {@link pull}). */
  async pushRanges(ranges: readonly SlotRange[], gradient: Float32Array, seq: number = this.nextSeq(), clock?: number): Promise<PushStats> {
    this.checkRanges(ranges);
    const length = rangesLength(ranges, this.elements, this.config.slots);
    if (gradient.length !== length) throw new InvalidArgumentError(`gradient has ${gradient.length} values but the slots hold ${length}`);
    // Checked here too, before anything is sent: a shard would refuse its part, but the others would apply theirs.
    const bad = firstNonFinite(gradient);
    if (bad >= 0) throw new InvalidArgumentError(`gradient has a non-finite value (${gradient[bad]}) at element ${bad}; nothing was sent`);
    const stats: PushStats = { seq, appliedSlots: 0, duplicateSlots: 0, wireBytes: 0 };
    // Under a codec each slot is encoded once, here: a retry (even regrouped by a new map) resends the same bytes.
    const encoded = this.compression.kind === 'none' ? null : this.encodeSlots(ranges, gradient);
    await this.fanOut(pieces(ranges, this.elements, this.config.slots), async (b) => {
      const ack = await this.pushBatch(b, gradient, seq, clock, encoded?.slots ?? null);
      encoded?.commit(b);
      stats.appliedSlots += ack.appliedSlots;
      stats.duplicateSlots += ack.duplicateSlots;
      stats.wireBytes += ack.wireBytes;
    });
    this.pushed.raw += length * 4;
    this.pushed.wire += stats.wireBytes;
    return stats;
  }

  /** Bytes of dense gradient this client has pushed, raw and on the wire. */
  traffic(): PushTraffic {
    return { ...this.pushed };
  }

  /**
   * Each slot of `ranges` encoded under the codec, with error feedback: the
   * slot's gradient plus what earlier pushes did not send is encoded, and
   * what that encoding drops becomes the slot's new residual once its shard
   * acknowledged it (`commit`, per batch), so the slots of a shard the push
   * did not reach keep their residual as it was.
   * @throws InvalidArgumentError from the codec (e.g. a value past fp16's range); nothing is sent.
   */
  private encodeSlots(ranges: readonly SlotRange[], gradient: Float32Array): { slots: Map<number, Uint8Array>; commit: (batch: ShardBatch) => void } {
    const feedback = (this.feedback ??= new ErrorFeedback(this.elements));
    const ids: number[] = [];
    const slots: { start: number; length: number }[] = [];
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const start = slotStart(s, this.elements, this.config.slots);
        ids.push(s);
        slots.push({ start, length: slotStart(s + 1, this.elements, this.config.slots) - start });
      }
    }
    const { bytes, offsets, commit } = feedback.encode(this.compression, slots, gradient);
    const position = new Map(ids.map((s, j) => [s, j]));
    return {
      slots: new Map(ids.map((s, j) => [s, bytes.subarray(offsets[j], offsets[j + 1])])),
      // The slots of one acknowledged batch: applied (or already applied, as duplicates) by their shard.
      commit: (batch) => commit(batch.ranges.flatMap((r) => Array.from({ length: r.end - r.begin }, (_, i) => position.get(r.begin + i)!))),
    };
  }



  private checkRanges(ranges: readonly SlotRange[]): void {
    const bad = checkRanges(ranges, this.config.slots);
    if (bad) throw new InvalidArgumentError(bad);
  }

  /** Routes `work` by the cached map and runs `op` per shard in parallel, recovering as client/recovery.ts says. */
  private fanOut(work: RoutedRange[], op: (b: ShardBatch) => Promise<void>): Promise<void> {
    return withRecovery(work, { route: (w) => this.routePieces(w), remaining: (b) => b.ranges, address: (b) => b.address, refreshMap: () => this.refreshMap(), budget: this.options, stopped: () => this.isClosed }, async (b) => {
      try {
        await op(b);
      } catch (err) {
        if (err instanceof TesseraError) this.nodes.failed(b.address, err);
        throw err;
      }
    });
  }

  /** Splits pieces of the caller's vector by the current owners; offsets stay the caller's. */
  private routePieces(work: readonly RoutedRange[]): ShardBatch[] {
    const byShard = new Map<string, ShardBatch>();
    for (const piece of work) {
      for (const b of route([piece], this.map, this.elements)) {
        let batch = byShard.get(b.shardId);
        if (!batch) byShard.set(b.shardId, (batch = { ...b, ranges: [], length: 0 }));
        for (const r of b.ranges) batch.ranges.push({ ...r, offset: r.offset + piece.offset });
        batch.length += b.length;
      }
    }
    return [...byShard.values()];
  }

  private async pullBatch(batch: ShardBatch, out: Float32Array, at?: StepClock): Promise<void> {
    const transport = await this.nodes.dense(batch.address, this.map.bulk?.[batch.shardId]);
    await transport.pull(batch, out, { epoch: this.map.epoch, workerId: this.options.workerId, model: this.config.model.name, ...(at ? { at } : {}) });
  }

  private async pushBatch(batch: ShardBatch, gradient: Float32Array, seq: number, clock: number | undefined, encoded: ReadonlyMap<number, Uint8Array> | null): Promise<PushAck> {
    const transport = await this.nodes.dense(batch.address, this.map.bulk?.[batch.shardId]);
    return transport.push(batch, { epoch: this.map.epoch, workerId: this.options.workerId, model: this.config.model.name, seq, ...(clock !== undefined ? { clock } : {}), gradient, compression: this.compression, encoded });
  }

  /** Whether {@link close} was called: a request retrying then gives up at its next try. */
  get closed(): boolean {
    return this.isClosed;
  }

  private isClosed = false;

  async close(): Promise<void> {
    this.isClosed = true;
    clearInterval(this.refreshTimer);
    this.stopWatch();
    this.nodes.close();
  }
}

/** The slot ranges as pieces of the caller's vector. */
function pieces(ranges: readonly SlotRange[], elements: number, slots: number): RoutedRange[] {
  let offset = 0;
  return ranges.map((r) => {
    const length = rangesLength([r], elements, slots);
    const p = { begin: r.begin, end: r.end, offset, length };
    offset += length;
    return p;
  });
}
