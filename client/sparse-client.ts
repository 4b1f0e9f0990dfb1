import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { deadlineIn } from '../cluster/grpc-client.js';
import { createLogger } from '../cluster/log.js';
import { type SparseTableSpec } from '../cluster/model-spec.js';
import { type ShardMap } from '../cluster/shard-map.js';
import { findTable, tableHash } from '../cluster/sparse-keys.js';
import { type SparseBatch, routeIds, rowCount, scatterRows, splitBatch, sumRows } from '../cluster/sparse-routing.js';
import { SPARSE_MESSAGE_BYTES, SPARSE_MESSAGE_OVERHEAD, type SparseIds, bytesToF32, f32Bytes, idBytes, toIdHalves } from '../cluster/wire/sparse-values.js';
import { MAX_MESSAGE_BYTES } from '../cluster/wire/dense-values.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { withRecovery } from './recovery.js';
import type { SparsePullResponse__Output } from '../cluster/wire/proto-types/tessera/v1/SparsePullResponse.js';
import type { SparsePushAck__Output } from '../cluster/wire/proto-types/tessera/v1/SparsePushAck.js';
import { type StepClock, type TesseraClient } from './tessera-client.js';

const log = createLogger('sparse-client');

export interface SparseClientOptions {
  /**
   * Largest message sent, or reply asked for, in bytes: larger pulls and
   * pushes are split into several calls per shard. Default 8 MiB
   * ({@link SPARSE_MESSAGE_BYTES}); at most 15 MiB.
   */
  maxMessageBytes: number;
}

export const SPARSE_CLIENT_DEFAULTS: SparseClientOptions = { maxMessageBytes: SPARSE_MESSAGE_BYTES };

export interface SparsePullOptions {
  /** Under ssp/bsp: the step the rows are pulled for; the pull waits at the shards as a dense pull at that step does. */
  at?: StepClock;
  /**
   * Sets the request's read_only. No shard of this release creates a row on a
   * pull (rows not held read as their initial values either way); a shard of
   * an older release does unless this is set, so evaluation and tools still set it.
   */
  readOnly?: boolean;
}

/** What one sparse push did across the shards it reached. */
export interface SparsePushStats {
  seq: number;
  /** Slots that applied the push now, and slots that had already applied this seq. */
  appliedSlots: number;
  duplicateSlots: number;
  /** Distinct rows updated now, and rows created by this push (rows are created by the first push that touches them). */
  rowsApplied: number;
  rowsCreated: number;
  /** Calls made (more than one per shard when split, more again after redirects). */
  messages: number;
}

/** Running totals of a client's traffic, for tests and benchmarks. */
export interface SparseTraffic {
  calls: number;
  /** Payload bytes (ids, gradients) sent and (values) received. */
  bytesSent: number;
  bytesReceived: number;
}

// Replies and the stub as typed from proto/ (scripts/gen-proto-types.mjs).
type Ack = SparsePushAck__Output;
type PullReply = SparsePullResponse__Output;

/**
 * Push sequence numbers, one counter per TesseraClient (so per worker id),
 * shared by every SparseClient over it; it starts where the TesseraClient's
 * own does (its `firstSeq`). Sparse and dense pushes keep separate dedup state
 * on the shards, so the two counters never collide.
 */
const seqs = new WeakMap<TesseraClient, { last: number }>();

/**
 * Pulls and pushes rows of a model's sparse tables. Built on a TesseraClient,
 * whose cached map, epoch, config, workerId and options it uses: ids are routed
 * by slot (cluster/sparse-routing.ts), each shard's rows go in parallel calls of
 * at most `maxMessageBytes`, and moved / stale-epoch / unavailable answers are
 * handled as client/error-policy.ts decides, within the client's
 * maxRedirections and maxRetries. Only distinct ids travel: a repeated id is
 * pulled once and its gradients are summed before they are sent.
 */
