import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LATENCY_BUCKETS, createRegistry } from '../cluster/metrics/registry.js';
import { type SlotRange } from '../cluster/slots.js';
import { slotRangeLabel, slotRangeWidth, splitOverSlotRanges } from './slot-range-load.js';

/** How a dense request reached the shard: `tessera.v1.Shard` over gRPC, or the bulk port (bulk-service.ts). */
export type DenseTransport = 'grpc' | 'bulk';
export type DataOp = 'push' | 'pull';

/** What the shard's gauges read when scraped (nothing is kept up to date between scrapes). */
export interface ShardGaugeSources {
  /** Bytes of values and optimizer state held, dense and sparse. */
  heldBytes(): number;
  /** Rows held per sparse table. */
  sparseRows(): { table: string; rows: number }[];
  /** Bytes its requests hold of its budget of bytes in flight (inflight-budget.ts). */
  inflightBytes(): number;
  /** The budget itself (`--max-inflight-mib`). */
  inflightLimitBytes(): number;
  /** Slots the map gives it, and of those the lost ones (refused until restored or reset). */
  ownedSlots(): number;
  lostSlots(): number;
  /** Epoch of the map it serves under. */
  mapEpoch(): number;
  /** Slots it holds as a backup (docs/replication.md). */
  backedSlots(): number;
  /** Slots it owns with fewer backups than the cluster's `replicas`. */
  underReplicatedSlots(): number;
  /** Per backup of its slots: updates sent and not yet acknowledged (replication.ts). */
  backupLag(): { backup: string; pending: number }[];
}

/** Buckets (seconds) of apply and checkpoint times: a small slot's update to a large model's file. */
const WORK_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30];

/** Status names by code, as the `code` label shows them (grpc.status: OK, INVALID_ARGUMENT, …). */
const CODE_NAMES: readonly string[] = (() => {
  const names: string[] = [];
  for (const [name, code] of Object.entries(status)) if (typeof code === 'number') names[code] = name;
  return names;
})();

export function codeName(code: number): string {
  return CODE_NAMES[code] ?? 'UNKNOWN';
}

/**
 * One request being served, from its arrival to its answer: counted in
 * flight until {@link end}, which counts it by status and, answered OK, its
 * bytes and the slot ranges it touched. Later calls of `end` do nothing, so
 * an edge may end it from every path that settles the request.
 */
export interface RequestMeter {
  /**
   * `code`: the gRPC status answered (0 OK). `bytes`: the values' bytes it
   * moved (a push's payload as received, encoded or not; a pull's as sent).
   * `ranges`: its slots (dense). `applySeconds`: a push's time applying.
   */
  end(code: number, bytes?: number, ranges?: readonly SlotRange[], applySeconds?: number): void;
}

const NO_METER: RequestMeter = { end: () => undefined };

/**
 * A shard's Prometheus metrics (docs/operations.md, "Metrics"), in a registry
 * of its own labelled `shard=<id>`. The edges call {@link request} once per
 * request and end it once: a few counter increments and one histogram
 * observation per request, none per value. Gauges are read from
 * {@link ShardGaugeSources} when scraped.
 */
/** The counters and histogram of one kind of request (dense or sparse push or pull). */
interface RequestFamily {
  requests: Counter<string>;
  bytes: Counter<string>;
  durations: Histogram<string>;
}

export class ShardMetrics {
  readonly registry: Registry;
  private readonly dense: Record<DataOp, RequestFamily>;
  private readonly sparse: Record<DataOp, RequestFamily>;
  private readonly inflight: Gauge<'op'>;
  private readonly apply: Histogram;
  private readonly clockWait: Histogram;
  private readonly moves: Counter<'result'>;
  private readonly movedSlots: Counter;
  private readonly checkpoints: Counter<'result'>;
  private readonly checkpointSeconds: Histogram;
  private readonly lastCheckpoint: Gauge;
  /**
   * Requests and bytes by operation and slot range, counted in plain arrays
   * and handed to their counters when scraped: a full-model request touches
   * every range, and a prom-client increment (which hashes its labels) for
   * each would cost tens of microseconds a request; an array add costs none.
   */
  private readonly slotLoad: Record<DataOp, { requests: Float64Array; bytes: Float64Array }>;
  private readonly width: number;

