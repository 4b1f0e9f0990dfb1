import { type ShardMap, backupsOf, compactBackups, holdersOnly } from './shard-map.js';

/**
 * The map changes of replication (docs/replication.md), as pure functions
 * of a map and the live shards: who takes over a dead primary's slots, and
 * where a slot short of backups gets its next one. Shards apply them by
 * compare-and-set on the map's epoch, so of two shards that compute the
 * same change at once one writes it and the other reads it.
 */

/** A live shard as its lease describes it: what placing a backup needs. */
export interface ReplicaCandidate {
  id: string;
  address: string;
  bulkAddress?: string;
  /** Its failure domain (`--topology`), if it gave one. */
  topology?: string;
  /** Its state: only a joining or serving shard takes backups. */
  state?: string;
}

export interface Failover {
  map: ShardMap;
  /** Slots given to a backup because their primary is not live: slot, old owner, new owner. */
  promoted: { slot: number; from: string; to: string }[];
  /** Backups dropped from slots because they are not live. */
  dropped: number;
}

/**
 * The map in which every slot whose owner is not in `live` belongs to its
 * first live backup (the order of the map's list: every backup listed holds
 * every acknowledged push, so the first is as good as any and all shards
 * agree on it), and from which every backup not in `live` is gone; null
 * when nothing changes. A slot whose owner is dead and has no live backup
 * keeps its owner: it comes back with that shard (or is reported lost).
 * `holds(id, s)`: whether live shard `id` says it holds slot `s` as a backup
 * (its lease); one that does not — it restarted and has not been copied to
 * again — is not given the slot.
 */
export function failoverMap(map: ShardMap, live: ReadonlySet<string>, holds: (id: string, s: number) => boolean = () => true): Failover | null {
  if (!map.backups) return null;
  const owners = [...map.owners];
  const backups = map.backups.map((b) => [...b]);
  const promoted: Failover['promoted'] = [];
  let dropped = 0;
  for (let s = 0; s < map.slots; s++) {
    const listed = backupsOf(map, s);
    const alive = listed.filter((id) => live.has(id));
    dropped += listed.length - alive.length;
    const heir = alive.findIndex((id) => holds(id, s));
    if (!live.has(owners[s]!) && heir >= 0) {
      promoted.push({ slot: s, from: owners[s]!, to: alive[heir]! });
      owners[s] = alive.splice(heir, 1)[0]!;
    }
    backups[s] = alive;
  }
  if (promoted.length === 0 && dropped === 0) return null;
  const { backups: kept } = compactBackups(backups);
  return {
    map: { epoch: map.epoch + 1, slots: map.slots, owners, ...holdersOnly(owners, kept, map.addresses, map.bulk), ...(kept ? { backups: kept } : {}), ...(map.rollBacks ? { rollBacks: map.rollBacks } : {}) },
    promoted,
    dropped,
  };
}

/**
 * The map in which `target` (at `address`, its bulk port at `bulkAddress`
 * if it serves one) is one more backup of `slots`: what a copy writes once
 * the target holds them (server/migration.ts).
 */
export function withBackup(map: ShardMap, slots: ReadonlySet<number>, target: string, address: string, bulkAddress = ''): ShardMap {
  const backups = map.owners.map((_, s) => {
    const list = [...backupsOf(map, s)];
    return slots.has(s) && !list.includes(target) ? [...list, target] : list;
  });
  const bulk = bulkAddress ? { bulk: { ...map.bulk, [target]: bulkAddress } } : {};
  return { ...map, epoch: map.epoch + 1, addresses: { ...map.addresses, [target]: address }, ...bulk, backups };
}

/**
 * Where the slots `primary` owns that have fewer than `replicas` backups get
 * their next one: the live shard that holds none of the slot yet, in another
 * failure domain than the slot's primary and backups when there is one,
 * holding the fewest slots (owned or backed, counting what this plan gives
 * it), the lowest id on a tie. Returns the target given the most slots, with
 * those slots (one copy at a time), or null when no slot is short or no
 * shard can take one.
 */
export function nextBackups(map: ShardMap, replicas: number, primary: string, candidates: readonly ReplicaCandidate[]): { target: ReplicaCandidate; slots: number[] } | null {
  const usable = candidates.filter((c) => c.id !== primary && c.address && (c.state === undefined || c.state === 'joining' || c.state === 'serving'));
  if (replicas < 1 || usable.length === 0) return null;
  const held = new Map<string, number>(usable.map((c) => [c.id, 0]));
  for (let s = 0; s < map.slots; s++) {
    for (const id of [map.owners[s]!, ...backupsOf(map, s)]) if (held.has(id)) held.set(id, held.get(id)! + 1);
  }
  const domain = new Map(candidates.map((c) => [c.id, c.topology]));
  const given = new Map<string, number[]>();
  for (let s = 0; s < map.slots; s++) {
    if (map.owners[s] !== primary) continue;
    const holders = [primary, ...backupsOf(map, s)];
    if (holders.length - 1 >= replicas) continue;
    const domains = new Set(holders.map((id) => domain.get(id)).filter((d): d is string => d !== undefined));
    const best = usable
      .filter((c) => !holders.includes(c.id))
      .sort((a, b) => Number(a.topology !== undefined && domains.has(a.topology)) - Number(b.topology !== undefined && domains.has(b.topology)) || held.get(a.id)! - held.get(b.id)! || (a.id < b.id ? -1 : 1))[0];
    if (!best) continue;
    held.set(best.id, held.get(best.id)! + 1);
    given.set(best.id, [...(given.get(best.id) ?? []), s]);
  }
  let pick: { target: ReplicaCandidate; slots: number[] } | null = null;
  for (const [id, slots] of given) if (!pick || slots.length > pick.slots.length) pick = { target: usable.find((c) => c.id === id)!, slots };
  return pick;
}
