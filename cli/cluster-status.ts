/**
 * The cluster's status as one object: what `tessera status --json` prints and
 * what `tessera dashboard` serves; read from the membership store alone.
 */
import { NotFoundError } from '../cluster/errors.js';
import { type ShardMap, backupsOf, slotCounts } from '../cluster/shard-map.js';
import { type SlotRange } from '../cluster/slots.js';
import { type MemberInfo, type MembershipStore } from '../cluster/membership/store.js';

/** What `tessera status --json` prints. */
export interface ClusterStatus {
  cluster: string;
  model: string;
  /** async, ssp:K or bsp. */
  consistency: string;
  epoch: number;
  slots: number;
  /** Slots the map gives to no live shard. */
  orphaned_slots: number;
  /** Backups each slot should have (`tessera init --replicas`). */
  replicas: number;
  /** Slots with fewer live backups than `replicas` (a backup being caught up, or none to put one on). */
  under_replicated_slots: number;
  /** Runs of slots with the same primary and backups; each backup with `pending`: updates its primary sent it and it has not acknowledged yet (its lag). */
  replica_sets: { slots: SlotRange; primary: string; backups: { id: string; alive: boolean; pending: number }[] }[];
  /** last_checkpoint: the shard's latest checkpoint file and when it was written; null before its first. */
  /** rolled_back: the shard resumed from a checkpoint taken at `to` after a crash; pushes it acknowledged after then are lost. */
  /** lost_slots: slots the map gives the shard that it holds no values for, refused until restored or reset (`tessera reset-slots`). */
  /** backed_slots: slots the shard holds as a backup; topology: its failure domain (`--topology`), if given. */
  shards: { id: string; address: string; state: string; slots: number; backed_slots: number; topology: string | null; bytes: number; epoch: number; lost_slots: SlotRange[]; rolled_back: { to: string; path: string } | null; last_checkpoint: { path: string; at: string; steps: number } | null }[];
  /** state: training, idle (no block to claim for now); train_epoch: the pass over the data it is in; loss: its latest training loss. */
  workers: { id: string; state: string; step: number; backend: string; train_epoch: number; loss: number | null; held_out: Record<string, number> | null; pushed: { raw: number; wire: number } | null }[];
  /** The run's data: blocks (work items) in all, handed out, held now; null before a worker claimed one. */
  data: { epochs: number; blocks_per_epoch: number; items: number; handed_out: number; held: Record<string, number[]> } | null;
}

/** The cluster's status as the store holds it now. @throws NotFoundError when no cluster is configured. */
export async function readStatus(store: MembershipStore, cluster: string): Promise<ClusterStatus> {
  const [config, map, shards, workers, work] = await Promise.all([store.getConfig(), store.getMap(), store.members('shard'), store.members('worker'), store.workProgress()]);
  if (!config) throw new NotFoundError(`no cluster "${cluster}" in the membership store; create it with \`tessera init\``);
  const counts = map ? slotCounts(map) : new Map<string, number>();
  const live = new Map(shards.map((m) => [m.id, m]));
  const ids = [...new Set([...Object.keys(map?.addresses ?? {}), ...live.keys()])].sort();
  return {
    cluster: config.name,
    model: config.model.name,
    consistency: config.consistency,
    epoch: map?.epoch ?? 0,
    slots: config.slots,
    orphaned_slots: map ? map.owners.filter((id) => !live.has(id)).length : config.slots,
    replicas: config.replicas ?? 0,
    under_replicated_slots: map ? map.owners.filter((_, s) => backupsOf(map, s).filter((b) => live.has(b)).length < (config.replicas ?? 0)).length : 0,
    replica_sets: map && map.backups ? replicaSets(map, live) : [],
    shards: ids.map((id) => {
      const m = live.get(id);
      return {
        id,
        address: m?.address ?? map?.addresses[id] ?? '',
        state: m ? 'alive' : 'dead',
        slots: counts.get(id) ?? 0,
        backed_slots: map ? map.owners.filter((_, s) => backupsOf(map, s).includes(id)).length : 0,
        topology: m?.topology ?? null,
        bytes: m?.bytes ?? 0,
        epoch: m?.epoch ?? 0,
        lost_slots: m?.lost ?? [],
        rolled_back: m?.rolledBack ?? null,
        last_checkpoint: m?.checkpoint ?? null,
      };
    }),
    workers: workers.map((w) => ({ id: w.id, state: w.state ?? 'alive', step: w.step ?? 0, backend: w.backend ?? '', train_epoch: w.trainEpoch ?? 0, loss: w.loss ?? null, held_out: w.heldOut ?? null, pushed: w.pushed ?? null })),
    data: work && {
      epochs: work.plan.epochs,
      blocks_per_epoch: work.plan.blocksPerEpoch,
      items: work.plan.epochs * work.plan.blocksPerEpoch,
      handed_out: work.handedOut,
      held: work.held,
    },
  };
}

/** The map's slots in runs of the same primary and backups, each backup with its lag as its primary's lease reports it. */
function replicaSets(map: ShardMap, live: ReadonlyMap<string, MemberInfo>): ClusterStatus['replica_sets'] {
  const out: ClusterStatus['replica_sets'] = [];
  const key = (s: number) => [map.owners[s], ...backupsOf(map, s)].join(',');
  for (let s = 0; s < map.slots; s++) {
    const last = out[out.length - 1];
    if (last && last.slots.end === s && key(s - 1) === key(s)) {
      last.slots.end = s + 1;
      continue;
    }
    const primary = map.owners[s]!;
    const lag = live.get(primary)?.replication ?? [];
    out.push({ slots: { begin: s, end: s + 1 }, primary, backups: backupsOf(map, s).map((id) => ({ id, alive: live.has(id), pending: lag.find((l) => l.backup === id)?.pending ?? 0 })) });
  }
  return out;
}
