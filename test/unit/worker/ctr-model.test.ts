import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { initialValues, layout } from '../../../cluster/model-spec.js';
import { selectBackend } from '../../../worker/backend.js';
import { CLICK_LOG_DEFAULTS } from '../../../worker/data/click-log.js';
import { seededRandom } from '../../../worker/data/random.js';
import { CTR_DIM, CTR_HIDDEN, CTR_ROW_OPTIMIZER, CTR_TABLE, ctr, type CtrModel, ctrModel } from '../../../worker/models/ctr.js';
import { expectRejection } from '../../helpers/expect-errors.js';

/**
 * A float64 reference of the CTR network, loop by loop with no TensorFlow.js:
 * x = the example's rows concatenated, h = relu(x·W1 + b1), logit = h·W2 + b2,
 * loss = mean log-loss; gradients by backpropagation.
 */
interface Reference {
  logits: Float64Array;
  loss: number;
  dense: Float64Array;
  rows: Float64Array;
}

function reference(dense: ArrayLike<number>, rows: ArrayLike<number>, y: ArrayLike<number>, n: number, inputs: number, hidden: number): Reference {
  const W1 = 0;
  const b1 = W1 + inputs * hidden;
  const W2 = b1 + hidden;
  const b2 = W2 + hidden;
  const h = new Float64Array(n * hidden);
  const logits = new Float64Array(n);
  let loss = 0;
  for (let e = 0; e < n; e++) {
    let z = dense[b2]!;
    for (let o = 0; o < hidden; o++) {
      let s = dense[b1 + o]!;
      for (let i = 0; i < inputs; i++) s += rows[e * inputs + i]! * dense[W1 + i * hidden + o]!;
      h[e * hidden + o] = Math.max(0, s);
      z += h[e * hidden + o]! * dense[W2 + o]!;
    }
    logits[e] = z;
    // −log sigmoid(z) for a click, −log(1 − sigmoid(z)) otherwise.
    loss += y[e] === 1 ? Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
  }
  const grad = new Float64Array(b2 + 1);
  const dRows = new Float64Array(n * inputs);
  for (let e = 0; e < n; e++) {
    const d = (1 / (1 + Math.exp(-logits[e]!)) - y[e]!) / n;
    grad[b2] += d;
    for (let o = 0; o < hidden; o++) {
      grad[W2 + o] += h[e * hidden + o]! * d;
      if (h[e * hidden + o]! <= 0) continue; // relu'(z) = 0 where the activation is 0
      const dz = dense[W2 + o]! * d;
      grad[b1 + o] += dz;
      for (let i = 0; i < inputs; i++) {
        grad[W1 + i * hidden + o] += rows[e * inputs + i]! * dz;
        dRows[e * inputs + i] += dense[W1 + i * hidden + o]! * dz;
      }
    }
  }
  return { logits, loss: loss / n, dense: grad, rows: dRows };
}

/** Random inputs: the model's first dense weights with biases drawn from ±0.1, rows from ±0.5, labels of both classes. */
function inputs(model: CtrModel, count: number, seed: number): { dense: Float32Array; rows: Float32Array; y: Int32Array } {
  const spec = model.spec(seed);
  const dense = new Float32Array(model.elements);
  initialValues(spec, 0, dense);
  const random = seededRandom(seed);
  for (const t of layout(spec).tensors) {
    if (t.shape.length !== 1) continue;
    for (let i = 0; i < t.size; i++) dense[t.offset + i] = 0.2 * (random() - 0.5);
  }
  const rows = Float32Array.from({ length: count * model.fields * model.dim }, () => random() - 0.5);
  const y = Int32Array.from({ length: count }, (_, i) => (i < 2 ? i : random() < 0.4 ? 1 : 0));
  return { dense, rows, y };
}

const maxAbs = (xs: ArrayLike<number>): number => Array.from(xs).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

