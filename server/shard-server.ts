import { EventEmitter } from 'node:events';
import { CheckpointError, InvalidArgumentError, NotFoundError, PermissionDeniedError, ResourceExhaustedError, ShardIdTakenError } from '../cluster/errors.js';
import { startGrpcServer, type TesseraGrpcServer } from '../cluster/grpc-server.js';
import { ADMIN_RULES, DATA_RULES } from '../cluster/tls/authorization.js';
import { type ListenerLimits } from '../cluster/listener-limits.js';
import { type TransportSecurity, checkPlaintextListener, processSecurity } from '../cluster/tls/transport-security.js';
import { createLogger } from '../cluster/log.js';
import { DEFAULT_LEASE, Lease, type LeaseOptions } from '../cluster/membership/lease.js';
import { IDLE_WORKER_STATE, type MembershipStore } from '../cluster/membership/store.js';
import { reconcileMap } from '../cluster/membership/reconcile.js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { SHARD_ADMIN_SERVICE_NAME, SHARD_SERVICE_NAME, SPARSE_SHARD_SERVICE_NAME, shardAdminService, shardService, sparseShardService } from '../cluster/proto.js';
import { MAX_ROLL_BACK_NOTICES, type ShardMap, backedRanges, backupsOf, checkMapFor } from '../cluster/shard-map.js';
import { formatRanges, rangesOf } from '../cluster/slots.js';
import { isWildcardHost, splitHostPort } from '../cluster/address.js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { MetricsServer } from '../cluster/metrics/metrics-server.js';
import { shardAdminImplementation } from './admin-service.js';
import { DEFAULT_CHECKPOINT_KEEP, badCheckpointName, checkDirectory, readCheckpoint, restore, resumeFrom, takeCheckpoint } from './checkpoint.js';
import { type MoveReport, applyEntries, applyLog, dropSlots, importSlots, transferSlots } from './migration.js';
import { ReplicaKeeper } from './replica-keeper.js';
import { type LogEntry } from './migration-log.js';
import { DEFAULT_BACKUP_TIMEOUT_MS, Replicator } from './replication.js';
import { takeModelExport } from './model-export.js';
import { Shard } from './shard.js';
import { BulkServer } from './bulk-service.js';
import { GRADIENT_POOL_BYTES, GradientPool } from './gradient-pool.js';
import { DEFAULT_MAX_INFLIGHT_BYTES, InflightBudget } from './inflight-budget.js';
import { shardImplementation } from './shard-service.js';
import { ShardMetrics } from './shard-metrics.js';
import { SparseStore } from './sparse-store.js';
import { DEFAULT_MAX_SPARSE_ROWS } from './sparse-row-cap.js';
import { sparseShardImplementation } from './sparse-service.js';

/** joining: bound, waiting for a map that gives it slots · serving · draining: closing · gone. */
export type ShardState = 'joining' | 'serving' | 'draining' | 'gone';

