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
  /**
   * backups[s]: the shards holding a replica of slot s besides its owner,
   * in the order they take over (docs/replication.md). Every one holds every
   * push acknowledged for the slot. Absent, or an empty list: no backups.
   */
  backups?: string[][];
  /**
   * The latest roll-backs (at most {@link MAX_ROLL_BACK_NOTICES}): a shard
   * that crashed resumed from a checkpoint taken at `to`, and the pushes it
   * had acknowledged since are lost; `epoch` is the map that said so.
   * Clients log each one they see come in (docs/checkpoints.md).
   */
  rollBacks?: { shard: string; to: string; epoch: number }[];
}

/** Roll-back notices a map keeps. */
export const MAX_ROLL_BACK_NOTICES = 8;

/** The backups of slot `s` in `map` (none when it has none). */
export function backupsOf(map: ShardMap, s: number): readonly string[] {
  return map.backups?.[s] ?? [];
}

/** The runs of consecutive slots that `shardId` holds as a backup, in slot order. */
export function backedRanges(map: ShardMap, shardId: string): SlotRange[] {
  return runsOf(map.slots, (s) => backupsOf(map, s).includes(shardId));
}

/** `addresses` (and `bulk`) cut to the shards that own or back up a slot in `owners` and `backups`. */
export function holdersOnly(owners: readonly string[], backups: readonly (readonly string[])[] | undefined, addresses: Record<string, string>, bulk?: Record<string, string>): Pick<ShardMap, 'addresses' | 'bulk'> {
  const holders = new Set(owners);
  for (const list of backups ?? []) for (const id of list) holders.add(id);
  const keep = (r: Record<string, string>) => Object.fromEntries(Object.entries(r).filter(([id]) => holders.has(id)));
  const b = bulk ? keep(bulk) : {};
  return { addresses: keep(addresses), ...(Object.keys(b).length > 0 ? { bulk: b } : {}) };
}

/** `backups` with no slot left without a list entry, or nothing at all when no slot has a backup (a map without replicas stays as it was). */
export function compactBackups(backups: readonly (readonly string[])[]): { backups?: string[][] } {
  return backups.some((b) => b.length > 0) ? { backups: backups.map((b) => [...b]) } : {};
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
  const located = (id: unknown) => typeof id === 'string' && id !== '' && Object.hasOwn(map.addresses, id) && Boolean(map.addresses[id]);
  for (let s = 0; s < map.slots; s++) {
    // Own keys only: an owner named "constructor" has no address, whatever Object.prototype holds.
    if (!located(map.owners[s])) throw new InvalidArgumentError(`slot ${s} has no owner with an address in the shard map`);
  }
  if (map.rollBacks !== undefined && !(Array.isArray(map.rollBacks) && map.rollBacks.every((n) => typeof n === 'object' && n !== null && typeof n.shard === 'string' && typeof n.to === 'string' && Number.isInteger(n.epoch)))) {
    throw new InvalidArgumentError('shard map roll-back notices must be a list of {shard, to, epoch}');
  }
  if (map.backups === undefined) return;
  if (!Array.isArray(map.backups) || map.backups.length !== map.slots) throw new InvalidArgumentError(`shard map lists backups for ${Array.isArray(map.backups) ? map.backups.length : 'no list of'} slots, not ${map.slots}`);
  for (let s = 0; s < map.slots; s++) {
    const list: unknown = map.backups[s];
    if (!Array.isArray(list)) throw new InvalidArgumentError(`slot ${s}'s backups are not a list of shard ids`);
    for (const id of list) {
      if (!located(id)) throw new InvalidArgumentError(`slot ${s} has a backup without an address in the shard map`);
      if (id === map.owners[s]) throw new InvalidArgumentError(`slot ${s}'s owner ${String(id).slice(0, 80)} is also listed as its backup`);
    }
    if (new Set(list).size !== list.length) throw new InvalidArgumentError(`slot ${s} lists a backup twice`);
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
  return runsOf(map.slots, (s) => map.owners[s] === shardId);
}

/** The runs of consecutive slots among `slots` for which `has` holds. */
function runsOf(slots: number, has: (s: number) => boolean): SlotRange[] {
  const out: SlotRange[] = [];
  for (let s = 0; s < slots; s++) {
    if (!has(s)) continue;
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
