import { InvalidArgumentError } from '../errors.js';
import { DEFAULT_LEASE } from './lease-options.js';

/**
 * A training run's data as a queue of work items, handed out by the
 * membership store (the tf.data service's "dynamic sharding"): item i is block
 * i mod blocksPerEpoch of epoch ⌊i / blocksPerEpoch⌋. A worker claims an
 * item, trains on its examples and completes it, then claims the next; a
 * worker that joins mid-run simply starts claiming; the items a worker held
 * when its lease expired go to the next worker that claims. So every block of
 * every epoch is trained on in full by exactly one live worker, however the
 * workers come and go.
 */
export interface WorkPlan {
  epochs: number;
  blocksPerEpoch: number;
}

/** What a claim returns: an item to train on, nothing for now (others hold the last items), or the end of the run. */
export type WorkClaim =
  /** `handedOut`: the queue's position after this claim; a worker keeps the highest it saw as its floor. */
  | { kind: 'item'; item: number; handedOut: number }
  | { kind: 'wait' }
  | { kind: 'finished' };

/** The queue's state, for `tessera status`. */
export interface WorkProgress {
  plan: WorkPlan;
  /** Items handed out so far (the next never-claimed item). */
  handedOut: number;
  /** Items held now, by worker. */
  held: Record<string, number[]>;
}

export function totalItems(plan: WorkPlan): number {
  return plan.epochs * plan.blocksPerEpoch;
}

export function validatePlan(plan: WorkPlan): void {
  if (!(Number.isInteger(plan.epochs) && plan.epochs >= 0)) throw new InvalidArgumentError(`a run's epochs must be a non-negative integer, got ${plan.epochs}`);
  if (!(Number.isInteger(plan.blocksPerEpoch) && plan.blocksPerEpoch >= 1)) throw new InvalidArgumentError(`blocks per epoch must be a positive integer, got ${plan.blocksPerEpoch}`);
}

/** The error for a worker whose run differs from the one the queue was made for. */
export function planMismatch(held: WorkPlan, asked: WorkPlan): InvalidArgumentError {
  return new InvalidArgumentError(
    `this cluster's run is ${held.epochs} epochs of ${held.blocksPerEpoch} blocks, but this worker asks for ${asked.epochs} of ${asked.blocksPerEpoch}; start workers with the same --epochs and --block-size (or create the cluster anew)`,
  );
}

/** How long a claim is kept from a holder whose lease is missing, unless the claimer says: the default lease TTL. */
export const DEFAULT_CLAIM_GRACE_MS = DEFAULT_LEASE.ttlMs;

/** Who holds an item, and since when (ms, the store's clock). */
export interface Claim {
  worker: string;
  at: number;
}

/**
 * The claim rule both stores implement (the Redis store in Lua): the lowest
 * item held by a worker that is not live — its lease is gone and it claimed
 * the item at least `graceMs` ago, so a store that lost its data (leases
 * included) does not hand a block away before its holder could re-register —
 * or by the claimer itself (it restarted) is handed over first; else the next never-claimed item, at or
 * after `floor` (the highest queue position the worker has seen, which
 * restores the queue's position if the store lost its data: blocks handed
 * out after that worker's last claim may then be handed out again); else wait while items are held; else
 * the run is finished.
 */
export function claimRule(
  state: { next: number; claims: Map<number, Claim> },
  worker: string,
  plan: WorkPlan,
  floor: number,
  isLive: (worker: string) => boolean,
  now: number,
  graceMs: number,
): WorkClaim {
  let best = -1;
  for (const [item, c] of state.claims) {
    const gone = c.worker === worker || (!isLive(c.worker) && now - c.at >= graceMs);
    if (gone && (best < 0 || item < best)) best = item;
  }
  if (best >= 0) {
    state.claims.set(best, { worker, at: now });
    return { kind: 'item', item: best, handedOut: Math.max(state.next, floor) };
  }
  state.next = Math.max(state.next, floor);
  if (state.next < totalItems(plan)) {
    const item = state.next++;
    state.claims.set(item, { worker, at: now });
    return { kind: 'item', item, handedOut: state.next };
  }
  return state.claims.size > 0 ? { kind: 'wait' } : { kind: 'finished' };
}