export interface ShardServerOptions {
  /** Unique shard id within the cluster. */
  id: string;
  /** host:port to listen on; port 0 picks a free port. */
  listen: string;
  /** host:port that clients dial. Default: the listen host (127.0.0.1 for a wildcard) with the bound port. */
  advertise?: string;
  store: MembershipStore;
  /** Lease TTL and renewal. Default {@link DEFAULT_LEASE}. */
  lease?: LeaseOptions;
  /** Re-read the map this often besides the watch (also how soon a store that lost its data is repaired). Default 1 000 ms. */
  mapPollMs?: number;
  /**
   * Under ssp/bsp: re-read the live workers this often, so a worker whose
   * lease expired (or that left, or went idle) stops holding the others back
   * within the lease TTL plus this. Default 500 ms.
   */
  workerPollMs?: number;
  /** Serve the bulk transport (plain TCP for dense values, docs/wire-protocol.md) on a second port of the listen host. Default true. */
  bulk?: boolean;
  /** Port of the bulk transport; 0 (the default) picks a free one. */
  bulkPort?: number;
  /**
   * A checkpoint file (server/checkpoint.ts) to load before serving: the
   * shard starts from the slots and rows it holds, optimizer state and
   * applied pushes included. Refused, and the shard not started, when the
   * file is unreadable, damaged, or of another model or layout.
   */
  restore?: string;
  /**
   * Checkpoints of its own (docs/checkpoints.md): to `directory`, every
   * `everyMs` (0: none on a timer) and once more when the shard closes, after
   * its last request. A failed one is logged and the next one tried.
   * `directory` is also the only place `Checkpoint` requests write to: a
   * shard without it refuses them. `keep`: how many of its own it keeps, the
   * newest and those before it (default 3, {@link DEFAULT_CHECKPOINT_KEEP}).
   */
  checkpoints?: { directory: string; everyMs: number; keep?: number };
  /**
   * How long to wait for the cluster's configuration when the store has none
   * yet: a store that restarted empty gets it back from the shards still
   * serving within moments. Default 15 000 ms.
   */
  configWaitMs?: number;
  /**
   * Start from the newest of its own checkpoints in `checkpoints.directory`
   * that restores whole, falling back to older ones (saying so); none there
   * at all: start afresh; some there, none good: refuse to start.
   */
  resume?: boolean;
  /** How its listeners and its own calls to other shards are secured. Default: the process's (`--tls-dir`), else plaintext. */
  security?: TransportSecurity;
  /** Allow plaintext on a non-loopback listen address (`--insecure`); without it such a shard refuses to start. */
  insecure?: boolean;
  /**
   * Bytes its requests may hold at once, over every connection and transport
   * (server/inflight-budget.ts): push windows, encoded pushes, gRPC pull
   * chunks being sent. Beyond it a request is refused `RESOURCE_EXHAUSTED`
   * (`busy`) and retried by clients. Default {@link DEFAULT_MAX_INFLIGHT_BYTES} (1 GiB).
   */
  maxInflightBytes?: number;
  /** What each listener (gRPC, bulk) lets its callers hold. Default {@link DEFAULT_LISTENER_LIMITS}. */
  limits?: ListenerLimits;
  /** Rows each sparse table may hold on this shard; a push that would create more is refused whole. Default {@link DEFAULT_MAX_SPARSE_ROWS}. */
  maxSparseRows?: number;
  /**
   * host:port to serve Prometheus metrics on (`GET /metrics`, plain HTTP;
   * `--metrics`, docs/operations.md); port 0 picks a free one. Default: none
   * served (the shard still counts them, in {@link ShardServer.metrics}).
   */
  metrics?: string;
  /**
   * How long a backup may take no updates before this shard, as its primary,
   * drops it from the map and acknowledges without it (docs/replication.md).
   * Default {@link DEFAULT_BACKUP_TIMEOUT_MS} (2 000 ms).
   */
  backupTimeoutMs?: number;
  /** The failure domain it runs in (`--topology`: a node, rack or zone): published with its lease, so that a slot's backups go to other domains than its primary. */
  topology?: string;
}

export const DEFAULT_MAP_POLL_MS = 1_000;
export const DEFAULT_WORKER_POLL_MS = 500;

/** How often the store is checked while it holds no map (cluster forming, or store lost its data). */
const NO_MAP_POLL_MS = 250;

/** Checkpoints that may wait while one is written; more are refused. */
const MAX_WAITING_CHECKPOINTS = 1;

const log = createLogger('shard');

/**
 * A shard process's lifecycle: read the cluster's configuration, bind the gRPC
 * server (Shard + SparseShard + health + reflection), register a lease, follow the map, and
 * serve the slots the map gives it. Emits 'state' on every transition.
 */
export class ShardServer extends EventEmitter {
  state: ShardState = 'joining';
  private stopWatch: (() => void) | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private workerTimer: NodeJS.Timeout | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private checkpoints: ShardServerOptions['checkpoints'];

  private constructor(
    readonly shard: Shard,
    /** The shard's sparse tables, served by `tessera.v1.SparseShard` under the same map and ownership as `shard`. */
    readonly sparse: SparseStore,
    readonly address: string,
    /** host:port of the bulk transport; empty when it is off. */
    readonly bulkAddress: string,
    private readonly grpc: TesseraGrpcServer,
    private readonly bulk: BulkServer | null,
    private readonly lease: Lease,
    private readonly store: MembershipStore,
    private readonly config: ClusterConfig,
    private readonly mapPollMs: number,
    /** How its listeners and its calls to other shards are secured. */
    readonly security: TransportSecurity,
    /** The bytes its requests hold at once, over every connection (`--max-inflight-mib`). */
    readonly inflight: InflightBudget,
    /** Its Prometheus metrics (shard-metrics.ts), served on `--metrics` when given. */
    readonly metrics: ShardMetrics,
    private readonly metricsServer: MetricsServer | null,
    /** Sends what it applies to its slots' backups (replication.ts). */
    readonly replicator: Replicator,
  ) {
    super();
    shard.replicated = () => replicator.barrier();
    this.keeper = new ReplicaKeeper(shard, sparse, store, config.replicas ?? 0, replicator, security, (map) => this.adopt(map));
  }

