import { InvalidArgumentError } from '../cluster/errors.js';
import { type Dataset } from './data/dataset.js';
import { type Model } from './models/model.js';

/** Examples per forward pass when evaluating: large enough to amortize the per-call cost, small enough to bound memory. */
export const EVAL_BATCH_SIZE = 1_000;

/** The fraction of `data`'s examples that `model` with `params` classifies correctly, computed `batchSize` examples at a time. */
export async function accuracy(model: Model, params: Float32Array, data: Dataset, batchSize: number = EVAL_BATCH_SIZE): Promise<number> {
  if (data.count === 0) throw new InvalidArgumentError('cannot measure accuracy on an empty dataset');
  if (data.inputSize !== model.inputSize) throw new InvalidArgumentError(`model ${model.name} takes ${model.inputSize} features per example, the dataset has ${data.inputSize}`);
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InvalidArgumentError(`batch size must be a positive integer, got ${batchSize}`);
  const predicted = new Int32Array(Math.min(batchSize, data.count));
  let correct = 0;
  for (let begin = 0; begin < data.count; begin += batchSize) {
    const n = Math.min(batchSize, data.count - begin);
    await model.predict(params, data.x.subarray(begin * data.inputSize, (begin + n) * data.inputSize), n, predicted);
    for (let i = 0; i < n; i++) if (predicted[i] === data.y[begin + i]) correct++;
  }
  return correct / data.count;
}

/** The fraction of `rows` examples whose highest of `classes` scores (row-major in `scores`) is at their label. */
export function argmaxAccuracy(scores: Float32Array, rows: number, classes: number, labels: Int32Array): number {
  if (scores.length < rows * classes || labels.length < rows) throw new InvalidArgumentError(`${rows} examples of ${classes} classes need ${rows * classes} scores and ${rows} labels, got ${scores.length} and ${labels.length}`);
  let correct = 0;
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores[r * classes + c]! > scores[r * classes + best]!) best = c;
    if (best === labels[r]) correct++;
  }
  return correct / rows;
}
