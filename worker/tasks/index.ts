import { InvalidArgumentError } from '../../cluster/errors.js';
import { mnistSplit } from '../data/mnist.js';
import { logreg } from '../models/logreg.js';
import { mnistMlp } from '../models/mnist-mlp.js';
import { ctrTask } from './ctr-task.js';
import { denseTask } from './dense-task.js';
import { type TrainingTask } from './task.js';
import { isModulePath, loadUserTask } from './user-task.js';

export { type TrainingTask } from './task.js';

/** The built-in tasks, by model name. */
const BUILT_IN: ReadonlyMap<string, TrainingTask> = new Map(
  [
    denseTask(mnistMlp, () => mnistSplit(), { sgd: 0.1, momentum: 0.05, adagrad: 0.05, adam: 0.002 }, 1),
    denseTask(logreg, () => mnistSplit(), { sgd: 0.1, momentum: 0.02, adagrad: 0.1, adam: 0.002 }, 1),
    ctrTask,
  ].map((t) => [t.name, t]),
);

/** Names of the built-in models. */
export const TASK_NAMES: readonly string[] = [...BUILT_IN.keys()];

/**
 * The task `--model` names: a built-in model, or a user's module by path
 * (`./my-model.js`, see docs/user-models.md).
 * @throws InvalidArgumentError naming the built-in models when there is no such model.
 */
export async function loadTask(name: string): Promise<TrainingTask> {
  if (isModulePath(name)) return loadUserTask(name);
  const task = BUILT_IN.get(name);
  if (!task) throw new InvalidArgumentError(`unknown model "${name}"; built-in models: ${TASK_NAMES.join(', ')}, or a module path such as ./my-model.js (docs/user-models.md)`);
  return task;
}
