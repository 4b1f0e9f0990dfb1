import type * as grpc from '@grpc/grpc-js';
import { sleep } from '../cluster/backoff.js';
import { MapConflictError, NotReadyError, ShardUnavailableError, TesseraError, errorKind } from '../cluster/errors.js';
import { dial, unary } from '../cluster/grpc-client.js';
import { createLogger } from '../cluster/log.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { shardAdminService } from '../cluster/proto.js';
import { type ShardMap, backupsOf, compactBackups, holdersOnly } from '../cluster/shard-map.js';
import { formatRanges, rangesOf } from '../cluster/slots.js';
import { type TransportSecurity } from '../cluster/tls/transport-security.js';
import { type LogEntry, type UpdateRecorder } from './migration-log.js';
import { MIGRATION_PAYLOAD_BYTES, encodeLog } from './migration.js';
import { ReplicaChannel } from './replica-channel.js';
import { type Shard } from './shard.js';

const log = createLogger('replication');

/**
 * How long a backup may fail to take updates (unreachable, or refusing them)
 * before its primary drops it from the map and acknowledges without it.
 * Default 2 000 ms: a push waits at most about this long for a dead backup.
 */
export const DEFAULT_BACKUP_TIMEOUT_MS = 2_000;
/** Shortest deadline of one call that sends updates to a backup (it is the backup timeout when that is longer). */
const MIN_SEND_DEADLINE_MS = 2_000;

/**
 * A primary's side of replication (docs/replication.md). Primary-backup: the
 * shard that owns a slot applies each push, records what each slot received
 * (the same entries a move's log holds: worker, seq, the slot's gradient or
 * rows) and sends them, in the order it applied them, to every backup the
 * map lists for the slot, one stream per backup. The edges acknowledge a push
 * only once {@link barrier} resolves: every backup holds every update
 * recorded before it. A backup applies an update once (by worker and seq,
 * as a move's target does), so its slots are the primary's, bit for bit.
 *
 * A backup that takes nothing for {@link DEFAULT_BACKUP_TIMEOUT_MS} is
 * dropped from the map by compare-and-set (it catches up again later, from a
 * snapshot); the pushes waiting on it are then acknowledged. If the map
 * meanwhile gave this shard's slots to a backup (a failover: this shard was
 * taken for dead), the pushes waiting are refused, retryably, and clients
 * follow the new map.
 */
export class Replicator implements UpdateRecorder {
  /** For each slot this shard owns, its backups in the current map. */
  private backups: (readonly string[])[] = [];
  private readonly links = new Map<string, BackupLink>();
  private closed = false;

  constructor(
    private readonly shard: Shard,
    private readonly store: MembershipStore,
    /** Installs a map this replicator wrote (or read) on the shard, as a map from the store is. */
    private readonly adopt: (map: ShardMap) => void,
    private readonly security: TransportSecurity,
    private readonly backupTimeoutMs = DEFAULT_BACKUP_TIMEOUT_MS,
  ) {}

  /** Follows a map: which backups each owned slot has; streams to backups no longer listed end. */
  setMap(map: ShardMap): void {
    const id = this.shard.id;
    this.backups = map.owners.map((o, s) => (o === id ? backupsOf(map, s) : []));
    const wanted = new Set(this.backups.flat());
    const moved = new Map<string, BackupLink>();
    for (const [backup, link] of this.links) {
      if (wanted.has(backup) && map.addresses[backup] === link.address && (map.bulk?.[backup] ?? '') === link.bulkAddress) continue;
      this.links.delete(backup);
      // Still a backup, at another address: what it has not taken yet goes to it there.
      if (wanted.has(backup)) {
        moved.set(backup, link);
        continue;
      }
      // No longer a backup of any slot here: what it was sent and did not take is not needed from it if
      // the slots are still this shard's; if they are not, the pushes waiting on it are refused, to be retried.
      const stillOwned = link.pendingSlots().every((s) => map.owners[s] === id);
      link.close(stillOwned ? null : new NotReadyError(`shard ${id} no longer owns slots it was replicating (map epoch ${map.epoch}); retry against their owner`));
    }
    for (const backup of wanted) {
      if (this.links.has(backup)) continue;
      const link = new BackupLink(backup, map.addresses[backup]!, map.bulk?.[backup] ?? '', this.security, this.backupTimeoutMs, (l, err) => this.failed(l, err));
      const before = moved.get(backup);
      if (before) link.takeOver(before);
      this.links.set(backup, link);
    }
    this.shard.replica = !this.closed && wanted.size > 0 ? this : null;
  }

  has(s: number): boolean {
    return (this.backups[s]?.length ?? 0) > 0;
  }

