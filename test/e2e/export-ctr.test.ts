import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { snapshotModel } from '../../client/model-snapshot.js';
import { SparseClient } from '../../client/sparse-client.js';
import { exportModel } from '../../serving/export/exporter.js';
import { manifestSource } from '../../serving/export/source.js';
import { versionFileReader } from '../../serving/export/versions.js';
import { loadFormat, runAll } from '../../serving/runtime/load.js';
import { selectBackend } from '../../worker/backend.js';
import { clickLog } from '../../worker/data/click-log.js';
import { CTR_TABLE, ctr } from '../../worker/models/ctr.js';
import { ctrTask } from '../../worker/tasks/ctr-task.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

/**
 * The click model exports with its embedding table: after a little training
 * the version holds every row the shards hold, and both formats give, on
 * held-out examples, the click probabilities the cluster's own model gives
 * with the cluster's rows (an id the table lacks reading zeros, as served);
 * int8 stores a scale per row and stays close; the manifest's AUC is the
 * one measured from the files.
 */
describe('e2e: export the ctr model with its embedding table', function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-export-ctr-'));
  const spec = ctr.spec(3);
  const N = 2_000;

  before(async () => {
    await selectBackend('wasm');
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'adam', learningRate: 0.003 } });
    const client = await cluster.client({ workerId: 'w0' });
    const data = clickLog().train;
    async function* source() {
      for (let b = 0; b < 40; b++) yield { epoch: 0, indices: Uint32Array.from({ length: 256 }, (_, i) => (b * 256 + i) % data.count), lastOfBlock: true, resumed: false };
    }
    await ctrTask.train({ client, source: source(), batchSize: 256, pipeline: false, seed: 1 });
  });
  after(async () => {
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("holds every row, and predicts what the cluster's model predicts with the cluster's rows", async () => {
    const snap = await snapshotModel(cluster.store);
    const rowsHeld = snap.tables.get(CTR_TABLE)!.ids.length;
    expect(rowsHeld).to.be.greaterThan(1000);
    const source = manifestSource({ cluster: 'test', membership: 'memory', consistency: 'async', epoch: snap.epoch, closedSteps: 0, shards: snap.shards });
    const heldOut = ctrTask.heldOut();
    const float = await exportModel({ spec, dense: snap.dense, tables: snap.tables, source }, { outDir: dir, evaluation: heldOut });
    expect(float.manifest.model.tables).to.deep.equal([{ name: CTR_TABLE, dim: 8, rows: rowsHeld }]);
    expect(float.manifest.evaluation.onnx!['test_auc']).to.be.greaterThan(0.7);

    // The cluster's own prediction: its dense weights, its rows (read without creating any), zeros for ids it has no row for.
    const test = clickLog().test;
    const ids = test.ids.subarray(0, N * ctr.fields);
    const client = await cluster.client({ workerId: 'reader' });
    const dense = await client.pull();
    const rows = await new SparseClient(client).pull(CTR_TABLE, ids, { readOnly: true });
    const known = new Set(Array.from(snap.tables.get(CTR_TABLE)!.ids, String));
    ids.forEach((id, i) => known.has(String(id)) || rows.fill(0, i * 8, (i + 1) * 8));
    const inCluster = await ctr.predict(dense, rows, N);
    const input = new BigInt64Array(ids.buffer, ids.byteOffset, ids.length);
    for (const format of ['onnx', 'tfjs'] as const) {
      const model = await loadFormat(format, versionFileReader(float.dir));
      const p = await runAll(model, input, N);
      await model.close();
      let worst = 0;
      for (let i = 0; i < N; i++) worst = Math.max(worst, Math.abs(p[i]! - inCluster[i]!));
      expect(worst, `${format}: largest difference from the cluster's model`).to.be.below(1e-5);
      const all = await loadFormat(format, versionFileReader(float.dir));
      const measured = heldOut.metrics(await runAll(all, heldOut.inputs, heldOut.rows), heldOut.rows);
      await all.close();
      expect(float.manifest.evaluation[format]!['test_auc'], `${format}: manifest AUC = files' AUC`).to.equal(measured['test_auc']);
    }

    const int8 = await exportModel({ spec, dense: snap.dense, tables: snap.tables, source }, { outDir: dir, quantize: 'int8', evaluation: heldOut });
    expect(int8.manifest.compression.storage.onnx!['emb']).to.match(/int8, a scale per row/);
    expect(float.manifest.evaluation.onnx!['test_auc']! - int8.manifest.evaluation.onnx!['test_auc']!).to.be.below(0.005);
    // The ids (two int64 per row in the lookup) are not quantized: about 16 of the 48 bytes a float32 row costs.
    expect(int8.manifest.size.onnx!.bytes).to.be.below(float.manifest.size.onnx!.bytes * 0.6);
  });
});
