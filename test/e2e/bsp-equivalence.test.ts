import { expect } from 'chai';
import { initialValues } from '../../cluster/model-spec.js';
import { type MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { SparseClient } from '../../client/sparse-client.js';
import { idHalves, initialRow, tableHash } from '../../cluster/sparse-keys.js';
import { type SlotState, applyGradient, newState, sgd } from '../../server/optimizers.js';
import { selectBackend } from '../../worker/backend.js';
import { type Dataset, epochBatches, partition } from '../../worker/data/dataset.js';
import { clickLog } from '../../worker/data/click-log.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { CTR_ROW_OPTIMIZER, CTR_TABLE, ctr } from '../../worker/models/ctr.js';
import { ctrTask } from '../../worker/tasks/ctr-task.js';
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

/**
 * The same for a model with a sparse table: under bsp each row moves, when
 * the step closes, by its gradients summed over the step's workers and
 * divided by their number — single-process training on the mean gradient,
 * where a row only one batch touched gets half its gradient. ctr's rows use
 * adagrad (their table's optimizer), its dense weights sgd.
 */
describe('e2e: bsp equals single-process training for sparse rows too (ctr)', function () {
  this.timeout(120_000);
  const CTR_STEPS = 30;
  const CTR_BATCH = 64;
  const CTR_LR = 0.5;
  const spec = ctr.spec(21);
  const data = clickLog().train;
  /** Worker i's batch at `step`: CTR_BATCH consecutive examples, never shared. */
  const batchOf = (i: number, step: number) => Uint32Array.from({ length: CTR_BATCH }, (_, k) => (2 * step + i) * CTR_BATCH + k);
  const idsOf = (indices: Uint32Array) => {
    const ids = new BigUint64Array(indices.length * ctr.fields);
    const y = new Int32Array(indices.length);
    indices.forEach((e, k) => {
      ids.set(data.ids.subarray(e * ctr.fields, (e + 1) * ctr.fields), k * ctr.fields);
      y[k] = data.y[e]!;
    });
    return { ids, y };
  };
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it(`2 workers, pipelined: every dense weight and every row within 1e-6 relative after ${CTR_STEPS} steps`, async () => {
    await selectBackend('wasm');
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: CTR_LR }, consistency: 'bsp', initialWorkers: 2 });
    await Promise.all(
      [0, 1].map(async (i) => {
        const id = `w${i}`;
        await register(cluster!.store, id);
        const client = await cluster!.client({ workerId: id });
        async function* source() {
          for (let step = 0; step < CTR_STEPS; step++) yield { epoch: 0, indices: batchOf(i, step), lastOfBlock: step === CTR_STEPS - 1 };
        }
        const res = await ctrTask.train({ client, source: source(), batchSize: CTR_BATCH, pipeline: true, seed: i });
        expect(res.steps).to.equal(CTR_STEPS);
      }),
    );

    // Single process: the same batches, one update per step from the mean gradient.
    const dense = new Float32Array(ctr.elements);
    initialValues(spec, 0, dense);
    const table = spec.sparse![0]!;
    const rows = new Map<bigint, SlotState>();
    const row = (id: bigint): SlotState => {
      let r = rows.get(id);
      if (!r) {
        const values = new Float32Array(ctr.dim);
        const [lo, hi] = idHalves(id);
        initialRow(table.init, ctr.dim, spec.seed, tableHash(table.name), lo, hi, values, 0);
        rows.set(id, (r = newState(values, CTR_ROW_OPTIMIZER)));
      }
      return r;
    };
    const denseGradients = [new Float32Array(ctr.elements), new Float32Array(ctr.elements)];
    for (let step = 0; step < CTR_STEPS; step++) {
      const rowSums = new Map<bigint, Float32Array>();
      for (const i of [0, 1]) {
        const { ids, y } = idsOf(batchOf(i, step));
        const pulled = new Float32Array(ids.length * ctr.dim);
        ids.forEach((id, k) => pulled.set(row(id).values, k * ctr.dim));
        const g = await ctr.gradient(dense, pulled, y, CTR_BATCH, denseGradients[i]);
        // The worker's client sums a repeated id's gradients in float64, rounded once ...
        const mine = new Map<bigint, Float64Array>();
        ids.forEach((id, k) => {
          let acc = mine.get(id);
          if (!acc) mine.set(id, (acc = new Float64Array(ctr.dim)));
          for (let c = 0; c < ctr.dim; c++) acc[c]! += g.rows[k * ctr.dim + c]!;
        });
        // ... and the shard adds the step's pushes in float32.
        for (const [id, acc] of mine) {
          const sum = rowSums.get(id) ?? new Float32Array(ctr.dim);
          for (let c = 0; c < ctr.dim; c++) sum[c] = sum[c]! + Math.fround(acc[c]!);
          rowSums.set(id, sum);
        }
      }
      const mean = Float32Array.from(denseGradients[0]!, (g, k) => (g + denseGradients[1]![k]!) / 2);
      sgd(dense, mean, 0, dense.length, CTR_LR);
      for (const [id, sum] of rowSums) applyGradient(row(id), sum.map((v) => v * 0.5), 0, CTR_ROW_OPTIMIZER);
    }

    const reader = await cluster.client({ workerId: 'reader' });
    const ids = BigUint64Array.from(rows.keys());
    const clusteredRows = await new SparseClient(reader).pull(CTR_TABLE, ids, { readOnly: true });
    const localRows = new Float32Array(ids.length * ctr.dim);
    ids.forEach((id, k) => localRows.set(rows.get(id)!.values, k * ctr.dim));
    const worst = (a: Float32Array, b: Float32Array) => a.reduce((m, v, k) => Math.max(m, Math.abs(v - b[k]!) / Math.max(Math.abs(b[k]!), 1e-12)), 0);
    expect(worst(await reader.pull(), dense), 'largest relative difference of a dense weight').to.be.at.most(1e-6);
    expect(worst(clusteredRows, localRows), 'largest relative difference of a row value').to.be.at.most(1e-6);
    expect(ids.length, 'rows trained').to.be.greaterThan(4_000);
    const first = new Float32Array(ctr.dim);
    const [lo, hi] = idHalves(ids[0]!);
    initialRow(table.init, ctr.dim, spec.seed, tableHash(table.name), lo, hi, first, 0);
    expect(Buffer.from(first.buffer).equals(Buffer.from(localRows.buffer, 0, 4 * ctr.dim)), 'training moved the rows').to.equal(false);
  });
});

/** What a worker process does before it trains: hold a lease, so the shards count it as live. */
async function register(store: MemoryMembershipStore, id: string): Promise<void> {
  await store.register('worker', { id, state: 'training' }, 60_000);
}
