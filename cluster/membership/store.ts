import { type ClusterConfig } from '../cluster-config.js';
import { type ShardMap } from '../shard-map.js';
import { type SlotRange } from '../slots.js';
import { type WorkClaim, type WorkPlan, type WorkProgress } from './work-queue.js';

/** The roles that hold leases. */
export type MemberKind = 'shard' | 'worker';

/** The lease state of a worker that has no data to train on for now: it holds no one back under ssp/bsp. */
export const IDLE_WORKER_STATE = 'idle';

/** What a member publishes about itself with its lease. */
export interface MemberInfo {
  id: string;
  /** "host:port" where a shard serves. */
  address?: string;
  /** "host:port" of a shard's bulk transport, when it serves one. */
  bulkAddress?: string;
  /** Lifecycle state (joining, serving, training, draining…). */
  state?: string;
  /** A worker's step count. */
  step?: number;
  /** The pass over the data a worker is in (from 0), and its latest training loss. */
  trainEpoch?: number;
  loss?: number;
  /** A worker's latest held-out evaluation (test_accuracy; test_auc for ctr), and the epoch it followed. */
  heldOut?: Record<string, number>;
  heldOutEpoch?: number;
  /** A worker's compute backend. */
  backend?: string;
  /** Bytes of dense gradient a worker has pushed: as float32 and on the wire (after its codec). */
  pushed?: { raw: number; wire: number };
  /** Bytes a shard holds (values + optimizer state). */
  bytes?: number;
  /** The map epoch a shard serves under. */
  epoch?: number;
  /** The slots a shard owns under that epoch: what rebuilds the map if the store loses it. */
  owned?: SlotRange[];
  /** The slots a shard holds as a backup under that epoch (docs/replication.md): with `owned`, what rebuilds the map's replicas if the store loses it. */
  backed?: SlotRange[];
  /** A shard's failure domain (`--topology`: a node, rack or zone name): the backups of a slot are put in other domains than its primary when there are any. */
  topology?: string;
  /** A primary's backups and how far each is behind: updates sent and not yet acknowledged by it. */
  replication?: { backup: string; pending: number; slots: number }[];
  /** The traffic of a shard's slots, bytes/s per slot with any (an exponentially weighted rate, one-minute half-life): what `tessera rebalance --by load` reads. */
  load?: { slot: number; bytesPerSec: number }[];
  /** Slots the map gives a shard that it holds no values for, refused until restored or reset (Shard.lost). */
  lost?: SlotRange[];
  /** A shard that resumed from a checkpoint older than its last acknowledgement (it had crashed): when that checkpoint was taken, and the file. Pushes it acknowledged after then are lost. */
  rolledBack?: { to: string; path: string };
  /** A shard's latest checkpoint: the file, when it was written (ISO 8601), and under bsp the steps in it. */
  checkpoint?: { path: string; at: string; steps: number };
}

/**
 * Why `member` cannot be published with a lease, or null when it can. A lease
 * may come from the network (the membership service's Register), and every
 * role reads the members back: shards build and rebuild the map from their
 * ids, addresses, epochs and owned slots, and sort members by id. So those
 * fields must have their types, or one bad lease would fail every reader.
 */
export function badMember(member: unknown): string | null {
  if (typeof member !== 'object' || member === null || Array.isArray(member)) return 'a member must be an object with an id';
  const m = member as Record<string, unknown>;
  if (typeof m['id'] !== 'string' || m['id'] === '') return 'a member needs an id (non-empty text)';
  for (const field of ['address', 'bulkAddress', 'state', 'topology']) if (m[field] !== undefined && typeof m[field] !== 'string') return `a member's ${field} must be text`;
  if (m['epoch'] !== undefined && typeof m['epoch'] !== 'number') return "a member's epoch must be a number";
  for (const field of ['owned', 'backed'] as const) {
    const ranges = m[field];
    if (ranges !== undefined && !(Array.isArray(ranges) && ranges.every((r: unknown) => typeof r === 'object' && r !== null && typeof (r as Record<string, unknown>)['begin'] === 'number' && typeof (r as Record<string, unknown>)['end'] === 'number'))) {
      return `a member's ${field} slots must be a list of {begin, end} ranges`;
    }
  }
  return null;
}

/**
 * The cluster's source of truth: its configuration (written once), the shard
 * map (changed only by compare-and-set on the epoch) and the live members
 * (held by leases). The embedded store and the Redis store have the same
 * semantics; every role talks to this interface only.
 */
export interface MembershipStore {
  /** The configuration, or null before the cluster is created. */
  getConfig(): Promise<ClusterConfig | null>;
  /** Writes the configuration; a second call fails with ClusterExistsError unless `force`. */
  createCluster(config: ClusterConfig, force?: boolean): Promise<void>;
  /** The current map, or null before the first one is written. */
  getMap(): Promise<ShardMap | null>;
  /**
   * Replaces the map if its epoch is still `expectedEpoch` (0: no map yet),
   * else throws MapConflictError and writes nothing. `next.epoch` must be
   * greater than `expectedEpoch`: `expectedEpoch + 1` for a change, higher when
   * a map lost by the store is rebuilt from what the shards hold.
   */
  casMap(expectedEpoch: number, next: ShardMap): Promise<void>;
  /** Creates or renews a member's lease for `ttlMs`. */
  register(kind: MemberKind, member: MemberInfo, ttlMs: number): Promise<void>;
  /** Drops a member's lease at once (clean shutdown). */
  deregister(kind: MemberKind, id: string): Promise<void>;
  /** Members whose lease has not expired. */
  members(kind: MemberKind): Promise<MemberInfo[]>;
  /** Calls `listener` with every new map (and the current one, if any, soon after). Returns an unsubscribe function. */
  watchMap(listener: (map: ShardMap) => void): () => void;
  /**
   * Hands `worker` the next item of the run's data (see work-queue.ts). The
   * first claim fixes the plan; a claim with another plan fails with
   * InvalidArgumentError. `floor` is the highest queue position this worker
   * has seen; `graceMs` how long a claim stays with a holder whose lease is
   * missing (the workers' lease TTL; default DEFAULT_CLAIM_GRACE_MS).
   */
  claimWork(worker: string, plan: WorkPlan, floor: number, graceMs?: number): Promise<WorkClaim>;
  /** Marks `item` done if `worker` still holds it; returns whether it did. */
  completeWork(worker: string, item: number): Promise<boolean>;
  /** Where the run's data stands, or null before the first claim. */
  workProgress(): Promise<WorkProgress | null>;
  close(): Promise<void>;
}