  /** Replication's upkeep: failover, new backups, a restart's and a stop's hand-over (replica-keeper.ts). */
  private readonly keeper: ReplicaKeeper;

  static async start(options: ShardServerOptions): Promise<ShardServer> {
    const security = options.security ?? processSecurity();
    checkPlaintextListener(security, listenHost(options.listen), options.insecure ?? false, `shard ${options.id}`);
    if (options.metrics !== undefined) checkPlaintextListener(security, listenHost(options.metrics), options.insecure ?? false, `shard ${options.id}'s metrics listener`);
    const config = await configOf(options.store, options.id, options.configWaitMs ?? DEFAULT_CONFIG_WAIT_MS);
    const shard = new Shard(options.id, config);
    // Initial values only for slots of a map first written after this shard started (a new cluster):
    // a slot of an existing map comes with values from a checkpoint or a move, or is lost.
    shard.acceptsInitialValues = (await options.store.getMap()) === null;
    const sparse = new SparseStore(config, shard, { maxRowsPerTable: options.maxSparseRows ?? DEFAULT_MAX_SPARSE_ROWS });
    if (options.checkpoints) await checkDirectory(options.checkpoints.directory, options.id);
    if (options.restore && options.resume) throw new InvalidArgumentError('give a shard a checkpoint to restore or have it resume from its own, not both');
    if (options.resume && !options.checkpoints) throw new InvalidArgumentError('a shard resumes from its own checkpoints: give it a checkpoint directory');
    // The map epoch of the checkpoint restored, if any: with the slots restored, what the lease claims until a map is adopted.
    let restoredEpoch = 0;
    let rolledBack: { to: string; path: string } | undefined;
    if (options.restore) {
      const { slots, rows, epoch } = restore(await readCheckpoint(options.restore), shard, sparse, options.restore);
      restoredEpoch = epoch;
      log.info(`shard ${options.id}: restored ${slots} slots and ${rows} sparse rows from ${options.restore}`);
    } else if (options.resume && options.checkpoints) {
      const { directory, keep } = options.checkpoints;
      const resumed = await resumeFrom(directory, shard, sparse, keep ?? DEFAULT_CHECKPOINT_KEEP, (m) => log.warn(m));
      if (resumed) log.info(`shard ${options.id}: resumed ${resumed.slots} slots and ${resumed.rows} sparse rows from ${resumed.path}`);
      else log.info(`shard ${options.id}: no checkpoint of its own in ${directory} yet; starting afresh`);
      restoredEpoch = resumed?.epoch ?? 0;
      // Not the checkpoint it wrote as it shut down (it crashed, or that one was damaged): pushes it
      // acknowledged after this one was taken are gone, and the shard says so.
      if (resumed && (!resumed.closing || resumed.fellBack)) rolledBack = { to: resumed.createdAt, path: resumed.path };
    }
    let server: ShardServer | undefined;
    const pool = new GradientPool(GRADIENT_POOL_BYTES, new InflightBudget(options.maxInflightBytes));
    const metrics = new ShardMetrics(options.id, config.slots, shard.elements, {
      heldBytes: () => shard.store.heldBytes() + sparse.heldBytes(),
      sparseRows: () => sparse.stats().map((t) => ({ table: t.name, rows: t.rows })),
      inflightBytes: () => pool.budget.heldBytes,
      inflightLimitBytes: () => pool.budget.maxBytes,
      ownedSlots: () => shard.owned().reduce((n, r) => n + r.end - r.begin, 0),
      lostSlots: () => shard.lost.size,
      mapEpoch: () => shard.epoch,
      backedSlots: () => (shard.currentMap ? shard.currentMap.owners.filter((_, s) => shard.backs(s)).length : 0),
      underReplicatedSlots: () => {
        const map = shard.currentMap;
        return map ? map.owners.filter((o, s) => o === shard.id && backupsOf(map, s).length < (config.replicas ?? 0)).length : 0;
      },
      backupLag: () => server?.replicator.lag() ?? [],
    }, options.metrics !== undefined);
    const grpc = await startGrpcServer(options.listen, [
      { name: SHARD_SERVICE_NAME, definition: shardService().service, implementation: shardImplementation(shard, () => server!.describe(), pool, metrics), rules: DATA_RULES },
      { name: SPARSE_SHARD_SERVICE_NAME, definition: sparseShardService().service, implementation: sparseShardImplementation(sparse, shard.gate, () => server!.describeSparse(), metrics), rules: DATA_RULES },
      {
        name: SHARD_ADMIN_SERVICE_NAME,
        definition: shardAdminService().service,
        implementation: shardAdminImplementation({
          checkpoint: (name, atStep) => server!.checkpoint(name, atStep),
          moveSlots: (slots, targetId, targetAddress) => server!.moveSlots(slots, targetId, targetAddress),
          importSlots: (data, sender) => server!.fromOwner(() => importSlots(data, shard, sparse, sender)),
          applyLog: (data, sender) => server!.fromOwner(() => applyLog(data, shard, sparse, sender)),
          dropSlots: (slots, sender) => dropSlots(shard, sparse, slots, sender),
          exportModel: (atStep, signal) => takeModelExport(shard, sparse, atStep, signal),
          resetSlots: (slots) => server!.resetLost(slots),
        }),
        rules: ADMIN_RULES,
      },
    ], security, options.limits);
    const address = options.advertise ?? advertised(options.listen, grpc.port);
    let bulk: BulkServer | null = null;
    let metricsServer: MetricsServer | null = null;
    try {
      // A primary's updates to this shard as its backup come over the bulk port too (replication.ts).
      const replicaSink = (entries: LogEntry[], sender: string | null) => server!.fromOwner(() => applyEntries(entries, shard, sparse, sender));
      if (options.bulk !== false) bulk = await BulkServer.start(shard, listenHost(options.listen), pool, options.bulkPort ?? 0, security, options.limits, metrics, replicaSink);
      if (options.metrics !== undefined) metricsServer = await MetricsServer.start(options.metrics, metrics.registry, security);
    } catch (err) {
      // A shard that cannot serve its bulk port (or its metrics) does not start at all (rather than stay up, NOT_SERVING, on gRPC alone).
      await bulk?.close();
      await grpc.close(0);
      throw err;
    }
    const bulkAddress = bulk ? `${address.slice(0, address.lastIndexOf(':'))}:${bulk.port}` : '';
    // A shard back from a checkpoint claims the slots in it, at the checkpoint's map epoch, until it adopts a map:
    // if the store lost its map meanwhile (Redis restarted empty), the map is rebuilt from these claims (reconcile.ts).
    const restored = rangesOf(shard.store.held().map(([s]) => s));
    const claim = restoredEpoch > 0 && restored.length > 0 ? { epoch: restoredEpoch, owned: restored } : {};
    if (rolledBack) {
      log.error(`shard ${options.id}: resumed from ${rolledBack.path}, taken at ${rolledBack.to}, not at a clean shutdown: pushes it acknowledged after that are lost (the map epoch moves on so that clients re-read it; tessera status shows the roll-back)`);
    }
    const lease = new Lease(options.store, 'shard', { id: options.id, address, ...(bulkAddress ? { bulkAddress } : {}), state: 'joining', bytes: 0, ...(options.topology ? { topology: options.topology } : {}), ...claim, ...(rolledBack ? { rolledBack } : {}) }, options.lease ?? DEFAULT_LEASE);
    const replicator = new Replicator(shard, options.store, (map) => server!.adopt(map), security, options.backupTimeoutMs ?? DEFAULT_BACKUP_TIMEOUT_MS);
    server = new ShardServer(shard, sparse, address, bulkAddress, grpc, bulk, lease, options.store, config, options.mapPollMs ?? DEFAULT_MAP_POLL_MS, security, pool.budget, metrics, metricsServer, replicator);
    log.info(`shard ${options.id} listening on ${address}${bulkAddress ? `, bulk on ${bulkAddress}` : ''} (model ${config.model.name}, ${shard.elements} elements, ${config.slots} slots, ${config.optimizer.name})`);
    try {
      await waitOutDuplicate(options.store, options.id, address, options.lease ?? DEFAULT_LEASE);
    } catch (err) {
      await bulk?.close();
      await grpc.close(0);
      throw err;
    }
    server.checkpoints = options.checkpoints;
    server.keeper.deadAfterMs = (options.lease ?? DEFAULT_LEASE).renewMs;
    server.rollBackToAnnounce = rolledBack?.to ?? null;
    server.scheduleCheckpoint();
    await lease.start();
    server.stopWatch = options.store.watchMap((map) => server!.adopt(map));
    await server.poll();
    if (shard.gate.clocked) await server.pollWorkers(options.workerPollMs ?? DEFAULT_WORKER_POLL_MS);
    return server;
  }

