import { type ClusterConfig, MAX_REPLICAS } from '../../cluster/cluster-config.js';
import { type Consistency, parseConsistency } from '../../cluster/consistency.js';
import { parseCompression } from '../../cluster/wire/gradient-codec.js';
import { type OptionSpec, UsageError } from '../args.js';
import { DEFAULT_BLOCK_SIZE } from '../../worker/data/work-source.js';
import { type OptimizerName, optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { type TrainingTask } from '../../worker/tasks/index.js';

/**
 * What `tessera local` (and so `npm start`) does with no options: chosen to
 * reach ≥ 0.95 test accuracy on mnist-mlp in well under 2 minutes on a
 * 2-core machine; see docs/benchmarks.md for what it measured.
 */
export const DEFAULT_TRAINING = {
  shards: 2,
  workers: 2,
  model: 'mnist-mlp',
  batchSize: 64,
  optimizer: 'adam' as OptimizerName,
  seed: 1,
} as const;

/** The configuration `tessera init` and `tessera local` write: the model's spec, the optimizer with the task's tuned learning rate unless one is given. */
export function clusterConfig(o: {
  name: string;
  slots: number;
  task: TrainingTask;
  seed: number;
  optimizer: OptimizerName;
  learningRate?: number;
  initialShards: number;
  consistency?: Consistency;
  initialWorkers?: number;
  /** How workers encode pushed gradients (`none`, `fp16`, `int8`, `topk:R`). */
  compression?: string;
  /** Backups of every slot (docs/replication.md); 0: none. */
  replicas?: number;
  /** Multiply the learning rate by `factor` from `epoch` on (the updates a pass makes follow from the data, workers and consistency). */
  lrDrop?: { epoch: number; factor: number; workers: number; batchSize: number };
}): ClusterConfig {
  const consistency = o.consistency ?? 'async';
  const replicas = o.replicas ?? 0;
  if (!(Number.isInteger(replicas) && replicas >= 0 && replicas <= MAX_REPLICAS)) throw new UsageError(`--replicas must be 0 to ${MAX_REPLICAS} (backups of every slot); got ${replicas}`);
  if (replicas > 0 && consistency === 'bsp') throw new UsageError('--replicas needs --consistency async or ssp:K: under bsp a step\'s pushes are summed on the primary until the step closes, and a backup could not hold them');
  let schedule: { afterSteps: number; factor: number }[] | undefined;
  if (o.lrDrop) {
    // Under bsp one update is a step of every worker; otherwise each batch is one.
    const examples = o.task.trainExamples;
    const batches = stepsOfRun(examples, DEFAULT_BLOCK_SIZE, o.lrDrop.batchSize);
    const perEpoch = consistency === 'bsp' ? Math.ceil(batches / o.lrDrop.workers) : batches;
    schedule = [{ afterSteps: o.lrDrop.epoch * perEpoch, factor: o.lrDrop.factor }];
  }
  return {
    name: o.name,
    slots: o.slots,
    model: o.task.spec(o.seed),
    optimizer: optimizerWithDefaults({ name: o.optimizer, learningRate: o.learningRate ?? o.task.tunedLearningRates[o.optimizer], ...(schedule ? { schedule } : {}) }),
    consistency,
    initialShards: o.initialShards,
    ...(o.initialWorkers ? { initialWorkers: o.initialWorkers } : {}),
    ...(o.compression && o.compression !== 'none' ? { compression: o.compression } : {}),
    ...(o.replicas ? { replicas: o.replicas } : {}),
  };
}

/** `--replicas` of `tessera init` and `tessera local`. */
export const REPLICAS_OPTION: OptionSpec = {
  name: 'replicas',
  type: 'int',
  default: 0,
  metavar: 'R',
  description: 'backups of every slot on other shards (0–4; docs/replication.md): a push is acknowledged once every replica holds it, and a backup takes over a dead primary',
};

/** `--compression` of `tessera init` and `tessera local`. */
export const COMPRESSION_OPTION: OptionSpec = {
  name: 'compression',
  type: 'string',
  default: 'none',
  metavar: 'none|fp16|int8|topk:R',
  description: 'how workers encode pushed gradients on the wire: float32, float16, int8 with a scale per 256 values, or the fraction R of each slot largest in magnitude, with error feedback (docs/wire-protocol.md)',
};

/** A `--compression` value, checked: none, fp16, int8 or topk:R. */
export function parseCompressionOption(text: string): string {
  try {
    parseCompression(text);
  } catch (err) {
    throw new UsageError(`--compression: ${(err as Error).message}`);
  }
  return text;
}

/** A `--consistency` value, checked: async, bsp or ssp:K. */
export function parseConsistencyOption(text: string): Consistency {
  try {
    parseConsistency(text);
  } catch (err) {
    throw new UsageError(`--consistency: ${(err as Error).message}`);
  }
  return text as Consistency;
}

/** Steps one pass takes when `examples` are cut into blocks of `blockSize` and each block into batches (the last of each shorter). */
export function stepsOfRun(examples: number, blockSize: number, batchSize: number): number {
  const full = Math.floor(examples / blockSize);
  const rest = examples - full * blockSize;
  return full * Math.ceil(blockSize / batchSize) + Math.ceil(rest / batchSize);
}
