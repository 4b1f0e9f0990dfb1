import { expect } from 'chai';
import { run } from '../helpers/cli.js';

async function local(args: string[]): Promise<Record<string, number | string>> {
  const r = await run(['local', '--json', ...args], 170_000);
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as Record<string, number | string>;
}

/**
 * Whole-cluster runs (2 shards and 2 workers, each its own process) of the
 * models and consistency models: accuracy bars, not timings.
 */
describe('e2e: models and consistency models through tessera local', function () {
  this.timeout(180_000);

  it('async, 2 workers: mnist-mlp reaches ≥ 0.97 held-out accuracy (20 epochs, ±1 px shifts, lr × 0.1 from epoch 15)', async () => {
    const out = await local(['--epochs', '20', '--lr-drop-epoch', '15']);
    expect(out['consistency']).to.equal('async');
    expect(out['workers']).to.equal(2);
    expect(out['augment']).to.equal(1);
    expect(out['lr_drop_after_steps']).to.equal(15 * 125);
    expect(out['test_accuracy']).to.be.at.least(0.97);
  });

  it('ctr: held-out AUC within 0.02 of the ground-truth model’s AUC on the same data', async () => {
    const out = await local(['--model', 'ctr', '--epochs', '1']);
    expect(out['model']).to.equal('ctr');
    const gap = (out['reference_auc'] as number) - (out['test_auc'] as number);
    expect(out['reference_auc']).to.be.within(0.7, 0.9);
    expect(Math.abs(gap), `test_auc ${out['test_auc']} against reference_auc ${out['reference_auc']}`).to.be.at.most(0.02);
  });

  for (const consistency of ['bsp', 'ssp:2']) {
    it(`--consistency ${consistency}: the run finishes (workers that run out of blocks stop holding the others) and trains`, async () => {
      const out = await local(['--consistency', consistency, '--epochs', '2']);
      expect(out['consistency']).to.equal(consistency);
      expect(out['steps']).to.equal(250);
      expect(out['test_accuracy']).to.be.greaterThan(0.88);
    });
  }
});
