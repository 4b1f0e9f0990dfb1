import { type SlotRange } from './slots.js';
import { InvalidArgumentError } from './errors.js';

/**
 * The shard map: which shard owns each slot, at which address it listens, and
 * the epoch that orders every change. Redis (or the embedded store) holds the
 * truth; every process caches it.
 */
export interface ShardMap {
  /** Grows by one at every change. */
  epoch: number;
  /** Number of slots S. */
  slots: number;
  /** owners[s] is the id of the shard that owns slot s. */
  owners: string[];
  /** Shard id → "host:port". */
  addresses: Record<string, string>;
  /**
   * Shard id → "host:port" of its bulk transport (docs/wire-protocol.md), for
   * the shards that serve one and published it with their lease; a client
   * asks a shard missing here with Describe.
   */
  bulk?: Record<string, string>;
}

/** The `bulk` entries of `members` among the shards `addresses` names, or nothing when none has one. */
export function bulkAddresses(members: readonly { id: string; bulkAddress?: string }[], addresses: Record<string, string>): { bulk?: Record<string, string> } {
  const bulk = Object.fromEntries(members.filter((m) => m.bulkAddress && addresses[m.id] !== undefined).map((m) => [m.id, m.bulkAddress!]));
  return Object.keys(bulk).length > 0 ? { bulk } : {};
}

/**
 * Throws unless `map` is a map of the cluster whose configuration has
 * `slots` slots: the shape {@link validateMap} checks, every owner and
 * address a string, and the cluster's slot count. What a shard or a client
 * checks before it adopts a map from the store (a map it cannot use is
 * refused, and it serves on with the one it has).
 */
export function checkMapFor(slots: number, map: unknown): asserts map is ShardMap {
  const m = map as ShardMap;
  validateMap(m);
  if (m.slots !== slots) throw new InvalidArgumentError(`shard map has ${m.slots} slots but the cluster has ${slots}`);
  for (const [id, address] of Object.entries(m.addresses)) if (typeof address !== 'string') throw new InvalidArgumentError(`shard map gives shard "${id.slice(0, 80)}" a non-text address`);
  if (m.owners.some((o) => typeof o !== 'string')) throw new InvalidArgumentError('shard map names a slot owner that is not a shard id');
}

/** Throws unless every slot is owned by a shard that has an address (and `map` has the shape of a map: it may come from the network). */
export function validateMap(map: ShardMap): void {
  if (typeof map !== 'object' || map === null || !Array.isArray(map.owners) || typeof map.addresses !== 'object' || map.addresses === null) {
    throw new InvalidArgumentError('a shard map needs an epoch, a slot count, owners and addresses');
  }
  if (!Number.isInteger(map.epoch) || map.epoch < 1) throw new InvalidArgumentError(`shard map epoch must be a positive integer, got ${map.epoch}`);
  if (!Number.isInteger(map.slots) || map.slots < 1) throw new InvalidArgumentError(`shard map must have at least one slot, got ${map.slots}`);
  if (map.owners.length !== map.slots) {
    throw new InvalidArgumentError(`shard map lists ${map.owners.length} owners for ${map.slots} slots`);
  }
  for (let s = 0; s < map.slots; s++) {
    const owner = map.owners[s];
    // Own keys only: an owner named "constructor" has no address, whatever Object.prototype holds.
    if (typeof owner !== 'string' || !owner || !Object.hasOwn(map.addresses, owner) || !map.addresses[owner]) throw new InvalidArgumentError(`slot ${s} has no owner with an address in the shard map`);
  }
}

/** Spreads S slots over the shards in contiguous, even runs (sizes differ by at most one). */
export function evenAssignment(shardIds: readonly string[], slots: number): string[] {
  if (shardIds.length === 0) throw new InvalidArgumentError('cannot assign slots to zero shards');
  const ids = [...shardIds].sort();
  const owners = new Array<string>(slots);
  for (let i = 0; i < ids.length; i++) {
    const begin = Math.floor((i * slots) / ids.length);
    const end = Math.floor(((i + 1) * slots) / ids.length);
    for (let s = begin; s < end; s++) owners[s] = ids[i]!;
  }
  return owners;
}

/** The runs of consecutive slots that `shardId` owns, in slot order. */
export function ownedRanges(map: ShardMap, shardId: string): SlotRange[] {
  const out: SlotRange[] = [];
  for (let s = 0; s < map.slots; s++) {
    if (map.owners[s] !== shardId) continue;
    const last = out[out.length - 1];
    if (last && last.end === s) last.end = s + 1;
    else out.push({ begin: s, end: s + 1 });
  }
  return out;
}

/** How many slots each shard owns. */
export function slotCounts(map: ShardMap): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of Object.keys(map.addresses)) counts.set(id, 0);
  for (const owner of map.owners) counts.set(owner, (counts.get(owner) ?? 0) + 1);
  return counts;
}
