import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { initialValues, layout } from '../../../cluster/model-spec.js';
import { selectBackend } from '../../../worker/backend.js';
import { mnistSplit } from '../../../worker/data/mnist.js';
import { type DenseModelDefinition, defineDenseModel } from '../../../worker/models/dense-model.js';
import { logreg, logregDefinition } from '../../../worker/models/logreg.js';
import { mlpDefinition, mnistMlp } from '../../../worker/models/mnist-mlp.js';
import { softmaxCrossEntropyLoss } from '../../../worker/models/softmax-cross-entropy.js';
import { type Model } from '../../../worker/models/model.js';
import { layersOf, referenceGradient, referenceLoss, referencePredict } from './float64-reference.js';
import { expectRejection } from '../../helpers/expect-errors.js';

const EXAMPLES = 4;

/** The model's first weights, with its zero biases drawn from ±0.1 so that the bias paths carry signal. */
function parameters(model: Model, seed: number): Float32Array {
  const spec = model.spec(seed);
  const params = new Float32Array(model.elements);
  initialValues(spec, 0, params);
  let s = seed;
  for (const t of layout(spec).tensors) {
    if (t.shape.length !== 1) continue;
    for (let i = 0; i < t.size; i++) params[t.offset + i] = 0.2 * (((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5);
  }
  return params;
}

/** The same model with its backward pass left to TensorFlow.js's autodiff (worker/models/autodiff.ts). */
const byAutodiff = (def: DenseModelDefinition): Model => defineDenseModel({ ...def, name: `${def.name}-autodiff`, lossAndGradients: undefined });

for (const [model, sizes] of [
  [mnistMlp, [784, 256, 10]],
  [logreg, [784, 10]],
  [byAutodiff(mlpDefinition('mnist-mlp', 256)), [784, 256, 10]],
  [byAutodiff(logregDefinition), [784, 10]],
] as const) {
  describe(`worker/models: ${model.name} gradient against a float64 reference`, function () {
    this.timeout(20_000);
    const { train } = mnistSplit();
    const batch = { x: train.x.subarray(0, EXAMPLES * 784), y: train.y.subarray(0, EXAMPLES), count: EXAMPLES };
    const params = parameters(model, 3);
    const layers = layersOf(params, sizes);
    const reference = referenceGradient(layers, batch.x, batch.y, EXAMPLES);
    const scale = reference.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    // A few elements of each tensor, spread over it.
    const probes = layout(model.spec(3)).tensors.flatMap((t) => [0, 1, 2, 3].map((k) => t.offset + Math.floor(((2 * k + 1) * t.size) / 8)));

    before(async () => {
      await selectBackend('wasm');
    });

    it('has the layout its spec declares', () => {
      expect(model.elements).to.equal(layout(model.spec(0)).elements);
      expect(reference.length).to.equal(model.elements);
    });

    it('the reference agrees with central finite differences of the float64 loss', () => {
      const h = 1e-6;
      for (const p of probes) {
        const plus = Float64Array.from(params);
        const minus = Float64Array.from(params);
        plus[p]! += h;
        minus[p]! -= h;
        const fd = (referenceLoss(layersOf(plus, sizes), batch.x, batch.y, EXAMPLES) - referenceLoss(layersOf(minus, sizes), batch.x, batch.y, EXAMPLES)) / (2 * h);
        expect(Math.abs(fd - reference[p]!), `element ${p}`).to.be.at.most(1e-7 + 1e-5 * scale);
      }
    });

    it('matches the reference on every element, and the loss', async () => {
      const tensorsBefore = tf.memory().numTensors;
      const { loss, gradient } = await model.gradient(params, batch);
      expect(tf.memory().numTensors).to.equal(tensorsBefore);
      expect(loss).to.be.closeTo(referenceLoss(layers, batch.x, batch.y, EXAMPLES), 1e-5);
      let worst = 0;
      for (let i = 0; i < gradient.length; i++) worst = Math.max(worst, Math.abs(gradient[i]! - reference[i]!));
      // float32 sums of ≤ 784 terms: a few ulps of the largest element.
      expect(worst / scale).to.be.below(1e-5);
      for (const p of probes) expect(gradient[p]).to.be.closeTo(reference[p]!, 1e-6 * scale + 1e-9);
    });

    it('writes into a given buffer and predicts the reference argmax', async () => {
      const out = new Float32Array(model.elements).fill(NaN);
      const { gradient } = await model.gradient(params, batch, out);
      expect(gradient).to.equal(out);
      expect(out.every(Number.isFinite)).to.equal(true);
      const predicted = await model.predict(params, batch.x, EXAMPLES);
      expect([...predicted]).to.deep.equal(referencePredict(layers, batch.x, EXAMPLES));
    });

    it('rejects inputs of the wrong size or with labels out of range, leaving no tensor behind', async () => {
      const tensorsBefore = tf.memory().numTensors;
      await expectRejection(model.gradient(params.subarray(1), batch), /parameters/);
      await expectRejection(model.gradient(params, { ...batch, count: 1000 }), /input values/);
      await expectRejection(model.gradient(params, { ...batch, y: Int32Array.of(0, 1, 10, 2) }), /label 10/);
      await expectRejection(model.gradient(params, batch, new Float32Array(3)), /gradient buffer/);
      expect(tf.memory().numTensors).to.equal(tensorsBefore);
    });
  });
}


describe("worker/models: a model's own loss, differentiated by autodiff", () => {
  it('an L2 penalty on W adds exactly λ·W to the gradient of W, and nothing to b', async () => {
    await selectBackend('wasm');
    const LAMBDA = 0.25;
    const penalised = defineDenseModel({
      ...logregDefinition,
      name: 'logreg-l2',
      lossAndGradients: undefined,
      loss: (w, x, labels) => tf.add(softmaxCrossEntropyLoss(logregDefinition.logits(w, x), labels), tf.mul(LAMBDA / 2, tf.sum(tf.square(w[0]!)))),
    });
    const { train } = mnistSplit();
    const batch = { x: train.x.subarray(0, EXAMPLES * 784), y: train.y.subarray(0, EXAMPLES), count: EXAMPLES };
    const params = parameters(logreg, 5);
    for (let i = 0; i < 7840; i++) params[i] = Math.fround(Math.sin(i) * 0.01);
    const plain = await logreg.gradient(params, batch);
    const tensorsBefore = tf.memory().numTensors;
    const withPenalty = await penalised.gradient(params, batch);
    expect(tf.memory().numTensors, 'no tensor left behind').to.equal(tensorsBefore);
    let sumSquares = 0;
    for (let i = 0; i < 7840; i++) sumSquares += params[i]! * params[i]!;
    expect(withPenalty.loss).to.be.closeTo(plain.loss + (LAMBDA / 2) * sumSquares, 1e-5);
    for (let i = 0; i < params.length; i++) {
      const want = plain.gradient[i]! + (i < 7840 ? LAMBDA * params[i]! : 0);
      expect(withPenalty.gradient[i], `element ${i}`).to.be.closeTo(want, 1e-6);
    }
  });
});
