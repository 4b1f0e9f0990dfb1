import { InvalidArgumentError } from '../../cluster/errors.js';
import { logreg } from './logreg.js';
import { mnistMlp } from './mnist-mlp.js';
import { type Model } from './model.js';

export { type Batch, type GradientResult, type Model } from './model.js';

/** Every model a worker can train, by name. */
const MODELS: ReadonlyMap<string, Model> = new Map([mnistMlp, logreg].map((m) => [m.name, m]));

/** Names of the registered models. */
export const MODEL_NAMES: readonly string[] = [...MODELS.keys()];

/**
 * The registered model called `name`.
 * @throws InvalidArgumentError naming the known models when there is none.
 */
export function getModel(name: string): Model {
  const model = MODELS.get(name);
  if (!model) throw new InvalidArgumentError(`unknown model "${name}"; known models: ${MODEL_NAMES.join(', ')}`);
  return model;
}