describe('worker/models: ctr spec', () => {
  it('declares W1, b1, W2, b2 and the sparse table emb', () => {
    const spec = ctr.spec(4);
    expect(ctr.name).to.equal('ctr');
    expect(ctr.fields).to.equal(CLICK_LOG_DEFAULTS.fields);
    expect(ctr.dim).to.equal(CTR_DIM);
    expect(spec.name).to.equal('ctr');
    expect(spec.seed).to.equal(4);
    const inputSize = CLICK_LOG_DEFAULTS.fields * CTR_DIM;
    expect(spec.tensors).to.deep.equal([
      { name: 'W1', shape: [inputSize, CTR_HIDDEN], init: { kind: 'glorot-uniform', fanIn: inputSize, fanOut: CTR_HIDDEN } },
      { name: 'b1', shape: [CTR_HIDDEN], init: { kind: 'zeros' } },
      { name: 'W2', shape: [CTR_HIDDEN, 1], init: { kind: 'glorot-uniform', fanIn: CTR_HIDDEN, fanOut: 1 } },
      { name: 'b2', shape: [1], init: { kind: 'zeros' } },
    ]);
    expect(spec.sparse).to.deep.equal([{ name: CTR_TABLE, dim: CTR_DIM, init: { kind: 'uniform', low: -0.05, high: 0.05 }, optimizer: CTR_ROW_OPTIMIZER }]);
    expect(CTR_ROW_OPTIMIZER).to.include({ name: 'adagrad', learningRate: 0.1, initialAccumulator: 0.1 });
    expect(ctr.elements).to.equal(layout(spec).elements);
    expect(ctr.elements).to.equal(inputSize * CTR_HIDDEN + 2 * CTR_HIDDEN + 1);
    expect(ctrModel(3).elements).to.equal(3 * CTR_DIM * CTR_HIDDEN + 2 * CTR_HIDDEN + 1);
    expect(() => ctrModel(0)).to.throw(/positive integer number of fields/);
  });
});