  /** Under ssp/bsp: tells the clock gate which workers are live, now and then every `everyMs`. */
  private async pollWorkers(everyMs: number): Promise<void> {
    const readAt = Date.now();
    try {
      const workers = await this.store.members('worker');
      this.shard.gate.setLive(
        workers.filter((w) => w.state !== IDLE_WORKER_STATE).map((w) => w.id),
        readAt,
      );
    } catch (err) {
      // Redis away: keep the last set (invariant 4); a dead worker then waits for the store.
      log.debug(`shard ${this.shard.id}: cannot read the live workers (${(err as Error).message})`);
    }
    if (this.state === 'draining' || this.state === 'gone') return;
    this.workerTimer = setTimeout(() => void this.pollWorkers(everyMs), everyMs);
    this.workerTimer.unref();
  }

  /**
   * Re-reads the map from the store; while the store holds none, takes part
   * in writing the first one (or rebuilding a lost one): see reconcile.ts.
   * Returns whether the store holds a map.
   */
  async refresh(): Promise<boolean> {
    try {
      let map = await this.store.getMap();
      if (!map) {
        const outcome = await reconcileMap(this.store, this.config);
        if (outcome !== 'waiting') log.info(`shard ${this.shard.id}: shard map ${outcome}`);
        map = await this.store.getMap();
      }
      if (map && this.keeper.fresh) map = await this.keeper.stepDown(map);
      if (map) this.adopt(map);
      if (map && this.rollBackToAnnounce !== null) await this.announceRollBack(map, this.rollBackToAnnounce);
      if (map && map.addresses[this.shard.id] !== undefined && (map.addresses[this.shard.id] !== this.address || (this.bulkAddress && map.bulk?.[this.shard.id] !== undefined && map.bulk[this.shard.id] !== this.bulkAddress))) await this.claimAddress(map);
      return map !== null;
    } catch (err) {
      log.debug(`shard ${this.shard.id}: cannot read the map (${(err as Error).message}); serving on the cached one`);
      return true;
    }
  }

