/**
 * The cluster's status as one object: what `tessera status --json` prints and
 * what `tessera dashboard` serves; read from the membership store alone.
 */
import { NotFoundError } from '../cluster/errors.js';
import { slotCounts } from '../cluster/shard-map.js';
import { type SlotRange } from '../cluster/slots.js';
import { type MembershipStore } from '../cluster/membership/store.js';

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
  /** last_checkpoint: the shard's latest checkpoint file and when it was written; null before its first. */
  /** rolled_back: the shard resumed from a checkpoint taken at `to` after a crash; pushes it acknowledged after then are lost. */
  /** lost_slots: slots the map gives the shard that it holds no values for, refused until restored or reset (`tessera reset-slots`). */
  shards: { id: string; address: string; state: string; slots: number; bytes: number; epoch: number; lost_slots: SlotRange[]; rolled_back: { to: string; path: string } | null; last_checkpoint: { path: string; at: string; steps: number } | null }[];
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
    shards: ids.map((id) => {
      const m = live.get(id);
      return {
        id,
        address: m?.address ?? map?.addresses[id] ?? '',
        state: m ? 'alive' : 'dead',
        slots: counts.get(id) ?? 0,
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
