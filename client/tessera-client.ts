import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { isClocked, parseConsistency } from '../cluster/consistency.js';
import { InvalidArgumentError, NotFoundError, NotReadyError, ShardUnavailableError, TesseraError, TooManyRedirectionsError } from '../cluster/errors.js';
import { deadlineIn } from '../cluster/grpc-client.js';
import { createLogger } from '../cluster/log.js';
import { layout } from '../cluster/model-spec.js';
import { type RoutedRange, type ShardBatch, allSlots, route } from '../cluster/routing.js';
import { type ShardMap } from '../cluster/shard-map.js';
import { type SlotRange, checkRanges, rangesLength, slotStart } from '../cluster/slots.js';
import { firstNonFinite } from '../cluster/finite.js';
import { bulkCodecField, grpcCodecFields } from '../cluster/codec-fields.js';
import { type Compression, ErrorFeedback, parseCompression } from '../cluster/gradient-codec.js';
import { fromStatus } from '../cluster/status-codec.js';
import { chunkBounds, copyBytes, floatBytes } from '../cluster/wire.js';
import { BulkChannel } from './bulk-channel.js';
import { ConnectionPool } from './connection-pool.js';
import { recoveryFor } from './error-policy.js';
import { type ClientOptions, type ClientOptionsInput, clientWithDefaults } from './options.js';

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

