import { type ClusterConfig, validateClusterConfig } from '../cluster-config.js';
import { ClusterExistsError, InvalidArgumentError, MapConflictError } from '../errors.js';
import { type ShardMap, checkMapFor, validateMap } from '../shard-map.js';
import { createLogger } from '../log.js';
import { type MemberInfo, type MemberKind, type MembershipStore, badMember } from './store.js';
import { type Claim, DEFAULT_CLAIM_GRACE_MS, type WorkClaim, type WorkPlan, type WorkProgress, claimRule, planMismatch, validatePlan } from './work-queue.js';

const log = createLogger('membership');

/**
 * The embedded store: the same semantics as Redis, in one process's memory.
 * `tessera local` hosts one and serves it over gRPC (membership-service.ts) so
 * roles in other processes share it; tests use it directly.
 */
export class MemoryMembershipStore implements MembershipStore {
  private config: ClusterConfig | null = null;
  private map: ShardMap | null = null;
  private readonly leases = new Map<string, { info: MemberInfo; expiresAt: number }>();
  private readonly listeners = new Set<(map: ShardMap) => void>();
  private work: { plan: WorkPlan; next: number; claims: Map<number, Claim> } | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  async getConfig(): Promise<ClusterConfig | null> {
    return this.config && structuredClone(this.config);
  }

  async createCluster(config: ClusterConfig, force = false): Promise<void> {
    validateClusterConfig(config);
    if (this.config && !force) throw new ClusterExistsError(`cluster "${this.config.name}" already exists; pass --force to overwrite its configuration`);
    this.config = structuredClone(config);
    if (force) {
      this.map = null;
      this.work = null;
    }
  }

  async getMap(): Promise<ShardMap | null> {
    return this.map && structuredClone(this.map);
  }

  async casMap(expectedEpoch: number, next: ShardMap): Promise<void> {
    const actual = this.map?.epoch ?? 0;
    if (actual !== expectedEpoch) throw new MapConflictError(expectedEpoch, actual);
    if (!(next?.epoch > expectedEpoch)) throw new InvalidArgumentError(`a new shard map must have an epoch above ${expectedEpoch}, got ${String(next?.epoch).slice(0, 40)}`);
    // A map for another slot count, or with fields of the wrong type, would be refused by every shard and client; refuse it here, where the writer hears of it.
    if (this.config) checkMapFor(this.config.slots, next);
    else validateMap(next);
    this.map = structuredClone(next);
    for (const l of this.listeners) queueMicrotask(() => notify(l, next));
  }

  async register(kind: MemberKind, member: MemberInfo, ttlMs: number): Promise<void> {
    const bad = badMember(member);
    if (bad) throw new InvalidArgumentError(bad);
    this.leases.set(`${kind}/${member.id}`, { info: { ...member }, expiresAt: this.now() + ttlMs });
  }

  async deregister(kind: MemberKind, id: string): Promise<void> {
    this.leases.delete(`${kind}/${id}`);
  }

  async members(kind: MemberKind): Promise<MemberInfo[]> {
    const now = this.now();
    const out: MemberInfo[] = [];
    for (const [key, lease] of this.leases) {
      if (lease.expiresAt <= now) this.leases.delete(key);
      else if (key.startsWith(`${kind}/`)) out.push({ ...lease.info });
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  watchMap(listener: (map: ShardMap) => void): () => void {
    this.listeners.add(listener);
    const current = this.map;
    if (current) queueMicrotask(() => this.listeners.has(listener) && notify(listener, current));
    return () => this.listeners.delete(listener);
  }

  async claimWork(worker: string, plan: WorkPlan, floor: number, graceMs = DEFAULT_CLAIM_GRACE_MS): Promise<WorkClaim> {
    validatePlan(plan);
    if (!worker) throw new InvalidArgumentError('a work claim needs a worker id');
    this.work ??= { plan: { ...plan }, next: 0, claims: new Map() };
    const held = this.work.plan;
    if (held.epochs !== plan.epochs || held.blocksPerEpoch !== plan.blocksPerEpoch) throw planMismatch(held, plan);
    const now = this.now();
    return claimRule(this.work, worker, plan, floor, (w) => (this.leases.get(`worker/${w}`)?.expiresAt ?? 0) > now, now, graceMs);
  }

  async completeWork(worker: string, item: number): Promise<boolean> {
    if (this.work?.claims.get(item)?.worker !== worker) return false;
    this.work.claims.delete(item);
    return true;
  }

  async workProgress(): Promise<WorkProgress | null> {
    if (!this.work) return null;
    // Keyed by worker id, which may be any text ("constructor", "__proto__"): no inherited keys.
    const held = Object.create(null) as Record<string, number[]>;
    for (const [item, c] of [...this.work.claims].sort((a, b) => a[0] - b[0])) (held[c.worker] ??= []).push(item);
    return { plan: { ...this.work.plan }, handedOut: this.work.next, held };
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}

/** Calls a watcher with its own copy of the map; a watcher that throws is logged, never crashes the store's process. */
function notify(listener: (map: ShardMap) => void, map: ShardMap): void {
  try {
    listener(structuredClone(map));
  } catch (err) {
    log.error(`a shard-map watcher failed: ${(err as Error).message}`);
  }
}