  /**
   * @param slots, elements the cluster's slot count and dense values (how requests are split over slot ranges).
   * @param processMetrics also the process's own metrics (CPU, memory, event loop): for the registry a process serves.
   */
  constructor(
    readonly shardId: string,
    private readonly slots: number,
    private readonly elements: number,
    sources: ShardGaugeSources,
    processMetrics = false,
  ) {
    const registers = [(this.registry = createRegistry({ shard: shardId }, processMetrics))];
    this.width = slotRangeWidth(slots);
    /** What each family's help says: the request, in words, and what its bytes are. */
    const words: Record<'dense' | 'sparse', Record<DataOp, { one: string; bytes: string }>> = {
      dense: { push: { one: 'dense push', bytes: 'its gradient as received (encoded under a codec)' }, pull: { one: 'dense pull', bytes: 'its values as sent' } },
      sparse: { push: { one: 'sparse push', bytes: 'its ids and gradients as received' }, pull: { one: 'sparse pull', bytes: 'its ids as received and its rows as sent' } },
    };
    const family = (kind: 'dense' | 'sparse', op: DataOp): RequestFamily => {
      const prefix = kind === 'dense' ? `tessera_shard_${op}` : `tessera_shard_sparse_${op}`;
      const { one, bytes } = words[kind][op];
      const labels = kind === 'dense' ? ['transport'] : [];
      const gate = op === 'pull' ? ' (for a clocked pull, its wait at the clock gate included)' : '';
      return {
        requests: new Counter({ name: `${prefix}_requests_total`, help: `Each ${one} answered, by ${kind === 'dense' ? 'transport and ' : ''}gRPC status code.`, labelNames: [...labels, 'code'], registers }),
        bytes: new Counter({ name: `${prefix}_bytes_total`, help: `Bytes of each ${one} answered OK: ${bytes}.`, labelNames: labels, registers }),
        durations: new Histogram({ name: `${prefix}_duration_seconds`, help: `Time from a ${one}’s arrival to its answer, whatever the outcome${gate}.`, labelNames: labels, buckets: [...LATENCY_BUCKETS], registers }),
      };
    };
    this.dense = { push: family('dense', 'push'), pull: family('dense', 'pull') };
    this.sparse = { push: family('sparse', 'push'), pull: family('sparse', 'pull') };
    // The series of every transport's answered-OK requests from the start (at zero), so rates over them are defined before the first.
    for (const f of [this.dense.push, this.dense.pull]) {
      for (const transport of ['grpc', 'bulk']) {
        f.requests.inc({ transport, code: 'OK' }, 0);
        f.bytes.inc({ transport }, 0);
        f.durations.zero({ transport });
      }
    }
    this.inflight = new Gauge({ name: 'tessera_shard_inflight_requests', help: 'Data-plane requests (dense and sparse) being served now.', labelNames: ['op'], registers });
    this.apply = new Histogram({ name: 'tessera_shard_apply_seconds', help: 'Time a dense push spent applying its gradient with the optimizer (checks included), per push answered OK.', buckets: WORK_BUCKETS, registers });
    this.clockWait = new Histogram({ name: 'tessera_shard_clock_wait_seconds', help: 'Time a clocked pull (ssp, bsp) waited at the clock gate for slower workers.', buckets: [...LATENCY_BUCKETS], registers });
    this.moves = new Counter({ name: 'tessera_shard_moves_total', help: 'Slot moves this shard led as the source (tessera rebalance), by result.', labelNames: ['result'], registers });
    this.movedSlots = new Counter({ name: 'tessera_shard_moved_slots_total', help: 'Slots this shard handed to another shard.', registers });
    this.checkpoints = new Counter({ name: 'tessera_shard_checkpoints_total', help: 'Checkpoints written (timed, asked for, at shutdown), by result.', labelNames: ['result'], registers });
    this.checkpointSeconds = new Histogram({ name: 'tessera_shard_checkpoint_seconds', help: 'Time to write a checkpoint that succeeded, snapshot and file.', buckets: WORK_BUCKETS, registers });
    this.lastCheckpoint = new Gauge({ name: 'tessera_shard_last_checkpoint_timestamp_seconds', help: 'When the last checkpoint that succeeded was written (Unix time); absent before the first.', registers });
    const ranges = Math.ceil(slots / this.width);
    const load = (this.slotLoad = {
      push: { requests: new Float64Array(ranges), bytes: new Float64Array(ranges) },
      pull: { requests: new Float64Array(ranges), bytes: new Float64Array(ranges) },
    });
    const label = (i: number) => slotRangeLabel(i, this.width, slots);
    // Set from the arrays at each scrape: a range's series appears once a request has touched it.
    const fromLoad = (which: 'requests' | 'bytes') =>
      function (this: Counter<'op' | 'slot_range'>) {
        this.reset();
        for (const op of ['push', 'pull'] as const) {
          const counts = load[op][which];
          for (let i = 0; i < counts.length; i++) if (load[op].requests[i]! > 0) this.inc({ op, slot_range: label(i) }, counts[i]!);
        }
      };
    new Counter({ name: 'tessera_shard_slot_requests_total', help: `Dense requests answered OK that touched a slot of the range (a request counts once in every range it touches); ranges of ${this.width} slot(s).`, labelNames: ['op', 'slot_range'], registers, collect: fromLoad('requests') });
    new Counter({ name: 'tessera_shard_slot_bytes_total', help: 'Bytes of dense requests answered OK, split over slot ranges by the values of each range; per operation they sum to tessera_shard_push_bytes_total or tessera_shard_pull_bytes_total.', labelNames: ['op', 'slot_range'], registers, collect: fromLoad('bytes') });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('tessera_shard_held_bytes', 'Bytes of values and optimizer state the shard holds, dense slots and sparse rows.', () => sources.heldBytes());
    gauge('tessera_shard_inflight_bytes', 'Bytes the shard’s requests hold now of its budget (push windows, encoded pushes, gRPC pull chunks being sent).', () => sources.inflightBytes());
    gauge('tessera_shard_inflight_limit_bytes', 'The shard’s budget of bytes in flight (--max-inflight-mib): past it requests are refused RESOURCE_EXHAUSTED.', () => sources.inflightLimitBytes());
    gauge('tessera_shard_owned_slots', 'Slots the shard map gives this shard.', () => sources.ownedSlots());
    gauge('tessera_shard_lost_slots', 'Slots the map gives this shard that it holds no values for: refused until restored from a checkpoint or reset (tessera reset-slots).', () => sources.lostSlots());
    gauge('tessera_shard_map_epoch', 'Epoch of the shard map the shard serves under.', () => sources.mapEpoch());
    gauge('tessera_shard_backed_slots', 'Slots the shard holds as a backup of another shard (--replicas).', () => sources.backedSlots());
    gauge('tessera_shard_under_replicated_slots', 'Slots the shard owns that have fewer backups than the cluster\'s --replicas: one copy short until a new backup is caught up.', () => sources.underReplicatedSlots());
    new Gauge({
      name: 'tessera_shard_backup_pending_updates',
      help: 'Updates this shard, as a primary, has sent a backup and the backup has not yet acknowledged (its lag; a push waits for them).',
      labelNames: ['backup'],
      registers,
      collect() {
        this.reset();
        for (const { backup, pending } of sources.backupLag()) this.set({ backup }, pending);
      },
    });
    new Gauge({
      name: 'tessera_shard_sparse_rows',
      help: 'Rows the shard holds, per sparse table.',
      labelNames: ['table'],
      registers,
      collect() {
        for (const { table, rows } of sources.sparseRows()) this.set({ table }, rows);
      },
    });
  }

