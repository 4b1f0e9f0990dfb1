import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import * as tf from '@tensorflow/tfjs-core';
import { initialValues } from '../../../cluster/model-spec.js';
import { BACKENDS, type BackendName, isBackendName, selectBackend } from '../../../worker/backend.js';
import { BackendUnavailableError } from '../../../worker/backend-errors.js';
import { mnistSplit } from '../../../worker/data/mnist.js';
import { mnistMlp } from '../../../worker/models/mnist-mlp.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as Error,
  );
  expect(err, 'expected a rejection').to.be.instanceOf(Error);
  return err!;
}

describe('worker/backend: choosing the compute backend', function () {
  this.timeout(20_000);
  after(async () => {
    await selectBackend('wasm');
  });

  it('picks the first available backend in order, and it is the active one', async () => {
    const chosen = await selectBackend();
    expect(BACKENDS).to.include(chosen);
    expect(tf.getBackend()).to.equal(chosen);
  });

  it('forces wasm and cpu, which are always installed', async () => {
    expect(await selectBackend('cpu')).to.equal('cpu');
    expect(tf.getBackend()).to.equal('cpu');
    expect(await selectBackend('wasm')).to.equal('wasm');
    expect(tf.getBackend()).to.equal('wasm');
  });

  for (const [name, pkg] of [
    ['tensorflow', '@tensorflow/tfjs-node'],
    ['webgpu', 'webgpu'],
  ] as const) {
    it(`forcing ${name} where it cannot run fails with BackendUnavailableError saying what to install`, async function () {
      // Where the package is installed and works (the GPU image), this test has nothing to show.
      const err = await selectBackend(name).then(
        () => null,
        (e: unknown) => e as Error,
      );
      if (err === null) this.skip();
      expect(err).to.be.instanceOf(BackendUnavailableError);
      const e = err as BackendUnavailableError;
      expect(e.code).to.equal(status.FAILED_PRECONDITION);
      expect(e.reason).to.equal('backend-unavailable');
      expect(e.backend).to.equal(name);
      expect(e.context()).to.deep.equal({ backend: name });
      expect(e.message).to.contain(`"${name}" is unavailable`);
      expect(e.message).to.contain(pkg);
      expect(e.message).to.contain('--backend wasm');
      // The active backend is left as it was.
      expect(tf.getBackend()).to.equal('wasm');
    });
  }

  it('refuses a name that is no backend with InvalidArgumentError listing the choices', async () => {
    const err = await rejection(selectBackend('tpu' as BackendName));
    expect(err.name).to.equal('InvalidArgumentError');
    expect(err.message).to.contain('tensorflow, webgpu, wasm, cpu');
    expect(isBackendName('wasm')).to.equal(true);
    expect(isBackendName('tpu')).to.equal(false);
  });
});

describe('worker/backend: wasm and cpu compute the same gradient', function () {
  this.timeout(20_000);
  const { train } = mnistSplit();
  const params = new Float32Array(mnistMlp.elements);
  initialValues(mnistMlp.spec(5), 0, params);
  const batch = { x: train.x, y: train.y, count: 64 };

  after(async () => {
    await tf.setBackend('wasm');
  });

  it('mnist-mlp, batch 64: gradient within 1e-5 of its largest element, loss and predictions equal', async () => {
    const results: Record<string, { loss: number; gradient: Float32Array; predicted: Int32Array }> = {};
    for (const backend of ['wasm', 'cpu']) {
      expect(await tf.setBackend(backend)).to.equal(true);
      const { loss, gradient } = await mnistMlp.gradient(params, batch);
      results[backend] = { loss, gradient, predicted: await mnistMlp.predict(params, train.x, 256) };
    }
    const { wasm, cpu } = results as Record<'wasm' | 'cpu', (typeof results)[string]>;
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < cpu.gradient.length; i++) {
      worst = Math.max(worst, Math.abs(wasm.gradient[i]! - cpu.gradient[i]!));
      scale = Math.max(scale, Math.abs(cpu.gradient[i]!));
    }
    expect(scale).to.be.above(0);
    expect(worst / scale).to.be.below(1e-5);
    expect(Math.abs(wasm.loss - cpu.loss) / cpu.loss).to.be.below(1e-5);
    expect([...wasm.predicted]).to.deep.equal([...cpu.predicted]);
  });
});
