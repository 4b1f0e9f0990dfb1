import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { snapshotModel } from '../../client/model-snapshot.js';
import { exportModel } from '../../serving/export/exporter.js';
import { manifestSource } from '../../serving/export/source.js';
import { forward } from '../../serving/model/forward.js';
import { buildGraph } from '../../serving/model/build-graph.js';
import { loadFormat, runAll } from '../../serving/runtime/load.js';
import { versionFileReader } from '../../serving/export/versions.js';
import { type ModelFormat } from '../../serving/runtime/runtime.js';
import { privateKeyFrom } from '../../serving/export/manifest.js';
import { selectBackend } from '../../worker/backend.js';
import { partition } from '../../worker/data/dataset.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { mnistMlp } from '../../worker/models/mnist-mlp.js';
import { loadTask } from '../../worker/tasks/index.js';
import { train } from '../../worker/trainer.js';
import { run } from '../helpers/cli.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

/**
 * `tessera export` against a cluster that trains: two workers train
 * mnist-mlp on two shards while the model is taken out; the version loads in
 * onnxruntime-node and in TensorFlow.js; once the workers stop, an export
 * predicts exactly what the cluster's own model predicts on every held-out
 * example (the same classes; probabilities within float32 rounding of a
 * float64 forward pass of the pulled weights); int8 stays within its bound;
 * `--verify` names a flipped byte and a missing file; a signed export checks
 * with its key and not with another.
 */
describe('e2e: export a model out of a training cluster', function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-export-'));
  const spec = mnistMlp.spec(5);
  const test = mnistSplit().test;

  before(async () => {
    await selectBackend('wasm');
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'adam', learningRate: 0.002 } });
  });
  after(async () => {
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function exportNow(options: Partial<Parameters<typeof exportModel>[1]> = {}) {
    const snapshot = await snapshotModel(cluster.store);
    const source = manifestSource({ cluster: 'test', membership: 'memory', consistency: 'async', epoch: snapshot.epoch, closedSteps: snapshot.closedSteps, shards: snapshot.shards });
    const task = await loadTask('mnist-mlp');
    return { snapshot, result: await exportModel({ spec, dense: snapshot.dense, tables: snapshot.tables, source }, { outDir: dir, evaluation: task.heldOut(), ...options }) };
  }

  async function outputsOf(versionDir: string, format: ModelFormat): Promise<Float32Array> {
    const model = await loadFormat(format, versionFileReader(versionDir));
    try {
      return await runAll(model, test.x.subarray(0, test.count * 784), test.count);
    } finally {
      await model.close();
    }
  }
  const classes = (p: ArrayLike<number>) => Int32Array.from({ length: p.length / 10 }, (_, r) => {
    let best = 0;
    for (let c = 1; c < 10; c++) if (p[r * 10 + c]! > p[r * 10 + best]!) best = c;
    return best;
  });

  it('exports while two workers train; the version loads in both runtimes', async () => {
    const abort = new AbortController();
    let steps = 0;
    const workers = [0, 1].map(async (i) => {
      const client = await cluster.client({ workerId: `w${i}` });
      return train({ client, model: mnistMlp, data: partition(mnistSplit().train, i, 2), epochs: 50, batchSize: 64, seed: i, pipeline: true, signal: abort.signal, onStep: () => void steps++ });
    });
    try {
      while (steps < 40) await new Promise((r) => setTimeout(r, 20));
      const before = steps;
      const { result } = await exportNow();
      expect(steps, 'the workers stepped on during the export').to.be.greaterThan(before);
      expect(result.version).to.equal(1);
      expect(result.manifest.formats).to.deep.equal(['onnx', 'tfjs']);
      expect(result.manifest.evaluation.onnx!['test_accuracy']).to.be.greaterThan(0.5);
      expect(result.manifest.evaluation.tfjs!['test_accuracy']).to.equal(result.manifest.evaluation.onnx!['test_accuracy']);
      for (const format of ['onnx', 'tfjs'] as const) expect((await outputsOf(result.dir, format)).length).to.equal(test.count * 10);
    } finally {
      abort.abort();
      await Promise.all(workers);
    }
  });

  it("once training stops, both formats predict what the cluster's model predicts on every held-out example", async () => {
    const client = await cluster.client({ workerId: 'reader' });
    const params = await client.pull();
    const inCluster = await mnistMlp.predict(params, test.x, test.count);
    const { result } = await exportNow();
    const reference = forward(buildGraph(spec, params), test.x.subarray(0, test.count * 784), test.count);
    for (const format of ['onnx', 'tfjs'] as const) {
      const p = await outputsOf(result.dir, format);
      expect(Array.from(classes(p)), `${format} classes`).to.deep.equal(Array.from(inCluster));
      let worst = 0;
      for (let i = 0; i < p.length; i++) worst = Math.max(worst, Math.abs(p[i]! - reference[i]!));
      expect(worst, `${format}: largest difference from a float64 forward pass`).to.be.below(1e-5);
    }
    const int8 = (await exportNow({ quantize: 'int8' })).result;
    for (const format of ['onnx', 'tfjs'] as const) {
      const agree = classes(await outputsOf(int8.dir, format)).filter((c, i) => c === inCluster[i]).length / test.count;
      expect(agree, `${format} int8: share of held-out classes unchanged`).to.be.at.least(0.99);
    }
  });

  it('--verify passes an intact version, and names a flipped byte and a missing file', async () => {
    const { result } = await exportNow();
    const ok = await run(['export', '--verify', result.dir]);
    expect(ok.code, ok.stderr).to.equal(0);
    expect(ok.stdout).to.match(/ok — mnist-mlp version \d+, 3 files match their SHA-256, not signed/).and.match(/onnx: loads and runs, input FP32 \[-1, 784\] → probabilities FP32 \[-1, 10\]/);
    const path = join(result.dir, 'tfjs', 'group1-shard1of1.bin');
    const bytes = readFileSync(path);
    bytes[1000] = bytes[1000]! ^ 0x01;
    writeFileSync(path, bytes);
    const flipped = await run(['export', '--verify', result.dir]);
    expect(flipped.code).to.equal(1);
    expect(flipped.stderr).to.match(/tfjs\/group1-shard1of1\.bin has changed/);
    unlinkSync(join(result.dir, 'model.onnx'));
    const missing = await run(['export', '--verify', result.dir]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.match(/model\.onnx is missing/);
  });

  it('a signed export verifies with its key and fails with another', async () => {
    const keys = () => generateKeyPairSync('ed25519');
    const mine = keys();
    const other = keys();
    const pem = (name: string, text: string | Buffer) => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const priv = mine.privateKey.export({ type: 'pkcs8', format: 'pem' });
    const { result } = await exportNow({ signKey: privateKeyFrom(priv, 'key') });
    expect(result.manifest.signature?.algorithm).to.equal('ed25519');
    const good = await run(['export', '--verify', result.dir, '--public-key', pem('mine.pub', mine.publicKey.export({ type: 'spki', format: 'pem' }))]);
    expect(good.code, good.stderr).to.equal(0);
    expect(good.stdout).to.match(/signed by key [0-9a-f]{16}… \(checked\)/);
    const bad = await run(['export', '--verify', result.dir, '--public-key', pem('other.pub', other.publicKey.export({ type: 'spki', format: 'pem' }))]);
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/not by the public key given/);
  });
});
