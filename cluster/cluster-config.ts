import { type ModelSpec, validateModelSpec } from './model-spec.js';
import { validateSparseTables } from './sparse-keys.js';
import { type OptimizerConfig, validateOptimizer } from './optimizer-config.js';
import { DEFAULT_SLOTS } from './slots.js';
import { InvalidArgumentError } from './errors.js';

/** Consistency models; only `async` so far. */
export type Consistency = 'async';

/** What a cluster is, written once when it is created and read by every role. */
export interface ClusterConfig {
  /** Cluster name, part of every membership key. */
  name: string;
  /** Slots S, fixed at creation. Default {@link DEFAULT_SLOTS}. */
  slots: number;
  model: ModelSpec;
  optimizer: OptimizerConfig;
  consistency: Consistency;
  /**
   * Shards that must hold live leases before the first map is written; the
   * slots are then spread evenly over every live shard. Default 1.
   */
  initialShards?: number;
}

export const DEFAULT_CLUSTER_NAME = 'default';

export function validateClusterConfig(c: ClusterConfig): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(c.name)) {
    throw new InvalidArgumentError(`cluster name "${c.name}" must be 1–64 letters, digits, '.', '_' or '-'`);
  }
  if (!Number.isInteger(c.slots) || c.slots < 1 || c.slots > 65536) {
    throw new InvalidArgumentError(`slots must be an integer in [1, 65536], got ${c.slots} (default ${DEFAULT_SLOTS})`);
  }
  if (c.initialShards !== undefined && (!Number.isInteger(c.initialShards) || c.initialShards < 1)) throw new InvalidArgumentError(`initial shard count must be a positive integer, got ${c.initialShards}`);
  validateModelSpec(c.model);
  validateSparseTables(c.model);
  validateOptimizer(c.optimizer);
  if (c.consistency !== 'async') throw new InvalidArgumentError(`unknown consistency "${c.consistency}"; this build supports: async`);
}