  /** When the checkpoint was taken that the shard resumed from, older than its last acknowledgement, until the map says so; null when there is nothing to say. */
  private rollBackToAnnounce: string | null = null;

  /**
   * The shard resumed from a checkpoint (taken at `to`) that may miss pushes
   * it had acknowledged: the map moves one epoch up (owners unchanged) with a
   * notice of the roll-back, so every client's cached map is stale and
   * re-read, and each client logs the notice (the workers see it); the
   * roll-back is also in the shard's lease for `tessera status`.
   */
  private async announceRollBack(map: ShardMap, to: string): Promise<void> {
    try {
      const notice = { shard: this.shard.id, to, epoch: map.epoch + 1 };
      await this.store.casMap(map.epoch, { ...map, epoch: map.epoch + 1, rollBacks: [...(map.rollBacks ?? []).slice(1 - MAX_ROLL_BACK_NOTICES), notice] });
      this.rollBackToAnnounce = null;
      log.warn(`shard ${this.shard.id}: map epoch ${map.epoch + 1} after its roll-back`);
    } catch (err) {
      log.debug(`shard ${this.shard.id}: could not move the map epoch on after its roll-back (${(err as Error).message}); trying again`);
    }
  }

  /**
   * This shard came back on another address than the map names for it (a
   * restart with port 0, a pod with a new IP): writes its address into the
   * map, one epoch up, so that clients follow it; a concurrent change makes
   * it try again at the next poll.
   */
  private async claimAddress(map: ShardMap): Promise<void> {
    const id = this.shard.id;
    const next: ShardMap = {
      ...map,
      epoch: map.epoch + 1,
      addresses: { ...map.addresses, [id]: this.address },
      ...(map.bulk || this.bulkAddress ? { bulk: { ...map.bulk, ...(this.bulkAddress ? { [id]: this.bulkAddress } : {}) } } : {}),
    };
    try {
      await this.store.casMap(map.epoch, next);
      log.info(`shard ${id}: the map named it at ${map.addresses[id]}; it serves at ${this.address} now (map epoch ${next.epoch})`);
      this.adopt(next);
    } catch (err) {
      log.debug(`shard ${id}: could not write its new address into the map (${(err as Error).message}); trying again`);
    }
  }

  /**
   * Runs a backup's refused payload again after re-reading the map: a primary
   * that took over (or a move) is known to the store before it is known here.
   */
  async fromOwner<T>(work: () => T): Promise<T> {
    try {
      return work();
    } catch (err) {
      if (!(err instanceof PermissionDeniedError || err instanceof InvalidArgumentError)) throw err;
      await this.refresh();
      return work();
    }
  }

  /** The traffic of the slots this shard owns, bytes/s per slot with any (Shard.load). */
  ownedLoad(): { slot: number; bytesPerSec: number }[] {
    return this.shard.load.rates().filter((r) => this.shard.ownerOf(r.slot) === this.shard.id);
  }

