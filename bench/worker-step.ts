import * as tf from '@tensorflow/tfjs-core';
import { initialValues } from '../cluster/model-spec.js';
import { selectBackend } from '../worker/backend.js';
import { mnistSplit } from '../worker/data/mnist.js';
import { getModel } from '../worker/models/index.js';

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
    const gradient = new Float32Array(model.elements);
    for (const batchSize of BATCH_SIZES) {
      const batch = { x: train.x, y: train.y, count: batchSize };
      for (let i = 0; i < WARMUP; i++) await model.gradient(params, batch, gradient);
      const ms: number[] = [];
      for (let i = 0; i < TIMED; i++) {
        const t0 = performance.now();
        await model.gradient(params, batch, gradient);
        ms.push(performance.now() - t0);
      }
      ms.sort((a, b) => a - b);
      const median = ms[ms.length >> 1]!;
      const line = {
        bench: 'worker-step',
        backend: tf.getBackend(),
        model: name,
        batch_size: batchSize,
        median_ms: round(median),
        p90_ms: round(ms[Math.floor(ms.length * 0.9)]!),
        samples_per_s: Math.round((batchSize / median) * 1000),
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
