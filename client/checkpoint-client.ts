import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { NotFoundError, StepAheadError, TesseraError } from '../cluster/errors.js';
import { DEFAULT_DEADLINE_MS, dial, unary } from '../cluster/grpc-client.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { shardAdminService, shardService } from '../cluster/proto.js';

/** What one shard reported of its checkpoint, and the address it was asked at. */
export interface ShardCheckpoint extends CheckpointInfo {
  address: string;
}

/** One shard's answer: its checkpoint, or the typed error it gave. */
export type CheckpointOutcome = { ok: true; checkpoint: ShardCheckpoint } | { ok: false; shardId: string; address: string; error: TesseraError };

/** How long a shard may take to write its file. Default 10 minutes. */
export const CHECKPOINT_DEADLINE_MS = 600_000;

/** Under bsp, how often a checkpoint is tried again when a shard had already passed the step chosen. */
const ALIGN_ATTEMPTS = 3;
/** Under bsp, how long the clocks are watched to tell a running cluster from an idle one. */
const ALIGN_SAMPLE_MS = 200;

/**
 * Asks every shard of the map to write a checkpoint into its own checkpoint
 * directory (its `--checkpoint-dir`), all at once, and reports each shard's
 * outcome. `name` '' writes each shard's own file (the one `--resume` reads);
 * another name `<shard id>.<name>.tessera-checkpoint` beside it. Each
 * shard's file is a snapshot at one instant of that shard. Under bsp every
 * shard takes it when the same number of steps is applied, so the files
 * together are one state of the run: the steps applied now if the clocks
 * stand still, else a step about half a second ahead at the pace they move
 * (each shard closes no step past it until its snapshot is taken; if one had
 * already passed it, the whole checkpoint is taken again further ahead, up
 * to 3 times). Under async and ssp the shards take theirs at about the same
 * time, not at one common instant (docs/checkpoints.md).
 *
 * @throws NotFoundError when the store holds no map yet.
 */
export async function checkpointCluster(store: MembershipStore, name = '', deadlineMs = CHECKPOINT_DEADLINE_MS): Promise<CheckpointOutcome[]> {
  const [map, config] = await Promise.all([store.getMap(), store.getConfig()]);
  if (!map) throw new NotFoundError('the cluster has no shard map yet: no shard has joined, so there is nothing to checkpoint');
  const shards = Object.entries(map.addresses);
  return atAlignedStep(
    shards.map(([, address]) => address),
    config?.consistency === 'bsp',
    deadlineMs,
    (atStep) => Promise.all(shards.map(([id, address]) => checkpointShard(id, address, name, atStep, deadlineMs))),
    (outcomes) => outcomes.some((o) => !o.ok && o.error instanceof StepAheadError),
  );
}

/**
 * Runs `take(atStep)` — one request to every shard, each to snapshot at
 * `atStep` — so that under bsp every shard snapshots the same state of the
 * run. Not under bsp (`bsp` false): `take(0)` once (each shard now). Under
 * bsp the clocks of the shards at `addresses` are read twice, 200 ms apart:
 * if they stand still, the step they are at; if they move, a step about half
 * a second ahead at their pace. When `passed(result)` says a shard had
 * already passed the step chosen, it is all taken again further ahead (twice
 * as far each time), up to 3 times; the last result is returned whatever it is.
 */
export async function atAlignedStep<T>(addresses: readonly string[], bsp: boolean, deadlineMs: number, take: (atStep: number) => Promise<T>, passed: (result: T) => boolean): Promise<T> {
  if (!bsp) return take(0);
  const clock = async () => Math.max(0, ...(await Promise.all(addresses.map((address) => describeClock(address, deadlineMs)))));
  for (let attempt = 1; ; attempt++) {
    const before = await clock();
    await new Promise((r) => setTimeout(r, ALIGN_SAMPLE_MS));
    const now = await clock();
    const pace = (now - before) / ALIGN_SAMPLE_MS; // steps per ms
    const atStep = now === before ? now : now + 1 + Math.ceil(pace * 500 * 2 ** (attempt - 1));
    const result = await take(atStep);
    if (attempt === ALIGN_ATTEMPTS || !passed(result)) return result;
  }
}

/** One shard's checkpoint, or the typed error it answered. */
async function checkpointShard(shardId: string, address: string, name: string, atStep: number, deadlineMs: number): Promise<CheckpointOutcome> {
  const stub = dial(shardAdminService(), address);
  try {
    const info = await unary<object, CheckpointInfo>(stub, 'checkpoint', { name, atStep }, deadlineMs, address);
    return { ok: true, checkpoint: { ...info, address } };
  } catch (err) {
    return { ok: false, shardId, address, error: err as TesseraError };
  } finally {
    stub.close();
  }
}

/** A shard's clock from its Describe (under bsp: the steps it has applied). */
async function describeClock(address: string, deadlineMs: number): Promise<number> {
  const stub = dial(shardService(), address);
  try {
    return (await unary<object, { clock: number }>(stub, 'describe', {}, Math.min(deadlineMs, DEFAULT_DEADLINE_MS), address)).clock;
  } finally {
    stub.close();
  }
}
