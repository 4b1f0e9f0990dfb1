import * as tf from '@tensorflow/tfjs-core';
import { type BackendName, isBackendName, selectBackend } from '../worker/backend.js';
import { seededRandom } from '../worker/data/random.js';
import { mlp, mnistMlp } from '../worker/models/mnist-mlp.js';
import { type Batch, type Model } from '../worker/models/model.js';
import { stepTimes } from './step-time.js';

/**
 * The worker's compute on one backend against the others, for a GPU host:
 *
 * - **gradients**: for each model, fresh random parameters and a random
 *   batch (seeded), the gradient on the backend under test against the cpu
 *   backend's: the largest absolute difference over the largest gradient
 *   element, and the losses;
 * - **step times**: one worker step (upload parameters and batch, forward,
 *   backward, read the gradient back) on the backend under test and on wasm,
 *   median of {@link TIMED} after {@link WARMUP}, for mnist-mlp (batch 128)
 *   and a wider MLP, 784-4096-10 (batch 1024).
 *
 * `node dist/bench/gpu-compare.js [--backend webgpu|tensorflow|wasm|cpu]`
 * (default: the first available, as a worker would choose). Prints one JSON
 * object. Where no GPU backend can run it compares wasm with cpu.
 */

const WARMUP = 5;
const TIMED = 20;
const CASES: { model: Model; batchSize: number }[] = [
  { model: mnistMlp, batchSize: 128 },
  { model: mlp('mlp-4096', 4096), batchSize: 1024 },
];

const forced = process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : undefined;
if (forced !== undefined && !isBackendName(forced)) throw new Error(`--backend takes tensorflow, webgpu, wasm or cpu; got "${forced}"`);
const backend = await selectBackend(forced as BackendName | undefined);

/** Uniform values in [low, high) from `seed`. */
function uniform(n: number, seed: number, low: number, high: number): Float32Array {
  const next = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = low + (high - low) * next();
  return out;
}

function randomBatch(model: Model, count: number, seed: number): Batch {
  const next = seededRandom(seed + 1);
  return { x: uniform(count * model.inputSize, seed, 0, 1), y: Int32Array.from({ length: count }, () => Math.floor(next() * model.classes)), count };
}

async function on<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!(await tf.setBackend(name))) throw new Error(`backend ${name} did not start`);
  return fn();
}

const results = [];
for (const [i, { model, batchSize }] of CASES.entries()) {
  const params = uniform(model.elements, 100 + i, -0.05, 0.05);
  const batch = randomBatch(model, batchSize, 200 + i);
  const tested = await on(backend, () => model.gradient(params, batch));
  const reference = await on('cpu', () => model.gradient(params, batch));
  let worst = 0;
  let scale = 0;
  for (let k = 0; k < model.elements; k++) {
    worst = Math.max(worst, Math.abs(tested.gradient[k]! - reference.gradient[k]!));
    scale = Math.max(scale, Math.abs(reference.gradient[k]!));
  }
  const testedMs = (await on(backend, () => stepTimes(model, params, batch, WARMUP, TIMED))).medianMs;
  const wasmMs = (await on('wasm', () => stepTimes(model, params, batch, WARMUP, TIMED))).medianMs;
  results.push({
    model: model.name,
    parameters: model.elements,
    batch_size: batchSize,
    gradient_max_abs_diff_over_max: worst / scale,
    loss: tested.loss,
    loss_cpu: reference.loss,
    step_ms: round(testedMs),
    step_ms_wasm: round(wasmMs),
    speedup_over_wasm: round(wasmMs / testedMs),
  });
}
process.stdout.write(`${JSON.stringify({ bench: 'gpu-compare', backend, against: 'cpu (gradients), wasm (step time)', cases: results })}\n`);

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
