import * as tf from '@tensorflow/tfjs-core';
import { initialValues } from '../cluster/model-spec.js';
import { selectBackend } from '../worker/backend.js';
import { mnistSplit } from '../worker/data/mnist.js';
import { getModel } from '../worker/models/index.js';
import { stepTimes } from './step-time.js';

/**
 * Time of one worker compute step (upload parameters and batch, forward,
 * backward, read the gradient back) per backend, model and batch size: the
 * median of {@link TIMED} steps after {@link WARMUP}. Prints one JSON line per case.
 */

const BACKENDS = ['wasm', 'cpu'] as const;
const MODELS = ['mnist-mlp', 'logreg'];
const BATCH_SIZES = [64, 128];
const WARMUP = 5;
const TIMED = 30;

await selectBackend('wasm');
const { train } = mnistSplit();
for (const backend of BACKENDS) {
  await selectBackend(backend);
  for (const name of MODELS) {
    const model = getModel(name);
    const params = new Float32Array(model.elements);
    initialValues(model.spec(1), 0, params);
    for (const batchSize of BATCH_SIZES) {
      const batch = { x: train.x, y: train.y, count: batchSize };
      const { medianMs: median, p90Ms } = await stepTimes(model, params, batch, WARMUP, TIMED);
      const line = {
        bench: 'worker-step',
        backend: tf.getBackend(),
        model: name,
        batch_size: batchSize,
        median_ms: round(median),
        p90_ms: round(p90Ms),
        samples_per_s: Math.round((batchSize / median) * 1000),
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
