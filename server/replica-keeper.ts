import { MapConflictError } from '../cluster/errors.js';
import { createLogger } from '../cluster/log.js';
import { DEFAULT_LEASE } from '../cluster/membership/lease-options.js';
import { type MemberInfo, type MembershipStore } from '../cluster/membership/store.js';
import { type Failover, failoverMap, nextBackups } from '../cluster/replica-plan.js';
import { type ShardMap, backupsOf } from '../cluster/shard-map.js';
import { formatRanges, rangesOf } from '../cluster/slots.js';
import { type TransportSecurity } from '../cluster/tls/transport-security.js';
import { transferSlots } from './migration.js';
import { type Replicator } from './replication.js';
import { type Shard } from './shard.js';
import { type SparseStore } from './sparse-store.js';

const log = createLogger('shard');

/**
 * A shard's part in keeping every slot on its primary and backups
 * (docs/replication.md), beside the stream of updates (replication.ts): it
 * takes over the slots of a primary whose lease is gone, gives its own slots
 * that are short of backups a new one, and, as the shard starts or stops,
 * hands the slots the map names it for to their backups. Every change is a
 * map written by compare-and-set (cluster/replica-plan.ts computes them).
 */
export class ReplicaKeeper {
  constructor(
    private readonly shard: Shard,
    private readonly sparse: SparseStore,
    private readonly store: MembershipStore,
    /** Backups each slot should have (ClusterConfig.replicas). */
    private readonly replicas: number,
    private readonly replicator: Replicator,
    private readonly security: TransportSecurity,
    /** Installs a map on the shard server (as one from the store). */
    private readonly adopt: (map: ShardMap) => void,
  ) {
    // A shard that starts into an existing map may be listed there for values it no longer has.
    this.fresh = !shard.acceptsInitialValues;
  }

  /** Whether this shard started into an existing map and has not read it yet: it may be listed there for slots it no longer holds. */
  fresh: boolean;

  /**
   * A shard that starts (or restarts) holds nothing that a live backup does
   * not hold better: where the map makes it the owner of slots that have a
   * live backup, those go to their first live backup, and it leaves every
   * backup list it is on (it is given copies again once serving). Its other
   * slots stay its own: restored from a checkpoint, or lost. Returns the map
   * to adopt.
   */
  async stepDown(map: ShardMap): Promise<ShardMap> {
    const id = this.shard.id;
    for (let attempt = 0; ; attempt++) {
      const listed = map.owners.some((o, s) => o === id && backupsOf(map, s).length > 0) || map.owners.some((_, s) => backupsOf(map, s).includes(id));
      if (!listed) break;
      const change = await this.withoutThisShard(map);
      if (!change) break;
      try {
        await this.store.casMap(map.epoch, change.map);
        if (change.promoted.length > 0) log.warn(`shard ${id}: started without the latest values of slots ${formatRanges(rangesOf(change.promoted.map((p) => p.slot)))}; their backups serve them now (map epoch ${change.map.epoch}), and this shard catches up as a backup`);
        map = change.map;
        break;
      } catch (err) {
        // Tried again at the next poll (refresh), before this shard serves anything.
        if (!(err instanceof MapConflictError) || attempt >= 4) throw err;
        const current = await this.store.getMap();
        if (!current) break;
        map = current;
      }
    }
    this.fresh = false;
    return map;
  }

  /** On a clean stop: the slots it owns go to their first live backup, and it leaves every backup list (one compare-and-set; best effort). */
  async handOver(): Promise<void> {
    try {
      const map = await this.store.getMap();
      if (!map) return;
      const change = await this.withoutThisShard(map);
      if (!change) return;
      await this.store.casMap(map.epoch, change.map);
      if (change.promoted.length > 0) log.info(`shard ${this.shard.id}: handed slots ${formatRanges(rangesOf(change.promoted.map((p) => p.slot)))} to their backups as it stops (map epoch ${change.map.epoch})`);
    } catch (err) {
      log.debug(`shard ${this.shard.id}: could not hand its slots to their backups (${(err as Error).message}); they fail over once its lease is gone`);
    }
  }

