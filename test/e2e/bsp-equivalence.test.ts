import { expect } from 'chai';
import { initialValues } from '../../cluster/model-spec.js';
import { type MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { sgd } from '../../server/optimizers.js';
import { selectBackend } from '../../worker/backend.js';
import { type Dataset, epochBatches, partition } from '../../worker/data/dataset.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { getModel } from '../../worker/models/index.js';
import { train } from '../../worker/trainer.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const STEPS = 50;
const BATCH = 32;
const LR = 0.1;
const SEED = 9;

/**
 * Under bsp a shard applies step t only once every live worker pushed it, as
 * the mean of their pushes: with one worker that is single-process training,
 * with two it is single-process training on the mean gradient of both batches.
 */
describe('e2e: bsp equals single-process training', function () {
  this.timeout(120_000);
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  const model = getModel('mnist-mlp');
  const spec = model.spec(13);
  /** Worker i's data: a slice holding exactly enough examples for STEPS batches. */
  const share = (i: number): Dataset => partition(partition(mnistSplit().train, i, 2), 0, Math.floor(4000 / (STEPS * BATCH)));

  async function clusterRun(workers: number, pipeline: boolean): Promise<Float32Array> {
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: LR }, consistency: 'bsp', initialWorkers: workers });
    await Promise.all(
      Array.from({ length: workers }, async (_, i) => {
        const id = `w${i}`;
        await register(cluster!.store, id);
        const client = await cluster!.client({ workerId: id });
        expect(client.clocked).to.equal(true);
        const abort = new AbortController();
        let done = 0;
        await train({ client, model, data: share(i), epochs: 1, batchSize: BATCH, seed: SEED + i, pipeline, signal: abort.signal, onStep: () => void (++done === STEPS && abort.abort()) });
        expect(done).to.equal(STEPS);
      }),
    );
    const client = await cluster.client({ workerId: 'reader' });
    return client.pull();
  }

  async function singleProcess(workers: number): Promise<Float32Array> {
    const w = new Float32Array(model.elements);
    initialValues(spec, 0, w);
    const gradients = Array.from({ length: workers }, () => new Float32Array(model.elements));
    const mean = new Float32Array(model.elements);
    const streams = Array.from({ length: workers }, (_, i) => epochBatches(share(i), BATCH, SEED + i, 0));
    for (let step = 0; step < STEPS; step++) {
      for (let i = 0; i < workers; i++) {
        const batch = streams[i]!.next();
        expect(batch.done).to.equal(false);
        await model.gradient(w, batch.value!, gradients[i]);
      }
      mean.fill(0);
      for (const g of gradients) for (let k = 0; k < mean.length; k++) mean[k]! += g[k]!;
      for (let k = 0; k < mean.length; k++) mean[k] = mean[k]! / workers;
      sgd(w, mean, 0, w.length, LR);
    }
    return w;
  }

  for (const [workers, pipeline] of [
    [1, false],
    [1, true],
    [2, true],
  ] as const) {
    it(`${workers} worker(s)${pipeline ? ', pipelined' : ''}: every weight within 1e-6 relative after ${STEPS} steps`, async () => {
      await selectBackend('wasm');
      const clustered = await clusterRun(workers, pipeline);
      const local = await singleProcess(workers);
      let worst = 0;
      for (let i = 0; i < local.length; i++) worst = Math.max(worst, Math.abs(clustered[i]! - local[i]!) / Math.max(Math.abs(local[i]!), 1e-12));
      expect(worst, 'largest relative difference of a weight').to.be.at.most(1e-6);
      const start = new Float32Array(model.elements);
      initialValues(spec, 0, start);
      expect(Buffer.from(start.buffer).equals(Buffer.from(local.buffer)), 'training moved the weights').to.equal(false);
    });
  }
});

/** What a worker process does before it trains: hold a lease, so the shards count it as live. */
async function register(store: MemoryMembershipStore, id: string): Promise<void> {
  await store.register('worker', { id, state: 'training' }, 60_000);
}
