import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { type Manifest } from '../../serving/export/manifest.js';
import { versionFileReader } from '../../serving/export/versions.js';
import { decodeModel } from '../../serving/formats/onnx-proto.js';
import { loadFormat, runAll } from '../../serving/runtime/load.js';
import { selectBackend } from '../../worker/backend.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { argmaxAccuracy } from '../../worker/evaluate.js';
import { type Running, run, start, waitFor } from '../helpers/cli.js';

/**
 * Compression of mnist-mlp trained by `tessera local`: each `tessera export`
 * variant's manifest holds the accuracies this test measures itself from the
 * files on disk (ONNX and TensorFlow.js); fp16 costs ≤ 0.2 points, int8 ≤ 0.5,
 * pruning half the weights plus int8 ≤ 1 point and weighs ≥ 4× less than
 * float32 compressed (gzip; ≥ 3.9× raw: int8 is a quarter of float32, plus
 * the scales); --prune-units reports fewer parameters and the files hold
 * exactly that many.
 */
describe('e2e: compression of a model trained by tessera local', function () {
  this.timeout(240_000);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-compress-'));
  let local: Running;
  let membership: string;
  const test = mnistSplit().test;

  before(async () => {
    await selectBackend('wasm');
    local = start(['local', '--epochs', '6', '--stay', '--json'], 200_000);
    let out = '';
    local.child.stdout!.on('data', (d) => (out += d));
    const line = await waitFor('tessera local to finish training', () => out.includes('\n') && out.split('\n')[0], 180_000, 200);
    membership = (JSON.parse(line) as { membership: string }).membership;
  });
  after(async () => {
    local?.kill('SIGINT');
    await local?.finished;
    rmSync(dir, { recursive: true, force: true });
  });

  async function exportWith(...flags: string[]): Promise<{ dir: string; manifest: Manifest }> {
    const r = await run(['export', '--membership', membership, '--out', dir, '--json', ...flags]);
    expect(r.code, r.stderr).to.equal(0);
    const m = JSON.parse(r.stdout) as Manifest & { dir: string };
    return { dir: m.dir, manifest: m };
  }

  async function measured(versionDir: string, format: 'onnx' | 'tfjs'): Promise<number> {
    const model = await loadFormat(format, versionFileReader(versionDir));
    try {
      return argmaxAccuracy(await runAll(model, test.x.subarray(0, test.count * 784), test.count), test.count, 10, test.y);
    } finally {
      await model.close();
    }
  }

  it('each variant costs at most its bound, and the manifest holds what the files measure', async () => {
    const variants = [
      { flags: [], bound: 0 },
      { flags: ['--quantize', 'fp16'], bound: 0.002 },
      { flags: ['--quantize', 'int8'], bound: 0.005 },
      { flags: ['--prune', '0.5', '--quantize', 'int8'], bound: 0.01 },
    ];
    let baseline = NaN;
    for (const v of variants) {
      const { dir: versionDir, manifest } = await exportWith(...v.flags);
      const uncompressed = manifest.evaluation.uncompressed['test_accuracy']!;
      if (Number.isNaN(baseline)) baseline = uncompressed;
      expect(uncompressed, 'every export measures the same uncompressed model').to.equal(baseline);
      expect(baseline, 'a trained model').to.be.greaterThan(0.93);
      for (const format of ['onnx', 'tfjs'] as const) {
        const accuracy = await measured(versionDir, format);
        expect(manifest.evaluation[format]!['test_accuracy'], `${v.flags.join(' ')} ${format}: manifest = files`).to.equal(accuracy);
        expect(baseline - accuracy, `${v.flags.join(' ') || 'float32'} ${format}: points lost`).to.be.at.most(v.bound);
      }
      if (v.flags.includes('--prune')) {
        expect(manifest.parameters.nonzero_after).to.be.at.most(manifest.parameters.before * 0.51);
        for (const format of ['onnx', 'tfjs'] as const) {
          const s = manifest.size[format]!;
          expect(s.float32_gzip_bytes / s.gzip_bytes, `${format}: gzip bytes saved`).to.be.at.least(4);
          expect(s.float32_bytes / s.bytes, `${format}: raw bytes saved`).to.be.at.least(3.9);
        }
      }
    }
  });

  it('--prune-units reports fewer parameters, and the exported model has exactly them', async () => {
    const { dir: versionDir, manifest } = await exportWith('--prune-units', '0.5');
    expect(manifest.parameters.before).to.equal(203_530);
    expect(manifest.parameters.after).to.equal(784 * 128 + 128 + 128 * 10 + 10);
    const onnx = decodeModel(readFileSync(join(versionDir, 'model.onnx')));
    const held = onnx.graph!.initializer!.filter((t) => (t.name ?? '').match(/W1|b1|W2|b2/)).reduce((n, t) => n + (t.dims ?? []).reduce((a, d) => a * Number(d), 1), 0);
    expect(held).to.equal(manifest.parameters.after);
    const tfjs = JSON.parse(readFileSync(join(versionDir, 'tfjs', 'model.json'), 'utf8')) as { weightsManifest: { weights: { shape: number[] }[] }[] };
    expect(tfjs.weightsManifest[0]!.weights.reduce((n, w) => n + w.shape.reduce((a, d) => a * d, 1), 0)).to.equal(manifest.parameters.after);
    expect(manifest.evaluation.onnx!['test_accuracy']).to.be.greaterThan(0.9);
  });
});
