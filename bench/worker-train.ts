import { initialValues } from '../cluster/model-spec.js';
import { type OptimizerConfig, optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { applyGradient, newState } from '../server/optimizers.js';
import { selectBackend } from '../worker/backend.js';
import { partition } from '../worker/data/dataset.js';
import { mnistSplit } from '../worker/data/mnist.js';
import { accuracy } from '../worker/evaluate.js';
import { getModel } from '../worker/models/index.js';
import { type Model } from '../worker/models/model.js';
import { type ParameterClient, train } from '../worker/trainer.js';

/**
 * Test accuracy against epochs of in-process training: the worker's loop and
 * the shard's update rule with no network between them (one worker, the
 * whole vector as one slot). What a `tessera local` run can reach at best, and
 * how fast. Prints one JSON line per configuration.
 */

const RUNS: { model: string; optimizer: Partial<OptimizerConfig> & Pick<OptimizerConfig, 'name'>; batchSize: number; epochs: number }[] = [
  { model: 'mnist-mlp', optimizer: { name: 'adam', learningRate: 1e-3 }, batchSize: 64, epochs: 10 },
  { model: 'mnist-mlp', optimizer: { name: 'adam', learningRate: 2e-3 }, batchSize: 64, epochs: 10 },
  { model: 'mnist-mlp', optimizer: { name: 'momentum', learningRate: 0.05 }, batchSize: 64, epochs: 10 },
  { model: 'logreg', optimizer: { name: 'adam', learningRate: 1e-3 }, batchSize: 64, epochs: 10 },
];
const SEED = 1;

/** The shard's update applied in process: a {@link ParameterClient} over one slot holding the whole vector. */
function inProcessParameters(model: Model, config: OptimizerConfig, seed: number): ParameterClient & { values: Float32Array } {
  const values = new Float32Array(model.elements);
  initialValues(model.spec(seed), 0, values);
  const slot = newState(values, config);
  return {
    elements: model.elements,
    values,
    async pull(out) {
      out.set(values);
      return out;
    },
    async push(gradient) {
      applyGradient(slot, gradient, 0, config);
    },
  };
}

const backend = await selectBackend();
const { train: trainSet, test } = mnistSplit();
for (const run of RUNS) {
  const model = getModel(run.model);
  const optimizer = optimizerWithDefaults(run.optimizer);
  const client = inProcessParameters(model, optimizer, SEED);
  const epochs: { epoch: number; test_accuracy: number; loss: number; train_s: number }[] = [];
  let trainMs = 0;
  for (let epoch = 0; epoch < run.epochs; epoch++) {
    // One epoch per call, seeded as the epoch-th epoch of one long run would be.
    const r = await train({ client, model, data: partition(trainSet, 0, 1), batchSize: run.batchSize, epochs: 1, seed: SEED + epoch });
    trainMs += r.wallMs;
    epochs.push({ epoch: epoch + 1, test_accuracy: await accuracy(model, client.values, test), loss: round(r.lastLoss), train_s: round(trainMs / 1000) });
  }
  process.stdout.write(`${JSON.stringify({ bench: 'worker-train', backend, model: run.model, optimizer: optimizer.name, learning_rate: optimizer.learningRate, batch_size: run.batchSize, train_examples: trainSet.count, test_examples: test.count, epochs })}\n`);
}

function round(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}
