import { expect } from 'chai';
import { initialValues } from '../../../cluster/model-spec.js';
import { sgd } from '../../../server/optimizers.js';
import { selectBackend } from '../../../worker/backend.js';
import { epochBatches, partition, subset } from '../../../worker/data/dataset.js';
import { mnistSplit } from '../../../worker/data/mnist.js';
import { accuracy } from '../../../worker/evaluate.js';
import { logreg } from '../../../worker/models/logreg.js';
import { mnistMlp } from '../../../worker/models/mnist-mlp.js';
import { type Model } from '../../../worker/models/model.js';
import { type ParameterClient, type StepEvent, train } from '../../../worker/trainer.js';

/** The shard's plain-SGD update on a local vector, recording the order of calls. */
function localSgd(model: Model, lr: number, seed = 1): ParameterClient & { values: Float32Array; calls: string[]; pushed: Float32Array[] } {
  const values = new Float32Array(model.elements);
  initialValues(model.spec(seed), 0, values);
  const calls: string[] = [];
  const pushed: Float32Array[] = [];
  let inFlight = false;
  const enter = async (name: string) => {
    if (inFlight) throw new Error(`${name} started while a call was in flight`);
    inFlight = true;
    calls.push(name);
    await new Promise((r) => setImmediate(r));
    inFlight = false;
  };
  return {
    elements: model.elements,
    values,
    calls,
    pushed,
    async pull(out) {
      await enter('pull');
      out.set(values);
      return out;
    },
    async push(gradient) {
      await enter('push');
      if (pushed.length < 3) pushed.push(Float32Array.from(gradient));
      sgd(values, gradient, 0, gradient.length, lr);
    },
  };
}

describe('worker/trainer: the pull → compute → push loop', function () {
  this.timeout(30_000);
  const { train: trainSet, test } = mnistSplit();

  before(async () => {
    await selectBackend('wasm');
  });

  it('pulls, computes on the next seeded batch, pushes that gradient: strictly in turn', async () => {
    const data = partition(trainSet, 0, 40); // 200 examples: 3 batches of 64 per epoch
    const client = localSgd(logreg, 0.5);
    const start = Float32Array.from(client.values);
    const events: StepEvent[] = [];
    const result = await train({ client, model: logreg, data, epochs: 2, seed: 4, pipeline: false, onStep: (e) => events.push({ ...e }) });
    expect(result.steps).to.equal(6);
    expect(result.samples).to.equal(6 * 64);
    expect(result.aborted).to.equal(false);
    expect(client.calls).to.deep.equal(Array.from({ length: 6 }, () => ['pull', 'push']).flat());
    expect(events.map((e) => [e.step, e.epoch, e.samples])).to.deep.equal([
      [1, 0, 64],
      [2, 0, 128],
      [3, 0, 192],
      [4, 1, 256],
      [5, 1, 320],
      [6, 1, 384],
    ]);
    expect(result.lastLoss).to.equal(events.at(-1)!.loss);
    // The first push is the gradient at the first weights on the first batch of epoch 0.
    const [firstBatch] = epochBatches(data, 64, 4, 0);
    const expected = await logreg.gradient(start, firstBatch!);
    expect(client.pushed[0]).to.deep.equal(expected.gradient);
    expect(events[0]!.loss).to.equal(expected.loss);
  });

  it('stops between steps when its signal aborts, and says so', async () => {
    const controller = new AbortController();
    const client = localSgd(logreg, 0.5);
    const result = await train({ client, model: logreg, data: trainSet, epochs: 5, seed: 1, pipeline: false, signal: controller.signal, onStep: (e) => e.step === 7 && controller.abort() });
    expect(result).to.include({ steps: 7, samples: 7 * 64, aborted: true });
    expect(client.calls).to.have.length(14);
  });

  it('pipelined: the next pull and this push overlap the compute, one of each in flight at most', async () => {
    const data = partition(trainSet, 0, 40); // 3 batches of 64 per epoch
    const values = new Float32Array(logreg.elements);
    initialValues(logreg.spec(1), 0, values);
    const log: string[] = [];
    let pulls = 0;
    let pushes = 0;
    let maxPulls = 0;
    let maxPushes = 0;
    const pushed: Float32Array[] = [];
    const client: ParameterClient = {
      elements: logreg.elements,
      async pull(out) {
        maxPulls = Math.max(maxPulls, ++pulls);
        log.push('pull');
        await new Promise((r) => setTimeout(r, 5));
        out.set(values);
        pulls--;
        return out;
      },
      async push(gradient) {
        maxPushes = Math.max(maxPushes, ++pushes);
        log.push('push');
        const copy = Float32Array.from(gradient);
        await new Promise((r) => setTimeout(r, 5));
        // The trainer must not overwrite a gradient while its push is in flight.
        expect(gradient).to.deep.equal(copy);
        pushed.push(copy);
        sgd(values, copy, 0, copy.length, 0.5);
        pushes--;
      },
    };
    const result = await train({ client, model: logreg, data, epochs: 2, seed: 4 });
    expect(result.steps).to.equal(6);
    expect(pushed).to.have.length(6);
    expect(maxPulls).to.equal(1);
    expect(maxPushes).to.equal(1);
    expect(pushes).to.equal(0);
    // The pull of step 2 was issued before step 1's push: it went out during step 1's compute.
    expect(log.slice(0, 3)).to.deep.equal(['pull', 'pull', 'push']);
    expect(log.filter((c) => c === 'pull')).to.have.length(6);
  });

  it('refuses a model that does not match the cluster, or data that cannot fill a batch', async () => {
    const client = localSgd(logreg, 0.5);
    await expectInvalid(train({ client, model: mnistMlp, data: trainSet, epochs: 1, seed: 1 }), /cluster's model has 7850 parameters but model mnist-mlp has 203530/);
    await expectInvalid(train({ client, model: logreg, data: subset(trainSet, [1, 2, 3]), epochs: 1, seed: 1 }), /3 examples do not fill one batch of 64/);
    await expectInvalid(train({ client, model: logreg, data: trainSet, batchSize: 0, epochs: 1, seed: 1 }), /batch size/);
    expect(client.calls).to.deep.equal([]);
  });

  it('sanity: 200 plain SGD steps of mnist-mlp lift test accuracy far above chance', async () => {
    const client = localSgd(mnistMlp, 0.1, 7);
    const before = await accuracy(mnistMlp, client.values, test);
    const controller = new AbortController();
    const result = await train({ client, model: mnistMlp, data: partition(trainSet, 0, 1), epochs: 2, seed: 7, pipeline: false, signal: controller.signal, onStep: (e) => e.step === 200 && controller.abort() });
    expect(result.steps).to.equal(200);
    const after = await accuracy(mnistMlp, client.values, test);
    expect(before).to.be.below(0.3);
    expect(after).to.be.above(0.85);
  });
});

async function expectInvalid(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as Error,
  );
  expect(err).to.be.instanceOf(Error);
  expect(err!.name).to.equal('InvalidArgumentError');
  expect(err!.message).to.match(message);
}
