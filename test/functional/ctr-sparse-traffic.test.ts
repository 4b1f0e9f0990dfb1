import { expect } from 'chai';
import { selectBackend } from '../../worker/backend.js';
import { clickLog } from '../../worker/data/click-log.js';
import { type IndexBatch } from '../../worker/data/work-source.js';
import { CTR_DIM, CTR_TABLE } from '../../worker/models/ctr.js';
import { ctrTask } from '../../worker/tasks/ctr-task.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

const STEPS = 20;
const BATCH = 64;

/**
 * Training ctr through a real cluster: rows exist only once a batch touched
 * them, and each step moves exactly the rows its batch touches — each
 * distinct id once each way — as the shards' own counters show; evaluation
 * creates none.
 */
forEachTransport('functional: ctr moves only the rows a batch touches', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it(`${STEPS} steps: rows created = distinct ids seen; rows pulled and pushed = distinct ids per batch`, async () => {
    await selectBackend('wasm');
    cluster = await startCluster({ shards: 2, model: ctrTask.spec(3), optimizer: { name: 'adam', learningRate: 0.003 }, transport });
    const client = await cluster.client({ workerId: 'w0' });
    const data = clickLog().train;
    const batches: IndexBatch[] = Array.from({ length: STEPS }, (_, s) => ({ epoch: 0, indices: Uint32Array.from({ length: BATCH }, (_, i) => s * BATCH + i) }));
    const stats = () => cluster!.shards.flatMap((s) => s.sparse.stats()).filter((t) => t.name === CTR_TABLE);
    const sum = (key: 'rows' | 'rowsTouched' | 'bytesOut') => stats().reduce((a, t) => a + t[key], 0);
    expect(sum('rows'), 'no row exists before training').to.equal(0);

    let perBatch = 0;
    const seen = new Set<bigint>();
    for (const b of batches) {
      const ids = new Set<bigint>();
      for (const i of b.indices) for (let f = 0; f < data.fields; f++) ids.add(data.ids[i * data.fields + f]!);
      perBatch += ids.size;
      for (const id of ids) seen.add(id);
    }
    expect(seen.size, 'the batches repeat ids (popular values), so counting distinct ids matters').to.be.lessThan(STEPS * BATCH * data.fields);

    async function* source() {
      yield* batches;
    }
    const result = await ctrTask.train({ client, source: source(), batchSize: BATCH, pipeline: false, seed: 1 });
    expect(result.steps).to.equal(STEPS);
    expect(sum('rows'), 'rows held = distinct ids trained on').to.equal(seen.size);
    expect(sum('rowsTouched'), 'rows pulled + rows pushed').to.equal(2 * perBatch);
    expect(sum('bytesOut'), 'bytes of row values sent to the worker').to.equal(perBatch * CTR_DIM * 4);

    // Evaluation reads the held-out examples' rows, most of them never trained on, without creating them.
    const metrics = await ctrTask.evaluate(client);
    expect(metrics['test_auc']).to.be.within(0.5, 1);
    expect(sum('rows'), 'evaluation created no row').to.equal(seen.size);
  });
});