  /** Says which slots the shard refuses as lost (log and lease, which `tessera status` shows), or that none are. */
  private reportLost(): void {
    const lost = rangesOf(this.shard.lost);
    if (lost.length > 0) {
      log.error(
        `shard ${this.shard.id}: the map gives it slots ${formatRanges(lost)} but it holds no values for them (it started without a checkpoint that has them); they are refused until restored (restart with --resume or --restore FILE) or declared lost (tessera reset-slots --shard ${this.shard.id})`,
      );
    }
    this.lease.update({ lost });
  }

  /**
   * Gives the lost slots (all, or those of `slots`) their initial values on
   * an operator's word (`ShardAdmin.ResetSlots`, `tessera reset-slots`): their
   * history is gone, and they are served from initial values from now on.
   */
  resetLost(slots: readonly number[]): { slots: number[]; epoch: number } {
    const reset = this.shard.resetLost(slots.length > 0 ? slots : undefined);
    if (reset.length > 0) log.warn(`shard ${this.shard.id}: slots ${formatRanges(rangesOf(reset))} declared lost by an operator; serving them from initial values`);
    this.reportLost();
    this.lease.update({ bytes: this.shard.store.heldBytes() + this.sparse.heldBytes() });
    void this.lease.renew();
    if (this.shard.owned().length > 0 && this.state === 'joining') this.transition('serving');
    return { slots: reset, epoch: this.shard.epoch };
  }

  /** refresh() now, then again on a timer: every mapPollMs, or every 250 ms while there is no map. */
  private async poll(): Promise<void> {
    const present = await this.refresh();
    if (present && (this.config.replicas ?? 0) > 0 && this.state !== 'draining' && this.state !== 'gone') await this.keeper.tend();
    // Sparse tables grow as rows are touched, traffic moves: publish what is held and carried now with the next renewal.
    this.lease.update({ bytes: this.shard.store.heldBytes() + this.sparse.heldBytes(), load: this.ownedLoad(), replication: this.replicator.lag() });
    if (this.state === 'draining' || this.state === 'gone') return;
    this.pollTimer = setTimeout(() => void this.poll(), present ? this.mapPollMs : NO_MAP_POLL_MS);
    this.pollTimer.unref();
  }

  adopt(map: ShardMap): void {
    if (this.state === 'draining' || this.state === 'gone') return;
    try {
      checkMapFor(this.config.slots, map);
    } catch (err) {
      // A map this cluster cannot use (another slot count, owners without addresses…): serve on with the one held.
      log.error(`shard ${this.shard.id}: ignoring a shard map from the store that does not fit this cluster (${(err as Error).message}); serving on with the map of epoch ${this.shard.epoch} it holds`);
      return;
    }
    const before = this.shard.currentMap;
    if (!this.shard.setMap(map)) return;
    this.replicator.setMap(map);
    const owned = this.shard.owned();
    const backed = backedRanges(map, this.shard.id);
    // Slots it backed and no longer holds in any role: their copies go (a move's slots in flight are not backed by any map yet).
    if (before) {
      const gone = backedRanges(before, this.shard.id).flatMap((r) => Array.from({ length: r.end - r.begin }, (_, i) => r.begin + i)).filter((s) => map.owners[s] !== this.shard.id && !backupsOf(map, s).includes(this.shard.id));
      if (gone.length > 0) dropSlots(this.shard, this.sparse, gone);
    }
    log.info(`shard ${this.shard.id}: map epoch ${map.epoch}, owns slots ${formatRanges(owned) || '(none)'}${backed.length > 0 ? `, backs up slots ${formatRanges(backed)}` : ''}`);
    this.reportLost();
    this.lease.update({ bytes: this.shard.store.heldBytes() + this.sparse.heldBytes(), epoch: map.epoch, owned, backed });
    void this.lease.renew();
    if (owned.length > 0) this.transition('serving');
    this.emit('map', map);
  }

  private transition(next: ShardState): void {
    if (this.state === next) return;
    log.info(`shard ${this.shard.id}: ${this.state} → ${next}`);
    this.state = next;
    this.lease.update({ state: next });
    this.grpc.setServing([SHARD_SERVICE_NAME, SPARSE_SHARD_SERVICE_NAME], next === 'serving' ? 'SERVING' : 'NOT_SERVING');
    this.emit('state', next);
  }

  describe(): object {
    return {
      shardId: this.shard.id,
      address: this.address,
      epoch: this.shard.epoch,
      owned: this.shard.owned(),
      elements: this.shard.store.heldElements(),
      bytes: this.shard.store.heldBytes() + this.sparse.heldBytes(),
      pushesApplied: this.shard.pushesApplied,
      state: this.state,
      consistency: this.config.consistency,
      clock: this.shard.gate.clock(),
      bulkAddress: this.bulkAddress,
    };
  }

