import { type ClusterConfig } from '../cluster-config.js';
import { ClusterExistsError, MapConflictError } from '../errors.js';
import { type ShardMap, compactBackups, evenAssignment, bulkAddresses } from '../shard-map.js';
import { type MemberInfo, type MembershipStore } from './store.js';

/**
 * How a cluster gets its map without a manual step, run by every shard while
 * the store holds no map:
 *
 * - **First map.** Once `config.initialShards` shards hold live leases, the
 *   slots are spread evenly over every live shard at epoch 1.
 * - **Rebuilt map.** If the store lost its data (Redis restarted empty) while
 *   shards still serve, each shard's lease publishes the epoch it serves under
 *   and the slots it owns; once those cover every slot, the map is rebuilt
 *   from them at an epoch above every shard's, so no slot is lost and every
 *   cached map is older than the new one.
 *
 * Every write is a compare-and-set on "no map yet": when several shards try at
 * once, one wins and the others read its map.
 */
export type Reconciled = 'present' | 'waiting' | 'created' | 'rebuilt';

export async function reconcileMap(store: MembershipStore, config: ClusterConfig): Promise<Reconciled> {
  if (await store.getMap()) return 'present';
  // The store may have lost the configuration too: put back the one this process runs with.
  if (!(await store.getConfig())) {
    await store.createCluster(config).catch((err: unknown) => {
      if (!(err instanceof ClusterExistsError)) throw err;
    });
  }
  const shards = (await store.members('shard')).filter((m) => m.address);
  const next = rebuiltMap(shards, config.slots) ?? (shards.some(servedBefore) ? null : firstMap(shards, config));
  if (!next) return 'waiting';
  try {
    await store.casMap(0, next);
    return next.epoch === 1 ? 'created' : 'rebuilt';
  } catch (err) {
    if (err instanceof MapConflictError) return 'present';
    throw err;
  }
}

function servedBefore(m: MemberInfo): boolean {
  return (m.epoch ?? 0) > 0 && (m.owned?.length ?? 0) > 0;
}

function firstMap(shards: MemberInfo[], config: ClusterConfig): ShardMap | null {
  if (shards.length < (config.initialShards ?? 1)) return null;
  const addresses = Object.fromEntries(shards.map((m) => [m.id, m.address!]));
  const owners = evenAssignment(Object.keys(addresses), config.slots);
  return { epoch: 1, slots: config.slots, owners, addresses, ...bulkAddresses(shards, addresses), ...compactBackups(firstBackups(owners, shards, config.replicas ?? 0)) };
}

/**
 * The backups of a new cluster's slots (every shard starts them from the
 * same initial values, so none needs a copy): for the slots of each owner,
 * the `replicas` shards that follow it in id order, those of other failure
 * domains (`topology`) first. Fewer when there are not enough shards.
 */
export function firstBackups(owners: readonly string[], shards: readonly Pick<MemberInfo, 'id' | 'topology'>[], replicas: number): string[][] {
  const ids = [...new Set(shards.map((m) => m.id))].sort();
  const domain = new Map(shards.map((m) => [m.id, m.topology]));
  const chosen = new Map<string, string[]>();
  for (const owner of new Set(owners)) {
    const at = ids.indexOf(owner);
    const ring = [...ids.slice(at + 1), ...ids.slice(0, at)];
    const picked: string[] = [];
    const domains = new Set<string | undefined>([domain.get(owner)]);
    const apart = (id: string) => domain.get(id) === undefined || !domains.has(domain.get(id));
    for (let k = 0; k < replicas && picked.length < ring.length; k++) {
      const next = ring.find((id) => !picked.includes(id) && apart(id)) ?? ring.find((id) => !picked.includes(id))!;
      picked.push(next);
      domains.add(domain.get(next));
    }
    chosen.set(owner, picked);
  }
  return owners.map((o) => [...chosen.get(o)!]);
}

/**
 * The map the shards' published ownership describes, when it covers every
 * slot; a slot claimed twice goes to the newer epoch. A slot no live shard
 * owns goes to a shard that backs it up (its owner died with the store), and
 * the other shards that back a slot up stay its backups.
 */
export function rebuiltMap(shards: MemberInfo[], slots: number): ShardMap | null {
  const serving = shards.filter((m) => servedBefore(m) || ((m.epoch ?? 0) > 0 && (m.backed?.length ?? 0) > 0));
  if (serving.length === 0) return null;
  const owners = new Array<string>(slots);
  const claimedAt = new Array<number>(slots).fill(-1);
  const claim = (m: MemberInfo, ranges: MemberInfo['owned']) => {
    for (const r of ranges ?? []) {
      for (let s = Math.max(0, r.begin); s < Math.min(slots, r.end); s++) {
        if (m.epoch! > claimedAt[s]!) {
          owners[s] = m.id;
          claimedAt[s] = m.epoch!;
        }
      }
    }
  };
  for (const m of serving) claim(m, m.owned);
  // Slots whose owner is gone: their backups, at the newest epoch, promoted.
  const orphaned = new Set(claimedAt.flatMap((e, s) => (e < 0 ? [s] : [])));
  for (const m of serving) claim(m, (m.backed ?? []).flatMap((r) => range(r.begin, r.end).filter((s) => orphaned.has(s)).map((s) => ({ begin: s, end: s + 1 }))));
  if (claimedAt.some((e) => e < 0)) return null;
  const backups = owners.map(() => [] as string[]);
  for (const m of [...serving].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    for (const r of m.backed ?? []) for (const s of range(Math.max(0, r.begin), Math.min(slots, r.end))) if (owners[s] !== m.id) backups[s]!.push(m.id);
  }
  const maxEpoch = Math.max(...serving.map((m) => m.epoch!));
  const kept = compactBackups(backups);
  const used = new Set([...owners, ...backups.flat()]);
  const addresses = Object.fromEntries(serving.filter((m) => used.has(m.id)).map((m) => [m.id, m.address!]));
  return { epoch: maxEpoch + 1, slots, owners, addresses, ...bulkAddresses(serving, addresses), ...kept };
}

function range(begin: number, end: number): number[] {
  return Array.from({ length: Math.max(0, end - begin) }, (_, i) => begin + i);
}
