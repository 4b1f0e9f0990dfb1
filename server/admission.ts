import { InvalidArgumentError } from '../cluster/errors.js';
import { badWorkerId } from '../cluster/worker-id.js';
import { type SlotRange } from '../cluster/slots.js';
import { type ClockGate } from './clock-gate.js';
import { type Shard } from './shard.js';
import { type SparsePullInput, type SparseStore } from './sparse-store.js';

/**
 * How long a clocked pull (ssp, bsp) may wait for slower workers before it is
 * answered with a clock-timeout error: below the client's default deadline
 * (60 s), so the caller learns why rather than just that it timed out. Kept
 * here rather than in clock-gate.ts: the gate is the mechanism and takes any
 * timeout; this is the serving policy, tied to what the edges' callers expect.
 */
export const CLOCK_WAIT_MS = 45_000;

/** Who waits at the clock gate, and for which step. */
export interface GateTicket {
  /** The worker the gate counts (the edge may fall back to the peer's address). */
  workerId: string;
  /** The step the pull is for; absent, the pull is not clocked and never waits. */
  clock?: number;
  /** The worker's first clocked pull since it (re)started (see ClockGate.beforePull). */
  join?: boolean;
}

/** A dense pull as an edge parsed it. */
export interface DensePullAdmission extends GateTicket {
  epoch: number;
  ranges: readonly SlotRange[];
  model?: string;
}

/**
 * The checks shared by every pull: when the pull is clocked, `check` refuses a
 * bad request at once (not after waiting), then the pull waits at `gate`
 * for its step. The caller checks again afterwards: the map may have moved
 * on while it waited.
 */
async function waitAtGate(gate: ClockGate, ticket: GateTicket, check: () => void): Promise<number> {
  if (ticket.clock === undefined) return 0;
  // A clocked pull counts its worker at the gate: the same id rules as a push's.
  const bad = badWorkerId(ticket.workerId);
  if (bad) throw new InvalidArgumentError(bad);
  check();
  const started = performance.now();
  await gate.beforePull(ticket.workerId, ticket.clock, Boolean(ticket.join), CLOCK_WAIT_MS);
  return (performance.now() - started) / 1000;
}

/**
 * Admits a dense pull (gRPC and bulk alike): ownership, ranges, epoch and
 * model are checked; a clocked pull then waits at the shard's clock gate and
 * is checked again. Returns once the pull may be served, with the seconds
 * it waited at the gate (0 for a pull that is not clocked).
 *
 * @throws the typed error of Shard.check, or ClockTimeoutError after {@link CLOCK_WAIT_MS}.
 */
export async function admitPull(shard: Shard, req: DensePullAdmission): Promise<number> {
  const check = () => shard.check(req.epoch, req.ranges, req.model);
  const waited = await waitAtGate(shard.gate, req, check);
  check();
  shard.countTraffic(req.ranges);
  return waited;
}

/**
 * Admits a sparse pull: the same gate as {@link admitPull}, but the check
 * after the wait is left to `store.pull`, which runs SparseStore.checkPull
 * itself and reads the rows with what it computed (the ids grouped by slot);
 * checking here as well would hash every id twice. So an unclocked sparse
 * pull is checked only by `store.pull`, once, as before. Returns the seconds
 * the pull waited at the gate (0 for a pull that is not clocked).
 *
 * @throws the typed error of SparseStore.checkPull, or ClockTimeoutError after {@link CLOCK_WAIT_MS}.
 */
export async function admitSparsePull(store: SparseStore, gate: ClockGate, req: SparsePullInput & GateTicket): Promise<number> {
  return waitAtGate(gate, req, () => store.checkPull(req));
}
