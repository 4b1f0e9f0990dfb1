import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type Dataset } from '../data/dataset.js';
import { type DenseModelDefinition, defineDenseModel } from '../models/dense-model.js';
import { denseTask } from './dense-task.js';
import { type TrainingTask } from './task.js';

/** A dataset as a user's module gives it: examples row-major in `x`, classes in `y`. */
export interface UserDataset {
  x: Float32Array;
  y: Int32Array;
  count: number;
}

/**
 * What a user's model module returns (docs/user-models.md): a classifier over
 * dense tensors — its tensors and logits, optionally its loss (gradients then
 * come from TensorFlow.js's autodiff) or a hand-written backward pass, as
 * worker/models/dense-model.ts defines them — and its data.
 */
export interface UserModel extends DenseModelDefinition {
  /** The training and held-out examples; called once per process. */
  data(): { train: UserDataset; test: UserDataset };
  /** Learning rates that train it well, per optimizer. */
  learningRates?: TrainingTask['tunedLearningRates'];
}

/** Whether `--model` names a module file rather than a built-in model. */
export function isModulePath(name: string): boolean {
  return name.endsWith('.js') || name.endsWith('.mjs') || name.includes('/');
}

/**
 * Loads a user's model from an ES module whose default export is a function
 * of TensorFlow.js (`@tensorflow/tfjs-core`, on the backend the worker chose)
 * returning a {@link UserModel}.
 *
 * @throws InvalidArgumentError naming what is missing or wrong.
 */
export async function loadUserTask(path: string): Promise<TrainingTask> {
  const file = resolve(path);
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (err) {
    const where = err instanceof SyntaxError ? syntaxErrorLocation(file) : null;
    throw new InvalidArgumentError(`cannot load model module ${where ?? path}: ${(err as Error).message}`);
  }
  if (typeof mod.default !== 'function') throw new InvalidArgumentError(`model module ${path} must export a default function (tf) => model; see docs/user-models.md`);
  const def = (mod.default as (t: typeof tf) => UserModel)(tf);
  for (const key of ['name', 'inputSize', 'classes', 'tensors', 'logits', 'data'] as const) {
    if (def?.[key] === undefined) throw new InvalidArgumentError(`the model from ${path} has no "${key}"; see docs/user-models.md`);
  }
  for (const key of ['logits', 'data', 'loss', 'lossAndGradients'] as const) {
    if (def[key] !== undefined && typeof def[key] !== 'function') throw new InvalidArgumentError(`"${key}" of the model from ${path} must be a function; see docs/user-models.md`);
  }
  const model = defineDenseModel(def);
  let data: { train: Dataset; test: Dataset } | undefined;
  const load = () => {
    if (data) return data;
    const d = def.data();
    const check = (set: UserDataset, what: string): Dataset => {
      if (!(set?.x instanceof Float32Array && set.y instanceof Int32Array && Number.isInteger(set.count) && set.count > 0)) {
        throw new InvalidArgumentError(`the ${what} data of model ${def.name} must be { x: Float32Array, y: Int32Array, count > 0 }`);
      }
      if (set.x.length < set.count * def.inputSize || set.y.length < set.count) throw new InvalidArgumentError(`the ${what} data of model ${def.name} holds fewer values than ${set.count} examples need`);
      return { x: set.x, y: set.y, count: set.count, inputSize: def.inputSize };
    };
    data = { train: check(d.train, 'training'), test: check(d.test, 'held-out') };
    return data;
  };
  return denseTask(model, load, def.learningRates ?? {});
}

/**
 * Where in `file` the syntax error is, as `file:line:column`, or null when
 * that cannot be told: Node's dynamic import reports a module's syntax error
 * without its place, so the file is checked again with `node --check`, which
 * prints the line and a caret under the column.
 */
function syntaxErrorLocation(file: string): string | null {
  const check = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10_000 });
  const lines = (check.stderr ?? '').split('\n');
  const at = lines.findIndex((l) => l.startsWith(`${file}:`));
  if (at < 0) return null;
  const line = lines[at]!.slice(file.length + 1);
  const caret = lines[at + 2]?.indexOf('^') ?? -1;
  return `${file}:${line}${caret >= 0 ? `:${caret + 1}` : ''}`;
}
