import { InvalidArgumentError } from './errors.js';

/** The server-side optimizers a shard applies pushed gradients with. */
export const OPTIMIZERS = ['sgd', 'momentum', 'adagrad', 'adam'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/**
 * An optimizer and its hyper-parameters, per model (one for the whole cluster).
 * Update rules, for gradient g and learning rate η:
 * - sgd:      w ← w − η·g
 * - momentum: v ← μ·v + g;  w ← w − η·v            (heavy ball, as TensorFlow's MomentumOptimizer)
 * - adagrad:  a ← a + g²;   w ← w − η·g / (√a + ε)
 * - adam:     m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  w ← w − η·m̂ / (√v̂ + ε),
 *             m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), t counted per slot
 */
export interface OptimizerConfig {
  name: OptimizerName;
  /** η. Default: sgd 0.1, momentum 0.05, adagrad 0.05, adam 0.001. */
  learningRate: number;
  /** μ for momentum. Default 0.9. */
  momentum: number;
  /** β₁ for adam. Default 0.9. */
  beta1: number;
  /** β₂ for adam. Default 0.999. */
  beta2: number;
  /** ε for adagrad and adam. Default 1e-8 (adam), 1e-7 (adagrad). */
  epsilon: number;
  /** Adagrad's starting accumulator. Default 0.1. */
  initialAccumulator: number;
  /**
   * Step decay of η: from a slot's update number `afterSteps + 1` on, η is
   * multiplied by `factor` (drops compound). Updates are counted per slot
   * (per row in a sparse table): under async every whole-model push is one,
   * under bsp every closed step. Default none (η constant).
   */
  schedule?: { afterSteps: number; factor: number }[];
}

/** η for a slot's `step`-th update (from 1) under the config's schedule. */
export function learningRateAt(c: OptimizerConfig, step: number): number {
  let lr = c.learningRate;
  for (const d of c.schedule ?? []) if (step > d.afterSteps) lr *= d.factor;
  return lr;
}

const DEFAULT_LEARNING_RATES: Record<OptimizerName, number> = { sgd: 0.1, momentum: 0.05, adagrad: 0.05, adam: 0.001 };

/** Fills every hyper-parameter not given with its documented default. */
export function optimizerWithDefaults(partial: Partial<OptimizerConfig> & { name: OptimizerName }): OptimizerConfig {
  const config: OptimizerConfig = {
    name: partial.name,
    learningRate: partial.learningRate ?? DEFAULT_LEARNING_RATES[partial.name],
    momentum: partial.momentum ?? 0.9,
    beta1: partial.beta1 ?? 0.9,
    beta2: partial.beta2 ?? 0.999,
    epsilon: partial.epsilon ?? (partial.name === 'adagrad' ? 1e-7 : 1e-8),
    initialAccumulator: partial.initialAccumulator ?? 0.1,
    ...(partial.schedule?.length ? { schedule: partial.schedule.map((d) => ({ ...d })) } : {}),
  };
  validateOptimizer(config);
  return config;
}

export function validateOptimizer(c: OptimizerConfig): void {
  if (!(OPTIMIZERS as readonly string[]).includes(c.name)) {
    throw new InvalidArgumentError(`unknown optimizer "${c.name}"; choose one of ${OPTIMIZERS.join(', ')}`);
  }
  const positive = (v: number, what: string) => {
    if (!(Number.isFinite(v) && v > 0)) throw new InvalidArgumentError(`optimizer ${what} must be a positive number, got ${v}`);
  };
  positive(c.learningRate, 'learning rate');
  positive(c.epsilon, 'epsilon');
  for (const [v, what] of [
    [c.momentum, 'momentum'],
    [c.beta1, 'beta1'],
    [c.beta2, 'beta2'],
  ] as const) {
    if (!(v >= 0 && v < 1)) throw new InvalidArgumentError(`optimizer ${what} must be in [0, 1), got ${v}`);
  }
  for (const d of c.schedule ?? []) {
    if (!(Number.isInteger(d.afterSteps) && d.afterSteps >= 0)) throw new InvalidArgumentError(`a learning-rate drop's step must be a non-negative integer, got ${d.afterSteps}`);
    if (!(Number.isFinite(d.factor) && d.factor > 0)) throw new InvalidArgumentError(`a learning-rate drop's factor must be a positive number, got ${d.factor}`);
  }
  if (!(c.initialAccumulator >= 0)) throw new InvalidArgumentError(`adagrad initial accumulator must be ≥ 0, got ${c.initialAccumulator}`);
}

/** Floats of optimizer state kept per model element. */
export function stateFloatsPerElement(name: OptimizerName): number {
  return name === 'adam' ? 2 : name === 'sgd' ? 0 : 1;
}