export class SparseClient {
  readonly options: SparseClientOptions;
  readonly traffic: SparseTraffic = { calls: 0, bytesSent: 0, bytesReceived: 0 };
  private readonly seq: { last: number };

  constructor(
    readonly client: TesseraClient,
    options: Partial<SparseClientOptions> = {},
  ) {
    this.options = { ...SPARSE_CLIENT_DEFAULTS, ...options };
    const max = this.options.maxMessageBytes;
    if (!(Number.isInteger(max) && max > SPARSE_MESSAGE_OVERHEAD && max <= MAX_MESSAGE_BYTES - (1 << 20))) {
      throw new InvalidArgumentError(`maxMessageBytes must be an integer in (${SPARSE_MESSAGE_OVERHEAD}, ${MAX_MESSAGE_BYTES - (1 << 20)}], got ${max}`);
    }
    let seq = seqs.get(client);
    if (!seq) seqs.set(client, (seq = { last: client.options.firstSeq }));
    this.seq = seq;
  }

  /** The spec of table `name`; throws InvalidArgumentError for a table the model does not declare. */
  table(name: string): SparseTableSpec {
    const spec = findTable(this.client.config.model, name);
    if (!spec) {
      const known = (this.client.config.model.sparse ?? []).map((t) => t.name);
      throw new InvalidArgumentError(`unknown sparse table "${name}": model ${this.client.config.model.name} has ${known.length ? known.join(', ') : 'no sparse tables'}`);
    }
    return spec;
  }

  /** The next push sequence number of this worker's sparse pushes. */
  nextSeq(): number {
    return ++this.seq.last;
  }

  /**
   * The rows of `ids` (ids.length × dim floats, row i for ids[i]); a row the
   * shard does not hold reads as the values the table's initializer gives it,
   * and is not created (only a push creates rows).
   */
  async pull(table: string, ids: SparseIds, options: SparsePullOptions = {}): Promise<Float32Array> {
    const { at, readOnly = false } = options;
    const spec = this.table(table);
    const halves = toIdHalves(ids);
    const dim = spec.dim;
    const out = new Float32Array((halves.length / 2) * dim);
    if (halves.length === 0) return out;
    const rowBytes = Math.max(8, 4 * dim);
    await this.run(table, halves, undefined, rowBytes, false, async (part, map) => {
      const msg = { epoch: map.epoch, model: this.client.config.model.name, table, workerId: this.client.options.workerId, ids: idBytes(part.ids), readOnly, ...(at ? { clocked: true, clock: at.clock, join: Boolean(at.join) } : {}) };
      const reply = await this.call<PullReply>(part.address, 'pull', msg);
      const rows = rowCount(part);
      if (reply.dim !== dim || reply.values.byteLength !== rows * dim * 4) {
        throw new InvalidArgumentError(`shard at ${part.address} sent ${reply.values.byteLength} bytes of dim ${reply.dim} for ${rows} rows of table ${table} (dim ${dim})`);
      }
      this.traffic.bytesSent += part.ids.byteLength;
      this.traffic.bytesReceived += reply.values.byteLength;
      scatterRows(part, bytesToF32(reply.values, 'values'), dim, out);
    });
    return out;
  }