  dense(slot: number, worker: string, seq: number, gradient: Float32Array): void {
    this.send({ kind: 'dense', slot, worker, seq, gradient: gradient.slice() });
  }

  sparse(table: string, slot: number, worker: string, seq: number, ids: Uint32Array, gradient: Float32Array): void {
    this.send({ kind: 'sparse', table, slot, worker, seq, ids: ids.slice(), gradient: gradient.slice() });
  }

  private send(entry: LogEntry): void {
    for (const backup of this.backups[entry.slot] ?? []) this.links.get(backup)?.enqueue(entry);
  }

  /**
   * Resolves once every update recorded so far is held by each backup of its
   * slot (or that backup was dropped from the map); null when none is
   * outstanding. Rejects (NotReadyError) when the slots were given to
   * another shard meanwhile.
   */
  barrier(): Promise<void> | null {
    const waits: Promise<void>[] = [];
    for (const link of this.links.values()) {
      const w = link.drained();
      if (w) waits.push(w);
    }
    return waits.length === 0 ? null : Promise.all(waits).then(() => undefined);
  }

  /** Each backup with updates sent and not yet acknowledged, and the slots it backs here. */
  lag(): { backup: string; pending: number; slots: number }[] {
    return [...this.links.values()].map((l) => ({ backup: l.id, pending: l.pending, slots: this.backups.filter((b) => b.includes(l.id)).length }));
  }

  /** Ends every stream; pushes still waiting are refused (retryably). */
  close(): void {
    this.closed = true;
    this.shard.replica = null;
    for (const link of this.links.values()) link.close(new NotReadyError(`shard ${this.shard.id} is shutting down; retry against the new owner`));
    this.links.clear();
  }

  /**
   * A backup took nothing for the timeout: drop it from the map (one epoch
   * up, by compare-and-set on what the store holds now) unless the map has
   * moved on already. Tries until the link is gone: a store that cannot be
   * reached holds the pushes, which are not acknowledged without their backup.
   */
  private async failed(link: BackupLink, err: Error): Promise<void> {
    const id = this.shard.id;
    if (this.closed) link.close(new NotReadyError(`shard ${id} is shutting down; retry against the new owner`));
    for (let attempt = 0; !link.isClosed && !this.closed; attempt++) {
      try {
        const map = await this.store.getMap();
        if (map) this.adopt(map);
        if (link.isClosed || !map) {
          if (!map) await sleep(250);
          continue;
        }
        const backups = map.owners.map((o, s) => (o === id ? backupsOf(map, s).filter((b) => b !== link.id) : [...backupsOf(map, s)]));
        const kept = compactBackups(backups);
        const next: ShardMap = { ...map, epoch: map.epoch + 1, ...holdersOnly(map.owners, kept.backups, map.addresses, map.bulk), ...kept };
        if (!kept.backups) delete next.backups;
        await this.store.casMap(map.epoch, next);
        const slots = rangesOf(map.owners.flatMap((o, s) => (o === id && backupsOf(map, s).includes(link.id) ? [s] : [])));
        log.warn(`shard ${id}: backup ${link.id} took no updates for ${this.backupTimeoutMs} ms (${err.message}); dropped it from slots ${formatRanges(slots)} (map epoch ${next.epoch}), which go on with the backups left until it catches up again`);
        this.adopt(next);
      } catch (e) {
        if (!(e instanceof MapConflictError)) {
          log.debug(`shard ${id}: cannot drop backup ${link.id} from the map yet (${(e as Error).message}); trying again`);
          await sleep(Math.min(1_000, 100 * 2 ** attempt));
        }
      }
    }
  }
}

/**
 * The stream of updates to one backup: entries in the order they were
 * applied, sent in batches, one call at a time, so the backup applies them
 * in that order — over its bulk port when the map names one (ReplicaChannel),
 * else as `ShardAdmin.ApplyLog` calls.
 */
