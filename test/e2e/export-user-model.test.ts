import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { type Manifest } from '../../serving/export/manifest.js';
import { BIN, type Running, run, start, waitFor } from '../helpers/cli.js';

const EXAMPLE = join(BIN, '..', '..', 'docs', 'examples', 'two-moons.js');

/**
 * A model of one's own exports when its module describes its inference graph
 * (docs/user-models.md): two-moons, trained by `tessera local`, exported with
 * its module given for the held-out data, measured in both formats.
 */
describe('e2e: export a model of your own', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-export-user-'));
  let local: Running;
  let membership: string;

  before(async () => {
    local = start(['local', '--model', EXAMPLE, '--epochs', '5', '--stay', '--json'], 100_000);
    let out = '';
    local.child.stdout!.on('data', (d) => (out += d));
    const line = await waitFor('tessera local to finish training', () => out.includes('\n') && out.split('\n')[0], 90_000, 200);
    membership = (JSON.parse(line) as { membership: string }).membership;
  });
  after(async () => {
    local?.kill('SIGINT');
    await local?.finished;
    rmSync(dir, { recursive: true, force: true });
  });

  it('exports with the module’s held-out data; both formats measure what the uncompressed model does', async () => {
    const r = await run(['export', '--membership', membership, '--out', dir, '--model', EXAMPLE, '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const m = JSON.parse(r.stdout) as Manifest;
    expect(m.name).to.equal('two-moons');
    expect(m.model.inference.output?.labels).to.deep.equal(['upper moon', 'lower moon']);
    const accuracy = m.evaluation.uncompressed['test_accuracy']!;
    expect(accuracy).to.be.greaterThan(0.9);
    expect(m.evaluation.onnx!['test_accuracy']).to.equal(accuracy);
    expect(m.evaluation.tfjs!['test_accuracy']).to.equal(accuracy);
  });

  it('without the module, says how to give its held-out data', async () => {
    const r = await run(['export', '--membership', membership, '--out', dir]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/--model \.\/two-moons\.js|--model PATH|--evaluate=false/);
  });
});
