import { isModulePath } from '../worker/tasks/user-task.js';
import { TASK_NAMES, loadTask } from '../worker/tasks/index.js';
import { type TrainingTask } from '../worker/tasks/task.js';
import { UsageError } from './args.js';

/**
 * The task a `--model` option names, for a command line: a name that is
 * neither a built-in model nor a module path is a wrong command line (exit 2),
 * as the README says; a module that cannot be loaded is reported as
 * loadTask reports it (its file, line and column for a syntax error).
 */
export async function taskFromOption(name: string): Promise<TrainingTask> {
  if (!isModulePath(name) && !TASK_NAMES.includes(name)) {
    throw new UsageError(`unknown model "${name.slice(0, 80)}"; built-in models: ${TASK_NAMES.join(', ')}, or a module path such as ./my-model.js (docs/user-models.md)`);
  }
  return loadTask(name);
}
