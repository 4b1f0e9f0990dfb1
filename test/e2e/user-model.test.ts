import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { loadTask } from '../../worker/tasks/index.js';
import { run } from '../helpers/cli.js';

const EXAMPLE = fileURLToPath(new URL('../../../docs/examples/two-moons.js', import.meta.url));

/** `--model ./my-model.js`: the documented example trains through a whole local cluster; broken modules get clear errors. */
describe('e2e: a model of your own', function () {
  this.timeout(120_000);

  it('tessera local --model docs/examples/two-moons.js trains it and reports held-out accuracy', async () => {
    const r = await run(['local', '--model', EXAMPLE, '--epochs', '5', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as Record<string, number | string>;
    expect(out['model']).to.equal('two-moons');
    expect(out['learning_rate'], "the module's own tuned rate").to.equal(0.01);
    expect(out['test_accuracy']).to.be.at.least(0.9);
  });

  it('a module that is missing, exports no function, or lacks a member is refused naming what to fix', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-model-'));
    const noFunction = join(dir, 'object.js');
    writeFileSync(noFunction, 'export default { name: "x" };\n');
    const noData = join(dir, 'no-data.js');
    writeFileSync(noData, 'export default () => ({ name: "x", inputSize: 1, classes: 2, tensors: [], logits() {}, lossAndGradients() {} });\n');
    const lossNotAFunction = join(dir, 'loss-value.js');
    writeFileSync(lossNotAFunction, 'export default () => ({ name: "x", inputSize: 1, classes: 2, tensors: [], logits() {}, data() {}, loss: 0.5 });\n');
    for (const [path, message] of [
      [join(dir, 'missing.js'), /cannot load model module/],
      [noFunction, /must export a default function/],
      [noData, /has no "data"/],
      [lossNotAFunction, /"loss" of the model .* must be a function/],
    ] as const) {
      const err = await loadTask(path).catch((e: unknown) => e);
      expect(err, path).to.be.instanceOf(InvalidArgumentError);
      expect((err as Error).message).to.match(message);
    }
    const err = await loadTask('no-such-model').catch((e: unknown) => e);
    expect((err as Error).message).to.match(/built-in models: mnist-mlp, logreg, ctr/);
  });
});