/** Where a training worker's pull or push stands under ssp/bsp (see cluster/consistency.ts). */
export interface StepClock {
  /** The step: the clock of the pull it computes from, and of the push it sends. */
  clock: number;
  /** On a worker's first pull after it (re)started: its clock on the shards becomes `clock`. */
  join?: boolean;
}

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
  private readonly pool = new ConnectionPool();
  /** Per shard address: its bulk channel, or null where it serves none (learnt once, from Describe). */
  private readonly bulk = new Map<string, Promise<BulkChannel | null>>();
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

  private adopt(map: ShardMap): void {
    if (map.epoch <= this.map.epoch) return;
    log.debug(`${this.options.workerId}: map epoch ${this.map.epoch} → ${map.epoch}`);
    this.map = map;
    const live = new Set(Object.values(map.addresses));
    this.pool.prune(live);
    for (const [address, channel] of this.bulk) {
      if (live.has(address)) continue;
      this.bulk.delete(address);
      void channel.then((c) => c?.close(), () => undefined);
    }
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
    const clocks = await Promise.all(addresses.map(async (address) => (await this.describe(address)).clock));
    return Math.max(0, ...clocks);
  }

  /** A shard's Describe. */
  private describe(address: string): Promise<{ clock: number; bulkAddress: string }> {
    return new Promise((resolve, reject) => {
      const client = this.pool.get(address) as grpc.Client & { describe(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { clock: number; bulkAddress: string }) => void): void };
      client.describe({}, { deadline: deadlineIn(this.options.deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, address)) : resolve(res!)));
    });
  }

  /**
   * Runs a bulk request; when the shard is unreachable, forgets its channel,
   * so the retry asks the shard (perhaps restarted, on another bulk port) anew.
   */
  private async onBulk<T>(address: string, channel: BulkChannel, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof ShardUnavailableError && this.bulk.get(address)) {
        this.bulk.delete(address);
        channel.close();
      }
      throw err;
    }
  }

  /** The bulk channel of the shard at `address`, or null to use gRPC (transport grpc, or a shard without one). */
  private bulkChannel(address: string): Promise<BulkChannel | null> {
    if (this.options.transport !== 'bulk') return Promise.resolve(null);
    let channel = this.bulk.get(address);
    if (!channel) {
      channel = this.describe(address).then((d) => (d.bulkAddress ? new BulkChannel(d.bulkAddress, address) : null));
      // A failed lookup is retried on the next request (the shard may be starting).
      channel.catch(() => this.bulk.delete(address));
      this.bulk.set(address, channel);
    }
    return channel;
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
      const ack = await this.pushBatch(b, gradient, seq, clock, encoded?.slots);
      stats.appliedSlots += ack.appliedSlots;
      stats.duplicateSlots += ack.duplicateSlots;
      stats.wireBytes += ack.wireBytes;
    });
    encoded?.commit();
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
   * what that encoding drops becomes the slot's new residual once the push is
   * acknowledged (`commit`), so a failed push leaves the residual as it was.
   * @throws InvalidArgumentError from the codec (e.g. a value past fp16's range); nothing is sent.
   */
  private encodeSlots(ranges: readonly SlotRange[], gradient: Float32Array): { slots: Map<number, Uint8Array>; commit: () => void } {
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
    return { slots: new Map(ids.map((s, j) => [s, bytes.subarray(offsets[j], offsets[j + 1])])), commit };
  }


  private checkRanges(ranges: readonly SlotRange[]): void {
    const bad = checkRanges(ranges, this.config.slots);
    if (bad) throw new InvalidArgumentError(bad);
  }

  /** Routes `work` by the cached map and runs `op` per shard in parallel, recovering per the error policy. */
  private async fanOut(work: RoutedRange[], op: (b: ShardBatch) => Promise<void>, redirections = 0, retries = 0): Promise<void> {
    await Promise.all(
      this.routePieces(work).map(async (batch) => {
        try {
          await op(batch);
        } catch (e) {
          const err = e instanceof TesseraError ? e : fromStatus(e as grpc.ServiceError, batch.address);
          switch (recoveryFor(err)) {
            case 'redirect':
              if (redirections >= this.options.maxRedirections) throw new TooManyRedirectionsError(redirections, err);
              await this.refreshMap();
              return this.fanOut(batch.ranges, op, redirections + 1, retries);
            case 'retry':
              if (retries >= this.options.maxRetries) throw err;
              await sleep(Math.min(2_000, this.options.retryDelayMs * 2 ** retries));
              await this.refreshMap().catch(() => undefined);
              return this.fanOut(batch.ranges, op, redirections, retries + 1);
            case 'fail':
              throw err;
          }
        }
      }),
    );
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
    const bulk = await this.bulkChannel(batch.address);
    if (bulk) {
      const scatter = scatterer(batch.ranges, out);
      let received = 0;
      const req = { op: 'pull' as const, epoch: this.map.epoch, ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })), workerId: this.options.workerId, model: this.config.model.name, ...(at ? { clock: at.clock, join: Boolean(at.join) } : {}) };
      await this.onBulk(batch.address, bulk, () =>
        bulk.request(req, this.options.deadlineMs, undefined, (bytes, offset) => {
          scatter(offset, bytes);
          received += bytes.byteLength;
        }),
      );
      if (received !== batch.length * 4) throw new InvalidArgumentError(`shard at ${batch.address} sent ${received / 4} of ${batch.length} values`);
      return;
    }
    return this.pullBatchGrpc(batch, out, at);
  }

  private pullBatchGrpc(batch: ShardBatch, out: Float32Array, at?: StepClock): Promise<void> {
    const client = this.pool.get(batch.address) as grpc.Client & { pull(req: object, opts: grpc.CallOptions): grpc.ClientReadableStream<{ offset: number; values: Buffer }> };
    const call = client.pull(
      { epoch: this.map.epoch, ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })), workerId: this.options.workerId, maxChunkBytes: this.options.chunkBytes, model: this.config.model.name, ...(at ? { clocked: true, clock: at.clock, join: Boolean(at.join) } : {}) },
      { deadline: deadlineIn(this.options.deadlineMs) },
    );
    const scatter = scatterer(batch.ranges, out);
    let received = 0;
    return new Promise<void>((resolve, reject) => {
      call.on('data', (chunk: { offset: number; values: Buffer }) => {
        scatter(chunk.offset * 4, chunk.values);
        received += chunk.values.byteLength / 4;
      });
      call.on('error', (err: grpc.ServiceError) => reject(fromStatus(err, batch.address)));
      call.on('end', () => {
        if (received !== batch.length) reject(new InvalidArgumentError(`shard at ${batch.address} sent ${received} of ${batch.length} values`));
        else resolve();
      });
    });
  }

  private async pushBatch(batch: ShardBatch, gradient: Float32Array, seq: number, clock?: number, encoded?: Map<number, Uint8Array>): Promise<{ appliedSlots: number; duplicateSlots: number; wireBytes: number }> {
    // Under a codec: the batch's slots' encodings, in the order of its ranges.
    const wire = encoded ? batch.ranges.flatMap((r) => Array.from({ length: r.end - r.begin }, (_, i) => encoded.get(r.begin + i)!)) : null;
    const wireBytes = wire ? wire.reduce((n, b) => n + b.byteLength, 0) : batch.length * 4;
    const bulk = await this.bulkChannel(batch.address);
    if (bulk) {
      const payload = wire ? wire.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)) : batch.ranges.map((r) => floatBytes(gradient, r.offset, r.offset + r.length));
      const req = {
        op: 'push' as const,
        epoch: this.map.epoch,
        ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })),
        workerId: this.options.workerId,
        model: this.config.model.name,
        seq,
        length: batch.length,
        ...bulkCodecField(this.compression),
        ...(wire ? { wireBytes } : {}),
        ...(clock !== undefined ? { clock } : {}),
      };
      const ack = (await this.onBulk(batch.address, bulk, () => bulk.request(req, this.options.deadlineMs, payload))) as { appliedSlots: number; duplicateSlots: number };
      return { appliedSlots: ack.appliedSlots, duplicateSlots: ack.duplicateSlots, wireBytes };
    }
    type Ack = { appliedSlots: number; duplicateSlots: number };
    const client = this.pool.get(batch.address) as grpc.Client & {
      push(opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Ack) => void): grpc.ClientWritableStream<object>;
    };
    let done!: Promise<Ack>;
    let call!: grpc.ClientWritableStream<object>;
    done = new Promise<Ack>((resolve, reject) => {
      call = client.push({ deadline: deadlineIn(this.options.deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, batch.address)) : resolve(res!)));
    });
    const header = {
      epoch: this.map.epoch,
      ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })),
      workerId: this.options.workerId,
      seq,
      ...grpcCodecFields(this.compression),
      ...(wire ? { wireBytes } : {}),
      model: this.config.model.name,
      ...(clock !== undefined ? { clocked: true, clock } : {}),
    };
    let first = true;
    const send = async (offset: number, values: Buffer) => {
      const msg = { header: first ? header : null, offset, values };
      first = false;
      if (!call.write(msg)) await Promise.race([once(call, 'drain'), done]);
    };
    if (wire) {
      // The encoded gradient, cut into chunks by bytes; offsets are byte offsets in it.
      const all = Buffer.concat(wire);
      for (let at = 0; at < all.length || first; at += this.options.chunkBytes) await send(at, all.subarray(at, at + this.options.chunkBytes));
    } else {
      let batchOffset = 0;
      for (const r of batch.ranges) {
        for (const [a, b] of chunkBounds(r.length, this.options.chunkBytes)) await send(batchOffset + a, floatBytes(gradient, r.offset + a, r.offset + b));
        batchOffset += r.length;
      }
    }
    call.end();
    const ack = await done;
    return { ...ack, wireBytes };
  }

  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    this.stopWatch();
    this.pool.close();
    for (const c of this.bulk.values()) void c.then((ch) => ch?.close(), () => undefined);
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

/**
 * Writes pieces of a batch's reply to their places in the caller's vector:
 * `offset` in bytes of the batch's values, any length (a gRPC chunk holds
 * whole floats; a piece of a bulk reply may cut one in two, as TCP does).
 */
function scatterer(ranges: readonly RoutedRange[], out: Float32Array): (offset: number, bytes: Uint8Array) => void {
  const target = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  const starts: number[] = [];
  let acc = 0;
  for (const r of ranges) {
    starts.push(acc);
    acc += r.length * 4;
  }
  return (offset, bytes) => {
    let i = 0;
    while (i + 1 < ranges.length && starts[i + 1]! <= offset) i++;
    let src = 0;
    while (src < bytes.length) {
      const r = ranges[i];
      const within = offset + src - (starts[i] ?? 0);
      const take = r ? Math.min(bytes.length - src, r.length * 4 - within) : 0;
      if (take <= 0) throw new InvalidArgumentError(`reply at byte ${offset} overruns the requested slots`);
      const at = r!.offset * 4 + within;
      copyBytes(bytes.subarray(src, src + take), target.subarray(at, at + take));
      src += take;
      i++;
    }
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