class BackupLink {
  private queue: LogEntry[] = [];
  private enqueued = 0;
  private acked = 0;
  private waiters: { upTo: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  private pumping = false;
  private closedWith: { err: Error | null } | null = null;
  private readonly client: grpc.Client;
  private readonly channel: ReplicaChannel | null;

  constructor(
    readonly id: string,
    readonly address: string,
    /** host:port of its bulk port; '' when the map names none. */
    readonly bulkAddress: string,
    security: TransportSecurity,
    private readonly timeoutMs: number,
    private readonly onFailure: (link: BackupLink, err: Error) => Promise<void>,
  ) {
    this.client = dial(shardAdminService(), address, security);
    this.channel = bulkAddress ? new ReplicaChannel(bulkAddress, address, security) : null;
  }

  get isClosed(): boolean {
    return this.closedWith !== null;
  }

  /** Updates sent to it and not yet acknowledged. */
  get pending(): number {
    return this.enqueued - this.acked;
  }

  /** The slots of the updates not yet acknowledged. */
  pendingSlots(): number[] {
    return [...new Set(this.queue.map((e) => e.slot))];
  }

  enqueue(entry: LogEntry): void {
    if (this.closedWith) return;
    this.queue.push(entry);
    this.enqueued++;
    if (!this.pumping) {
      this.pumping = true;
      // After the push that recorded it has applied every slot it can: one batch for all of them.
      setImmediate(() => void this.pump());
    }
  }

  /** Takes the updates `old` (the same backup, at its former address) has not delivered, and the pushes waiting on them; `old` ends without settling them. */
  takeOver(old: BackupLink): void {
    const { queue, enqueued, acked, waiters } = old.handOff();
    this.queue = queue;
    this.enqueued = enqueued;
    this.acked = acked;
    this.waiters = waiters;
    if (this.queue.length > 0 && !this.pumping) {
      this.pumping = true;
      setImmediate(() => void this.pump());
    }
  }

  /** Ends this link, giving its undelivered updates and its waiting pushes to the caller. */
  private handOff(): { queue: LogEntry[]; enqueued: number; acked: number; waiters: BackupLink['waiters'] } {
    const out = { queue: this.queue, enqueued: this.enqueued, acked: this.acked, waiters: this.waiters };
    this.queue = [];
    this.waiters = [];
    this.close(null);
    return out;
  }

  /** Resolves once everything enqueued so far is acknowledged (null: it is). */
  drained(): Promise<void> | null {
    if (this.acked >= this.enqueued) return null;
    return new Promise((resolve, reject) => this.waiters.push({ upTo: this.enqueued, resolve, reject }));
  }

  /** Ends the stream: pushes waiting on it are released (`err` null) or refused with `err`. */
  close(err: Error | null): void {
    if (this.closedWith) return;
    this.closedWith = { err };
    this.queue = [];
    for (const w of this.waiters) (err ? w.reject(err) : w.resolve());
    this.waiters = [];
    this.client.close();
    this.channel?.close();
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0 && !this.closedWith) {
      const count = batchLength(this.queue);
      try {
        await this.deliver(this.queue.slice(0, count));
      } catch (err) {
        // Returns once the link is closed (the backup dropped from the map, or the slots gone elsewhere).
        await this.onFailure(this, err as Error);
        continue;
      }
      if (this.closedWith) break;
      this.queue.splice(0, count);
      this.acked += count;
      const done = this.waiters.filter((w) => w.upTo <= this.acked);
      if (done.length > 0) {
        this.waiters = this.waiters.filter((w) => w.upTo > this.acked);
        for (const w of done) w.resolve();
      }
    }
    this.pumping = false;
  }

  /** One batch, tried again on errors worth retrying (unreachable, not ready) until the timeout; refused outright otherwise. */
  private async deliver(batch: LogEntry[]): Promise<void> {
    const since = performance.now();
    let data: Buffer | null = null;
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.channel) await withDeadline(this.channel.send(batch), Math.max(MIN_SEND_DEADLINE_MS, this.timeoutMs), this.channel);
        else await unary(this.client, 'applyLog', { data: (data ??= encodeLog(batch)) }, Math.max(MIN_SEND_DEADLINE_MS, this.timeoutMs), this.address);
        return;
      } catch (err) {
        if (this.closedWith) return;
        const retry = err instanceof TesseraError && (errorKind(err.reason)?.recovery ?? 'fail') !== 'fail';
        if (!retry || performance.now() - since >= this.timeoutMs) throw err;
        await sleep(Math.min(250, 20 * 2 ** attempt));
      }
    }
  }
}

/** `reply`, or a ShardUnavailableError after `ms` (the channel then dropped: a backup that stopped answering). */
function withDeadline<T>(reply: Promise<T>, ms: number, channel: ReplicaChannel): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      channel.reset();
      reject(new ShardUnavailableError(`backup at ${channel.address} did not answer within ${ms} ms`, channel.address));
    }, ms);
  });
  return Promise.race([reply, late]).finally(() => clearTimeout(timer));
}

/** How many entries from the front of `queue` make one call: at least one, and no more than about MIGRATION_PAYLOAD_BYTES. */
function batchLength(queue: readonly LogEntry[]): number {
  let bytes = 0;
  let n = 0;
  for (const e of queue) {
    const size = 4 * e.gradient.length + (e.kind === 'sparse' ? 4 * e.ids.length : 0) + 128;
    if (n > 0 && bytes + size > MIGRATION_PAYLOAD_BYTES) break;
    bytes += size;
    n++;
  }
  return n;
}