  /**
   * Writes a checkpoint of everything this shard holds (docs/checkpoints.md)
   * into its own checkpoint directory, and nowhere else: `name` '' is the
   * shard's own file (the one `--resume` reads), another name a file beside it
   * (`<shard id>.<name>.tessera-checkpoint`). The snapshot pauses serving for
   * one synchronous copy, into memory made ready beforehand; the file is
   * written while the shard serves on. Under bsp, `atStep` > 0 takes the
   * snapshot when exactly that many steps are applied (see takeCheckpoint).
   *
   * One at a time: each takes a copy of everything the shard holds, so a
   * request that comes while one is being written waits for it, and one that
   * comes while another already waits is refused (RESOURCE_EXHAUSTED) rather
   * than held. `own`: the shard's timed and shutdown checkpoints, which always
   * wait their turn.
   *
   * @throws CheckpointError when the shard keeps no checkpoints (started
   *   without a checkpoint directory); InvalidArgumentError for a name that is
   *   not one ({@link badCheckpointName}).
   */
  async checkpoint(name: string, atStep = 0, own = false, closing = false): Promise<CheckpointInfo> {
    const bad = badCheckpointName(name);
    if (bad) throw new InvalidArgumentError(bad);
    const directory = this.checkpoints?.directory;
    if (!directory) throw new CheckpointError(`shard ${this.shard.id} keeps no checkpoints: start it with --checkpoint-dir DIR (a checkpoint request names a file there, never a directory)`);
    // The shard's own (timed, and at shutdown) always take their turn.
    if (!own && this.checkpointsWaiting >= MAX_WAITING_CHECKPOINTS) {
      throw new ResourceExhaustedError(`shard ${this.shard.id} is writing a checkpoint and another is waiting; ask again once they are done`);
    }
    this.checkpointsWaiting++;
    // The queue never rejects (each turn's failure is its caller's), so the next turn always follows.
    const turn = this.checkpointQueue.then(() => {
      this.checkpointsWaiting--;
      return this.writeCheckpoint(directory, name, atStep, closing);
    });
    this.checkpointQueue = turn.catch(() => undefined);
    return turn;
  }

  private async writeCheckpoint(directory: string, name: string, atStep: number, closing: boolean): Promise<CheckpointInfo> {
    const started = performance.now();
    const info = await takeCheckpoint(this.shard, this.sparse, directory, atStep, name, this.checkpoints?.keep ?? DEFAULT_CHECKPOINT_KEEP, closing).catch((err: unknown) => {
      this.metrics.checkpointed(false, 0);
      throw err;
    });
    this.metrics.checkpointed(true, (performance.now() - started) / 1000);
    this.lease.update({ checkpoint: { path: info.path, at: new Date().toISOString(), steps: info.closedSteps } });
    // Published now, unless closing (a renewal racing the lease's removal would bring it back).
    if (this.state === 'serving' || this.state === 'joining') void this.lease.renew();
    log.info(`shard ${this.shard.id}: checkpoint of ${info.slots} slots and ${info.rows} rows written to ${info.path} (${info.bytes} bytes, serving paused ${info.snapshotMs.toFixed(1)} ms)`);
    return info;
  }

  /**
   * Hands `slots` to the shard `targetId` at `targetAddress`, live
   * (server/migration.ts, docs/migration.md), and adopts the map that gives
   * them to it.
   */
  async moveSlots(slots: number[], targetId: string, targetAddress: string): Promise<MoveReport> {
    const report = await transferSlots('move', this.shard, this.sparse, this.store, (map) => this.adopt(map), slots, targetId, targetAddress, { security: this.security, beforeFlip: () => this.replicator.barrier() }).catch((err: unknown) => {
      this.metrics.moved(false, 0);
      throw err;
    });
    this.metrics.moved(true, report.slots);
    log.info(`shard ${this.shard.id}: moved ${report.slots} slots and ${report.rows} rows to ${targetId} (map epoch ${report.epoch}, ${report.logEntries} updates sent after the snapshot, frozen ${report.frozenMs.toFixed(1)} ms)`);
    return report;
  }

  /** The checkpoint being written, settled as a success whatever its outcome (or a resolved promise): the next waits for it. */
  private checkpointQueue: Promise<unknown> = Promise.resolve();
  /** Checkpoints asked for that have not started yet. */
  private checkpointsWaiting = 0;

