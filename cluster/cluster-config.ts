import { type ModelSpec, validateModelSpec } from './model-spec.js';
import { validateSparseTables } from './sparse-keys.js';
import { type OptimizerConfig, validateOptimizer } from './optimizer-config.js';
import { DEFAULT_SLOTS } from './slots.js';
import { type Consistency, parseConsistency } from './consistency.js';
import { InvalidArgumentError } from './errors.js';
import { parseCompression } from './wire/gradient-codec.js';

/** What a cluster is, written once when it is created and read by every role. */
export interface ClusterConfig {
  /** Cluster name, part of every membership key. */
  name: string;
  /** Slots S, fixed at creation. Default {@link DEFAULT_SLOTS}. */
  slots: number;
  model: ModelSpec;
  optimizer: OptimizerConfig;
  /** `async`, `ssp:K` or `bsp` (cluster/consistency.ts). */
  consistency: Consistency;
  /**
   * Shards that must hold live leases before the first map is written; the
   * slots are then spread evenly over every live shard. Default 1.
   */
  initialShards?: number;
  /**
   * Under `ssp:K` and `bsp`: workers that must have joined before the first
   * step is let through, so a run's workers start together (a worker that
   * never comes is waited for at most {@link WORKER_START_TIMEOUT_MS}).
   * Default 1.
   */
  initialWorkers?: number;
  /**
   * How workers encode pushed gradients unless told otherwise: `none`,
   * `fp16`, `int8` or `topk:R` (cluster/wire/gradient-codec.ts). Default `none`.
   */
  compression?: string;
  /**
   * Backups R of every slot (docs/replication.md): each slot has a primary
   * and up to R backups on other shards, and a push is acknowledged once
   * every replica in the map holds it. 0 (the default): no backups. Not
   * under bsp, whose open step holds sums not yet applied.
   */
  replicas?: number;
}

/** Most backups a slot may have. */
export const MAX_REPLICAS = 4;

/** How long clocked consistency waits for `initialWorkers` after the first worker joined. */
export const WORKER_START_TIMEOUT_MS = 30_000;

export const DEFAULT_CLUSTER_NAME = 'default';

/**
 * Throws InvalidArgumentError naming what is wrong with `c`, which may come
 * from the network (the membership service's CreateCluster): a document
 * without the shape of a configuration is refused as such, whichever field
 * the checks below trip on first.
 */
export function validateClusterConfig(c: ClusterConfig): void {
  if (typeof c !== 'object' || c === null || typeof c.model !== 'object' || c.model === null || typeof c.optimizer !== 'object' || c.optimizer === null) {
    throw new InvalidArgumentError('a cluster configuration needs a name, slots, a model and an optimizer');
  }
  try {
    checkConfig(c);
  } catch (err) {
    // The checks read fields as the types they document: one of another type is the document's fault.
    if (err instanceof TypeError) throw new InvalidArgumentError(`the cluster configuration has a field of the wrong type (${err.message.slice(0, 80)})`);
    throw err;
  }
}

function checkConfig(c: ClusterConfig): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(c.name)) {
    throw new InvalidArgumentError(`cluster name "${String(c.name).slice(0, 80)}" must be 1–64 letters, digits, '.', '_' or '-'`);
  }
  if (!Number.isInteger(c.slots) || c.slots < 1 || c.slots > 65536) {
    throw new InvalidArgumentError(`slots must be an integer in [1, 65536], got ${c.slots} (default ${DEFAULT_SLOTS})`);
  }
  if (c.initialWorkers !== undefined && (!Number.isInteger(c.initialWorkers) || c.initialWorkers < 1)) throw new InvalidArgumentError(`initial worker count must be a positive integer, got ${c.initialWorkers}`);
  if (c.initialShards !== undefined && (!Number.isInteger(c.initialShards) || c.initialShards < 1)) throw new InvalidArgumentError(`initial shard count must be a positive integer, got ${c.initialShards}`);
  if (c.replicas !== undefined && (!Number.isInteger(c.replicas) || c.replicas < 0 || c.replicas > MAX_REPLICAS)) throw new InvalidArgumentError(`replicas must be an integer in [0, ${MAX_REPLICAS}], got ${c.replicas}`);
  validateModelSpec(c.model);
  validateSparseTables(c.model);
  validateOptimizer(c.optimizer);
  parseConsistency(c.consistency);
  if ((c.replicas ?? 0) > 0 && parseConsistency(c.consistency).kind === 'bsp') throw new InvalidArgumentError('replicas need async or ssp:K consistency: under bsp a step\'s pushes are summed on the primary until the step closes, and a backup could not hold them');
  if (c.compression !== undefined) parseCompression(c.compression);
}
