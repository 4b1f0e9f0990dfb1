import { type ClusterConfig } from '../cluster-config.js';
import { ClusterExistsError, MapConflictError } from '../errors.js';
import { type ShardMap, evenAssignment, bulkAddresses } from '../shard-map.js';
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
  return { epoch: 1, slots: config.slots, owners: evenAssignment(Object.keys(addresses), config.slots), addresses, ...bulkAddresses(shards, addresses) };
}

/** The map the shards' published ownership describes, when it covers every slot; a slot claimed twice goes to the newer epoch. */
export function rebuiltMap(shards: MemberInfo[], slots: number): ShardMap | null {
  const serving = shards.filter(servedBefore);
  if (serving.length === 0) return null;
  const owners = new Array<string>(slots);
  const claimedAt = new Array<number>(slots).fill(-1);
  for (const m of serving) {
    for (const r of m.owned!) {
      for (let s = Math.max(0, r.begin); s < Math.min(slots, r.end); s++) {
        if (m.epoch! > claimedAt[s]!) {
          owners[s] = m.id;
          claimedAt[s] = m.epoch!;
        }
      }
    }
  }
  if (claimedAt.some((e) => e < 0)) return null;
  const maxEpoch = Math.max(...serving.map((m) => m.epoch!));
  const used = new Set(owners);
  const addresses = Object.fromEntries(serving.filter((m) => used.has(m.id)).map((m) => [m.id, m.address!]));
  return { epoch: maxEpoch + 1, slots, owners, addresses, ...bulkAddresses(serving, addresses) };
}