for (const [model, count] of [
  [ctrModel(3), 6],
  [ctr, 5],
] as const) {
  describe(`worker/models: ctr of ${model.fields} fields against a float64 reference`, function () {
    this.timeout(20_000);
    const inputSize = model.fields * model.dim;
    const { dense, rows, y } = inputs(model, count, 17);
    const ref = reference(dense, rows, y, count, inputSize, CTR_HIDDEN);
    const denseScale = maxAbs(ref.dense);
    const rowScale = maxAbs(ref.rows);

    before(async () => {
      await selectBackend('cpu');
    });

    it('the reference agrees with central finite differences of its float64 loss', () => {
      const h = 1e-6;
      const lossAt = (d: Float64Array, r: Float64Array): number => reference(d, r, y, count, inputSize, CTR_HIDDEN).loss;
      const d0 = Float64Array.from(dense);
      const r0 = Float64Array.from(rows);
      const denseProbes = layout(model.spec(17)).tensors.flatMap((t) => [0, 1, 2].map((k) => t.offset + Math.floor(((2 * k + 1) * t.size) / 6)));
      for (const p of denseProbes) {
        const plus = Float64Array.from(d0);
        const minus = Float64Array.from(d0);
        plus[p]! += h;
        minus[p]! -= h;
        expect((lossAt(plus, r0) - lossAt(minus, r0)) / (2 * h), `dense element ${p}`).to.be.closeTo(ref.dense[p]!, 1e-7 + 1e-5 * denseScale);
      }
      for (const p of [0, 5, Math.floor(rows.length / 2), rows.length - 1]) {
        const plus = Float64Array.from(r0);
        const minus = Float64Array.from(r0);
        plus[p]! += h;
        minus[p]! -= h;
        expect((lossAt(d0, plus) - lossAt(d0, minus)) / (2 * h), `row value ${p}`).to.be.closeTo(ref.rows[p]!, 1e-7 + 1e-5 * rowScale);
      }
    });

    it('matches the reference loss and gradients of the dense parameters and the rows, leaving no tensor behind', async () => {
      const tensorsBefore = tf.memory().numTensors;
      const g = await model.gradient(dense, rows, y, count);
      expect(tf.memory().numTensors).to.equal(tensorsBefore);
      expect(g.loss).to.be.closeTo(ref.loss, 1e-5);
      expect(g.dense.length).to.equal(model.elements);
      expect(g.rows.length).to.equal(count * inputSize);
      for (let i = 0; i < g.dense.length; i++) expect(g.dense[i], `dense element ${i}`).to.be.closeTo(ref.dense[i]!, 1e-4 * denseScale + 1e-7);
      for (let i = 0; i < g.rows.length; i++) expect(g.rows[i], `row value ${i}`).to.be.closeTo(ref.rows[i]!, 1e-4 * rowScale + 1e-7);
      // The gradients carry signal: a test of zeros against zeros would pass the loops above.
      expect(denseScale).to.be.above(1e-3);
      expect(rowScale).to.be.above(1e-4);
    });

    it('writes the dense gradient into a given buffer, and reads only the examples asked for', async () => {
      const out = new Float32Array(model.elements).fill(NaN);
      const longerRows = Float32Array.from([...rows, ...new Array<number>(inputSize).fill(7)]);
      const longerY = Int32Array.from([...y, 5]);
      const g = await model.gradient(dense, longerRows, longerY, count, out);
      expect(g.dense).to.equal(out);
      expect(g.rows.length).to.equal(count * inputSize);
      for (let i = 0; i < out.length; i++) expect(out[i]).to.be.closeTo(ref.dense[i]!, 1e-4 * denseScale + 1e-7);
    });

    it('predicts the sigmoid of the reference logit, leaving no tensor behind', async () => {
      const tensorsBefore = tf.memory().numTensors;
      const p = await model.predict(dense, rows, count);
      expect(tf.memory().numTensors).to.equal(tensorsBefore);
      expect(p).to.be.instanceOf(Float32Array);
      expect(p.length).to.equal(count);
      for (let e = 0; e < count; e++) expect(p[e]).to.be.closeTo(1 / (1 + Math.exp(-ref.logits[e]!)), 1e-6);
    });

    it('rejects inputs of the wrong size and labels other than 0 and 1, leaving no tensor behind', async () => {
      const tensorsBefore = tf.memory().numTensors;
      await expectRejection(model.gradient(dense.subarray(1), rows, y, count), /dense parameters but was given/);
      await expectRejection(model.gradient(dense, rows.subarray(1), y, count), /row values/);
      await expectRejection(model.gradient(dense, rows, y.subarray(1), count), /labels/);
      await expectRejection(model.gradient(dense, rows, Int32Array.from(y, (l, i) => (i === 1 ? 2 : l)), count), /label 2 of example 1/);
      await expectRejection(model.gradient(dense, rows, y, 0), /at least one example/);
      await expectRejection(model.gradient(dense, rows, y, count, new Float32Array(3)), /gradient buffer/);
      await expectRejection(model.predict(dense, rows, count + 1), /row values/);
      await expectRejection(model.predict(new Float32Array(2), rows, count), /dense parameters/);
      expect(tf.memory().numTensors).to.equal(tensorsBefore);
    });
  });
}

describe('worker/models: ctr log-loss far from zero', function () {
  before(async () => {
    await selectBackend('cpu');
  });

  it('stays finite and exact for logits of ±100', async () => {
    const model = ctrModel(1);
    const dense = new Float32Array(model.elements); // all weights 0: logit = b2
    const rows = new Float32Array(2 * model.dim);
    const { tensors } = layout(model.spec(0));
    const b2 = tensors.find((t) => t.name === 'b2')!.offset;
    for (const [bias, label] of [
      [100, 0],
      [-100, 1],
    ] as const) {
      dense[b2] = bias;
      const g = await model.gradient(dense, rows, Int32Array.of(label, label), 2);
      expect(g.loss).to.be.closeTo(100, 1e-4);
      expect(g.dense[b2]).to.be.closeTo(label === 0 ? 1 : -1, 1e-6);
      const p = await model.predict(dense, rows, 2);
      expect(p[0]).to.be.closeTo(label === 0 ? 1 : 0, 1e-6);
    }
  });
});
