import { InvalidArgumentError, NotFoundError, ShardUnavailableError } from '../cluster/errors.js';
import { dial, unary } from '../cluster/grpc-client.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { shardAdminService } from '../cluster/proto.js';
import { type LoadPlan, type SlotMove, loadPlan, rebalancePlan } from '../cluster/rebalance-plan.js';

/** What a move reported (proto/tessera/v1/admin.proto, MoveSlotsReport). */
export interface MoveOutcome extends SlotMove {
  epoch: number;
  rows: number;
  logEntries: number;
  frozenMs: number;
  totalMs: number;
}

export interface RebalanceOptions {
  /** Shards to empty (they get no slots; stop them once the rebalance is done). */
  drain?: readonly string[];
  /** Plan only: move nothing. */
  dryRun?: boolean;
  /** Slots per move. Default 64. */
  perMove?: number;
  /** Called after each move. */
  onMove?: (outcome: MoveOutcome) => void;
  /**
   * What to even out: `slots`, the count per shard (default), or `load`, the
   * traffic each shard's slots carry (bytes/s, from the shards' leases), each
   * shard brought within `margin` of the mean with the fewest moves
   * (cluster/rebalance-plan.ts, loadPlan).
   */
  by?: 'slots' | 'load';
  /** With `by: 'load'`: how far above the mean a shard may stay. Default 0.1. */
  margin?: number;
  /** With `by: 'load'`: called with the plan and each shard's load before and after it, before any move. */
  onLoadPlan?: (plan: LoadPlan) => void;
}

/** How long one move may take. */
const MOVE_DEADLINE_MS = 600_000;

/**
 * Spreads the slots evenly over the live shards (all but `drain`), live: the
 * plan (cluster/rebalance-plan.ts), then each move asked of its source shard,
 * one after another (docs/migration.md). Returns the plan when `dryRun`, else
 * what each move did.
 *
 * @throws NotFoundError with no map; InvalidArgumentError when draining would
 *   leave no shard, or a target has no live lease; ShardUnavailableError when a
 *   shard that would give slots is dead (before any move); the first move's typed
 *   error that fails (the moves before it stand).
 */
export async function rebalanceCluster(store: MembershipStore, options: RebalanceOptions = {}): Promise<(SlotMove | MoveOutcome)[]> {
  const [map, members] = await Promise.all([store.getMap(), store.members('shard')]);
  if (!map) throw new NotFoundError('the cluster has no shard map yet: nothing to rebalance');
  const drain = new Set(options.drain ?? []);
  // A typo here, then scaling the shards down, would drop slots: a shard to drain must be one the cluster knows.
  const known = new Set([...members.map((m) => m.id), ...Object.keys(map.addresses)]);
  const unknown = [...drain].filter((id) => !known.has(id));
  if (unknown.length > 0) throw new InvalidArgumentError(`no shard ${unknown.join(', ')} in this cluster; its shards are ${[...known].sort().join(', ')}`);
  const live = members.filter((m) => m.address && !drain.has(m.id));
  if (live.length === 0) throw new InvalidArgumentError('no live shard would be left to hold the slots');
  const addresses = new Map(members.map((m) => [m.id, m.address!]));
  const liveIds = live.map((m) => m.id).sort();
  let plan: SlotMove[];
  if (options.by === 'load') {
    // Each slot's traffic as its owner under this map reports it.
    const load = new Map<number, number>();
    for (const m of members) for (const r of m.load ?? []) if (map.owners[r.slot] === m.id) load.set(r.slot, r.bytesPerSec);
    const byLoad = loadPlan(map, liveIds, load, options.margin ?? 0.1, options.perMove ?? 64);
    options.onLoadPlan?.(byLoad);
    plan = byLoad.moves;
  } else {
    plan = rebalancePlan(map, liveIds, options.perMove ?? 64, new Map(members.flatMap((m) => (m.topology ? [[m.id, m.topology] as const] : []))));
  }
  // A move is made by its source shard, from its memory: one that holds no live lease cannot make it.
  const dead = [...new Set(plan.map((m) => m.from))].filter((id) => !addresses.get(id));
  if (dead.length > 0) {
    const held = (id: string) => map.owners.filter((o) => o === id).length;
    throw new ShardUnavailableError(
      `${dead.map((id) => `shard ${id} (${held(id)} slots)`).join(', ')} ${dead.length > 1 ? 'hold' : 'holds'} no live lease: a move is made by the shard that holds the slots, so none of its slots can move until it is back (\`tessera status\` shows it dead). Start it again, from its checkpoint (--resume), then rebalance`,
      dead.map((id) => map.addresses[id] ?? '').join(', '),
    );
  }
  if (options.dryRun) return plan;
  const done: MoveOutcome[] = [];
  for (const move of plan) {
    const from = addresses.get(move.from) ?? map.addresses[move.from];
    if (!from) throw new InvalidArgumentError(`shard ${move.from} holds slots but has no address`);
    const stub = dial(shardAdminService(), from);
    try {
      const request = { slots: move.slots, targetId: move.to, targetAddress: addresses.get(move.to)! };
      const report = await unary<object, Omit<MoveOutcome, keyof SlotMove>>(stub, 'moveSlots', request, MOVE_DEADLINE_MS, from);
      // The report's `slots` is a count; the move's list of slots is kept.
      const outcome = { ...report, ...move };
      done.push(outcome);
      options.onMove?.(outcome);
    } finally {
      stub.close();
    }
  }
  return done;
}
