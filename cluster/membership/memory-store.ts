import { type ClusterConfig, validateClusterConfig } from '../cluster-config.js';
import { ClusterExistsError, InvalidArgumentError, MapConflictError } from '../errors.js';
import { type ShardMap, validateMap } from '../shard-map.js';
import { createLogger } from '../log.js';
import { type MemberInfo, type MemberKind, type MembershipStore } from './store.js';

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

  constructor(private readonly now: () => number = Date.now) {}

  async getConfig(): Promise<ClusterConfig | null> {
    return this.config && structuredClone(this.config);
  }

  async createCluster(config: ClusterConfig, force = false): Promise<void> {
    validateClusterConfig(config);
    if (this.config && !force) throw new ClusterExistsError(`cluster "${this.config.name}" already exists; pass --force to overwrite its configuration`);
    this.config = structuredClone(config);
    if (force) this.map = null;
  }

  async getMap(): Promise<ShardMap | null> {
    return this.map && structuredClone(this.map);
  }

  async casMap(expectedEpoch: number, next: ShardMap): Promise<void> {
    const actual = this.map?.epoch ?? 0;
    if (actual !== expectedEpoch) throw new MapConflictError(expectedEpoch, actual);
    if (!(next.epoch > expectedEpoch)) throw new InvalidArgumentError(`a new shard map must have an epoch above ${expectedEpoch}, got ${next.epoch}`);
    validateMap(next);
    this.map = structuredClone(next);
    for (const l of this.listeners) queueMicrotask(() => notify(l, next));
  }

  async register(kind: MemberKind, member: MemberInfo, ttlMs: number): Promise<void> {
    if (!member.id) throw new InvalidArgumentError('a member needs an id');
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