  /**
   * Applies `gradients` (ids.length × dim floats) to the rows of `ids`; a
   * repeated id's gradients are summed. Resolves once every owning shard has
   * applied its part (under bsp: summed it into step `clock`). Retrying with
   * the same `seq` after a failure never applies a slot's rows twice.
   *
   * `clock`: under ssp/bsp, the step the gradients belong to. Send a step's
   * rows, and wait for them, before its dense push: the dense push ends the
   * step on the shards (docs/consistency.md).
   */
  async push(table: string, ids: SparseIds, gradients: Float32Array, seq: number = this.nextSeq(), clock?: number): Promise<SparsePushStats> {
    const spec = this.table(table);
    const halves = toIdHalves(ids);
    const n = halves.length / 2;
    const dim = spec.dim;
    if (gradients.length !== n * dim) throw new InvalidArgumentError(`sparse push has ${gradients.length} gradient values for ${n} ids of table ${table} (dim ${dim}); it needs ids × dim = ${n * dim}`);
    if (!Number.isSafeInteger(seq) || seq < 0) throw new InvalidArgumentError(`push seq must be a non-negative integer, got ${seq}`);
    // Checked here, not only by the shards: a NaN refused by one shard after others applied theirs would leave a push half-applied.
    for (let i = 0; i < gradients.length; i++) {
      if (!Number.isFinite(gradients[i]!)) throw new InvalidArgumentError(`sparse gradient has a non-finite value (${gradients[i]}) for id #${Math.floor(i / dim)}, column ${i % dim}; nothing was sent`);
    }
    const stats: SparsePushStats = { seq, appliedSlots: 0, duplicateSlots: 0, rowsApplied: 0, rowsCreated: 0, messages: 0 };
    if (n === 0) return stats;
    await this.run(table, halves, undefined, 8 + 4 * dim, true, async (part, map) => {
      const sums = sumRows(part, gradients, dim);
      const msg = { epoch: map.epoch, model: this.client.config.model.name, table, workerId: this.client.options.workerId, seq, ids: idBytes(part.ids), gradients: f32Bytes(sums), ...(clock !== undefined ? { clocked: true, clock } : {}) };
      stats.messages++;
      const ack = await this.call<Ack>(part.address, 'push', msg);
      this.traffic.bytesSent += part.ids.byteLength + sums.byteLength;
      stats.appliedSlots += ack.appliedSlots;
      stats.duplicateSlots += ack.duplicateSlots;
      stats.rowsApplied += ack.rowsApplied;
      stats.rowsCreated += ack.rowsCreated;
    });
    return stats;
  }

  /** Nothing to close: the stubs belong to the TesseraClient's pool, closed with it. Kept so callers need not know. */
  close(): void {}

  /**
   * Routes the ids at `subset` (default all) by the cached map, splits each
   * shard's rows into messages, runs `op` per message in parallel, and
   * re-routes just the rows of a message that failed, as the error policy says.
   */
  private async run(
    table: string,
    halves: Uint32Array,
    subset: Uint32Array | undefined,
    rowBytes: number,
    wholeSlots: boolean,
    op: (part: SparseBatch, map: ShardMap) => Promise<void>,
  ): Promise<void> {
    const budget = this.options.maxMessageBytes - SPARSE_MESSAGE_OVERHEAD;
    type Part = { part: SparseBatch; map: ShardMap };
    await withRecovery<Uint32Array | undefined, Part>(
      subset,
      {
        route: (positions) => {
          const map = this.client.shardMap;
          return routeIds(halves, tableHash(table), map, positions)
            .flatMap((b) => splitBatch(b, rowBytes, budget, wholeSlots))
            .map((part) => ({ part, map }));
        },
        remaining: (p) => p.part.positions,
        address: (p) => p.part.address,
        refreshMap: () => this.client.refreshMap(),
        budget: this.client.options,
        stopped: () => this.client.closed,
        onRecover: (p, err, how) => log.debug(`${table}: ${err.message}; ${how === 'redirect' ? 're-routing' : 'retrying'} ${rowCount(p.part)} rows`),
      },
      (p) => op(p.part, p.map),
    );
  }

  private call<T>(address: string, method: 'pull' | 'push', request: object): Promise<T> {
    const stub = this.client.nodes.sparse(address) as unknown as Record<'pull' | 'push', (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => grpc.ClientUnaryCall>;
    this.traffic.calls++;
    return new Promise<T>((resolve, reject) => {
      stub[method](request, { deadline: deadlineIn(this.client.options.deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, address)) : resolve(res as T)));
    });
  }
}
