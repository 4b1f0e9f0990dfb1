import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { type Consistency, parseConsistency } from '../../cluster/consistency.js';
import { UsageError } from '../args.js';
import { type OptimizerName, optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { type Model } from '../../worker/models/model.js';

/**
 * What `tessera local` (and so `npm start`) does with no options: chosen to
 * reach ≥ 0.95 test accuracy on mnist-mlp in well under 2 minutes on a
 * 2-core machine; see docs/benchmarks.md for what it measured.
 */
export const DEFAULT_TRAINING = {
  shards: 2,
  workers: 2,
  model: 'mnist-mlp',
  epochs: 10,
  batchSize: 64,
  optimizer: 'adam' as OptimizerName,
  seed: 1,
} as const;

/** Learning rates that train the built-in models well with each optimizer (the optimizer's own default otherwise). */
const TUNED: Record<string, Partial<Record<OptimizerName, number>>> = {
  'mnist-mlp': { sgd: 0.1, momentum: 0.05, adagrad: 0.05, adam: 0.002 },
  logreg: { sgd: 0.1, momentum: 0.02, adagrad: 0.1, adam: 0.002 },
};

export function defaultLearningRate(model: string, optimizer: OptimizerName): number | undefined {
  return TUNED[model]?.[optimizer];
}

/** The configuration `tessera init` and `tessera local` write: the model's spec, the optimizer with its tuned learning rate unless one is given. */
export function clusterConfig(o: {
  name: string;
  slots: number;
  model: Model;
  seed: number;
  optimizer: OptimizerName;
  learningRate?: number;
  initialShards: number;
  consistency?: Consistency;
  initialWorkers?: number;
}): ClusterConfig {
  return {
    name: o.name,
    slots: o.slots,
    model: o.model.spec(o.seed),
    optimizer: optimizerWithDefaults({ name: o.optimizer, learningRate: o.learningRate ?? defaultLearningRate(o.model.name, o.optimizer) }),
    consistency: o.consistency ?? 'async',
    initialShards: o.initialShards,
    ...(o.initialWorkers ? { initialWorkers: o.initialWorkers } : {}),
  };
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