  /** `map` as if this shard were gone: its slots with a live backup holding them go to it, and it leaves every backup list (null: nothing changes). */
  private async withoutThisShard(map: ShardMap): Promise<Failover | null> {
    const others = (await this.store.members('shard')).filter((m) => m.id !== this.shard.id);
    return failoverMap(map, new Set(others.map((m) => m.id)), holdsBackup(others));
  }

  /** Since when each shard of the map has had no lease, as this shard's polls saw it. */
  private readonly missingSince = new Map<string, number>();
  /** How long a shard of the map must have had no lease to be taken for dead: its lease's renewal period. */
  deadAfterMs = DEFAULT_LEASE.renewMs;

  /** Whether a catch-up of a new backup is running (one at a time). */
  private copying = false;

  /**
   * Replication's upkeep, at every map poll (docs/replication.md): slots
   * whose primary's lease is gone go to their first live backup, and dead
   * backups leave the map (one compare-and-set, whichever live shard sees it
   * first); then the slots this shard owns that are short of backups get one,
   * caught up from a snapshot and the log (transferSlots 'copy'), one copy at a time.
   */
  async tend(): Promise<void> {
    const map = this.shard.currentMap;
    if (!map) return;
    let members;
    try {
      members = await this.store.members('shard');
    } catch {
      return;
    }
    const listed = new Set(members.map((m) => m.id));
    if (!listed.has(this.shard.id)) return;
    // A holder counts as dead once its lease has been missing for a renewal period: a store back from an outage
    // (leases lapsed all at once) hears from every live shard within that, and nobody is taken for dead meanwhile.
    const now = Date.now();
    const live = new Set(listed);
    for (const id of new Set([...map.owners, ...(map.backups ?? []).flat()])) {
      if (listed.has(id)) this.missingSince.delete(id);
      else if (!this.missingSince.has(id)) this.missingSince.set(id, now);
      if (now - (this.missingSince.get(id) ?? now) < this.deadAfterMs) live.add(id);
    }
    const change = failoverMap(map, live, holdsBackup(members));
    if (change) {
      try {
        await this.store.casMap(map.epoch, change.map);
        for (const [to, from] of new Map(change.promoted.map((p) => [p.to, p.from]))) {
          const slots = rangesOf(change.promoted.filter((p) => p.to === to).map((p) => p.slot));
          log.warn(`shard ${this.shard.id}: shard ${from} is gone (no lease); its backup ${to} takes over slots ${formatRanges(slots)} (map epoch ${change.map.epoch})`);
        }
        this.adopt(change.map);
      } catch (err) {
        log.debug(`shard ${this.shard.id}: failover not written (${(err as Error).message}); the next poll looks again`);
      }
      return;
    }
    if (this.copying || this.shard.migration) return;
    const plan = nextBackups(map, this.replicas, this.shard.id, members.filter((m) => m.address).map((m) => ({ id: m.id, address: m.address!, ...(m.topology ? { topology: m.topology } : {}), ...(m.state ? { state: m.state } : {}) })));
    if (!plan) return;
    this.copying = true;
    const { target, slots } = plan;
    void transferSlots('copy', this.shard, this.sparse, this.store, (m) => this.adopt(m), slots, target.id, target.address, { security: this.security, beforeFlip: () => this.replicator.barrier() })
      .then((report) => log.info(`shard ${this.shard.id}: ${target.id} is a backup of slots ${formatRanges(rangesOf(slots))} now (map epoch ${report.epoch}; caught up from a snapshot and ${report.logEntries} updates, frozen ${report.frozenMs.toFixed(1)} ms)`))
      .catch((err: Error) => log.warn(`shard ${this.shard.id}: could not make ${target.id} a backup of ${slots.length} slots (${err.message}); trying again at the next poll`))
      .finally(() => (this.copying = false));
  }
}

/** Whether shard `id` says, in its lease, that it holds slot `s` as a backup (a shard back from a restart does not until it is copied to again). */
function holdsBackup(members: readonly MemberInfo[]): (id: string, s: number) => boolean {
  const backed = new Map(members.map((m) => [m.id, m.backed ?? []]));
  return (id, s) => (backed.get(id) ?? []).some((r) => s >= r.begin && s < r.end);
}