  /** The next timed checkpoint, once the last one is done (they never overlap). */
  private scheduleCheckpoint(): void {
    const c = this.checkpoints;
    if (!c || !(c.everyMs > 0) || this.state === 'draining' || this.state === 'gone') return;
    this.checkpointTimer = setTimeout(() => {
      void this.checkpoint('', 0, true)
        .catch((err: Error) => log.warn(`shard ${this.shard.id}: checkpoint to ${c.directory} failed (${err.message}); trying again in ${c.everyMs} ms`))
        .finally(() => this.scheduleCheckpoint());
    }, c.everyMs);
    this.checkpointTimer.unref();
  }

  describeSparse(): object {
    return { shardId: this.shard.id, epoch: this.shard.epoch, tables: this.sparse.stats() };
  }

  /** Stops serving: drains in-flight calls (up to `graceMs`), drops the lease. */
  async close(graceMs = 2_000): Promise<void> {
    if (this.state === 'gone') return;
    this.transition('draining');
    this.stopWatch?.();
    clearTimeout(this.pollTimer);
    clearTimeout(this.workerTimer);
    clearTimeout(this.checkpointTimer);
    this.shard.gate.close();
    await this.bulk?.close();
    await this.grpc.close(graceMs);
    this.replicator.close();
    // Its slots to their backups now, rather than once its lease is found gone: clients follow at once.
    if ((this.config.replicas ?? 0) > 0) await this.keeper.handOver();
    // Every request has been answered: the last checkpoint holds every acknowledged push.
    if (this.checkpoints) await this.checkpoint('', 0, true, true).catch((err: Error) => log.warn(`shard ${this.shard.id}: the last checkpoint failed (${err.message})`));
    await this.lease.close();
    // Last: a scrape while it drained still saw it.
    await this.metricsServer?.close();
    this.transition('gone');
  }

  /** host:port of its metrics listener (`--metrics`); empty when none. */
  get metricsAddress(): string {
    return this.metricsServer?.address ?? '';
  }
}

/** The host part of a listen address ('' for the wildcard forms, which Node binds as all interfaces). */
function listenHost(listen: string): string {
  const { host } = splitHostPort(listen);
  return isWildcardHost(host) ? '' : host;
}

function advertised(listen: string, port: number): string {
  const { host } = splitHostPort(listen);
  return `${isWildcardHost(host) ? '127.0.0.1' : listen.slice(0, listen.lastIndexOf(':'))}:${port}`;
}

/**
 * Before a shard registers: another shard with the same id and a different
 * address may hold a live lease. A lease left by a shard that died lapses
 * within its TTL, so the newcomer waits that long; one still renewed after it
 * belongs to a live shard, and two shards under one id would serve the same
 * slots, so the newcomer refuses to start. An unreachable store skips the
 * check (the lease will say the same once it is back).
 * @throws ShardIdTakenError naming the live shard's address.
 */
async function waitOutDuplicate(store: MembershipStore, id: string, address: string, lease: LeaseOptions): Promise<void> {
  const deadline = Date.now() + lease.ttlMs + lease.renewMs;
  for (;;) {
    const other = await store.members('shard').then(
      (ms) => ms.find((m) => m.id === id && m.address !== address),
      () => undefined,
    );
    if (!other) return;
    if (Date.now() >= deadline) {
      throw new ShardIdTakenError(`a shard with id ${id} is alive at ${other.address ?? 'another address'} (its lease is being renewed): stop it first, or give this one another --id`);
    }
    log.info(`shard ${id}: a lease for this id at ${other.address ?? 'another address'} is still there; waiting for it to lapse (up to ${lease.ttlMs} ms)`);
    await new Promise((r) => setTimeout(r, Math.min(lease.renewMs, 1_000)));
  }
}

/** How long a starting shard waits for a configuration the store does not hold yet. */
const DEFAULT_CONFIG_WAIT_MS = 15_000;

/**
 * The cluster's configuration, waiting up to `waitMs` for it: a store that
 * lost its data (Redis restarted empty) gets it back from the shards still
 * serving, within their next map poll.
 * @throws NotFoundError when none comes.
 */
async function configOf(store: MembershipStore, id: string, waitMs: number): Promise<ClusterConfig> {
  const deadline = Date.now() + waitMs;
  for (let said = false; ; said = true) {
    const config = await store.getConfig();
    if (config) return config;
    if (Date.now() >= deadline) throw new NotFoundError('no cluster is configured in the membership store; create one first (tessera init, or tessera local)');
    if (!said) log.info(`shard ${id}: the membership store holds no cluster configuration; waiting up to ${waitMs} ms for it (a store restarted empty gets it back from the shards still serving)`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