  /** Starts metering one dense request. */
  request(op: DataOp, transport: DenseTransport): RequestMeter {
    return this.meter(this.dense[op], op, { transport }, true);
  }

  /** Starts metering one sparse request. */
  sparseRequest(op: DataOp): RequestMeter {
    return this.meter(this.sparse[op], op, {}, false);
  }

  private meter(f: RequestFamily, op: DataOp, labels: Record<string, string>, dense: boolean): RequestMeter {
    const started = performance.now();
    this.inflight.inc({ op });
    let open = true;
    return {
      end: (code, bytes = 0, ranges, applySeconds) => {
        if (!open) return;
        open = false;
        this.inflight.dec({ op });
        f.requests.inc({ ...labels, code: codeName(code) });
        f.durations.observe(labels, (performance.now() - started) / 1000);
        if (code !== status.OK) return;
        f.bytes.inc(labels, bytes);
        if (applySeconds !== undefined) this.apply.observe(applySeconds);
        if (dense && ranges) this.countSlotRanges(op, ranges, bytes);
      },
    };
  }

  /** A clocked pull was let through the clock gate after `seconds`. */
  clockWaited(seconds: number): void {
    this.clockWait.observe(seconds);
  }

  /** A move of `slots` slots led by this shard ended. */
  moved(ok: boolean, slots: number): void {
    this.moves.inc({ result: ok ? 'ok' : 'error' });
    if (ok) this.movedSlots.inc(slots);
  }

  /** A checkpoint ended; `seconds` to write it. */
  checkpointed(ok: boolean, seconds: number): void {
    this.checkpoints.inc({ result: ok ? 'ok' : 'error' });
    if (!ok) return;
    this.checkpointSeconds.observe(seconds);
    this.lastCheckpoint.set(Date.now() / 1000);
  }

  private countSlotRanges(op: DataOp, ranges: readonly SlotRange[], bytes: number): void {
    const { requests, bytes: shares } = this.slotLoad[op];
    splitOverSlotRanges(ranges, bytes, this.elements, this.slots, this.width, (index, share) => {
      requests[index]!++;
      shares[index]! += share;
    });
  }
}

/** For an edge without metrics: a meter that counts nothing. */
export function noMeter(): RequestMeter {
  return NO_METER;
}
