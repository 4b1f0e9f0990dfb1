import { expect } from 'chai';
import { initialValues } from '../../cluster/model-spec.js';
import { sgd } from '../../server/optimizers.js';
import { selectBackend } from '../../worker/backend.js';
import { epochBatches, partition } from '../../worker/data/dataset.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { getModel } from '../../worker/models/index.js';
import { train } from '../../worker/trainer.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

/**
 * One worker with sgd through a real cluster (2 shards over gRPC) ends with the
 * same weights as the same training done in one process with no cluster.
 */
describe('e2e: a 1-worker cluster run equals single-process training', function () {
  this.timeout(120_000);
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it('mnist-mlp, sgd, fixed seed: every weight within 1e-6 relative after 40 steps', async () => {
    await selectBackend('wasm');
    const model = getModel('mnist-mlp');
    const spec = model.spec(11);
    const lr = 0.1;
    const batchSize = 32;
    const seed = 5;
    const steps = 40;
    // A slice of the training set that gives exactly `steps` batches in one epoch.
    const data = partition(mnistSplit().train, 0, Math.floor(mnistSplit().train.count / (steps * batchSize)));
    expect(Math.floor(data.count / batchSize)).to.be.at.least(steps);

    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: lr } });
    const client = await cluster.client({ workerId: 'w0' });
    let done = 0;
    const abort = new AbortController();
    await train({
      client,
      model,
      data,
      epochs: 1,
      batchSize,
      seed,
      pipeline: false,
      signal: abort.signal,
      onStep: () => {
        if (++done === steps) abort.abort();
      },
    });
    const clustered = await client.pull();

    // The same training without a cluster: same first weights, batches, gradients, update rule.
    const local = new Float32Array(model.elements);
    initialValues(spec, 0, local);
    const gradient = new Float32Array(model.elements);
    let n = 0;
    for (const batch of epochBatches(data, batchSize, seed, 0)) {
      if (n++ === steps) break;
      await model.gradient(local, batch, gradient);
      sgd(local, gradient, 0, local.length, lr);
    }
    expect(n).to.equal(steps + 1);

    let worst = 0;
    for (let i = 0; i < local.length; i++) {
      const rel = Math.abs(clustered[i]! - local[i]!) / Math.max(Math.abs(local[i]!), 1e-12);
      if (rel > worst) worst = rel;
    }
    expect(worst, 'largest relative difference of a weight').to.be.at.most(1e-6);
    // And training did move the weights: the comparison is not between two copies of the start.
    const start = new Float32Array(model.elements);
    initialValues(spec, 0, start);
    expect(Buffer.from(start.buffer).equals(Buffer.from(local.buffer))).to.equal(false);
  });
});
