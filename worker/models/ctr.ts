import * as tf from '@tensorflow/tfjs-core';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type ModelSpec, type TensorSpec, layout, validateModelSpec } from '../../cluster/model-spec.js';
import { validateSparseTables } from '../../cluster/sparse-keys.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { CLICK_LOG_DEFAULTS } from '../data/click-log.js';
import { affine, matMulTranspose, transposeMatMul } from './ops.js';

/**
 * A click-through-rate model over categorical features: each of an
 * example's `fields` ids picks a row of {@link CTR_DIM} floats from the sparse
 * table {@link CTR_TABLE}; the rows, concatenated into x [fields·dim], go
 * through h = relu(x·W1 + b1), logit = h·W2 + b2, and the loss is the mean
 * sigmoid cross-entropy against the 0/1 click labels.
 *
 * The model sees only the rows the caller gathered, never ids: pulling rows
 * and pushing their gradients (summed over repeated ids) is the caller's.
 * The dense tensors W1 [fields·dim, hidden], b1 [hidden], W2 [hidden, 1],
 * b2 [1] are laid out as `layout(spec)` says. The backward pass is written by
 * hand, as for the dense models (see `dense-model.ts`).
 */

/** Floats per embedding row. */
export const CTR_DIM = 8;
/** Units of the hidden layer. */
export const CTR_HIDDEN = 32;
/** How the embedding rows are trained: adagrad, η 0.1, starting accumulator 0.1. */
export const CTR_ROW_OPTIMIZER = optimizerWithDefaults({ name: 'adagrad', learningRate: 0.1, initialAccumulator: 0.1 });
/** Name of the model's sparse table. */
export const CTR_TABLE = 'emb';

/** A CTR model's loss on a batch and its gradients. */
export interface CtrGradient {
  /** Mean log-loss over the batch. */
  loss: number;
  /** ∂loss/∂dense, laid out like the dense parameter vector. */
  dense: Float32Array;
  /** ∂loss/∂ each gathered row: count × fields rows of dim floats, example-major, as the rows were given. */
  rows: Float32Array;
}

/** The click-through-rate model for examples of a given number of fields. */
export interface CtrModel {
  readonly name: 'ctr';
  /** Ids (so embedding rows) per example. */
  readonly fields: number;
  /** Floats per embedding row ({@link CTR_DIM}). */
  readonly dim: number;
  /** Elements of the dense parameter vector. */
  readonly elements: number;
  /**
   * The cluster spec: dense tensors W1 [fields·dim, hidden], b1 [hidden],
   * W2 [hidden, 1], b2 [1] (glorot-uniform weights, zero biases), and the
   * sparse table `emb` of rows of dim floats drawn from U(−0.05, 0.05).
   * `seed` drives the initializers.
   */
  spec(seed: number): ModelSpec;
  /**
   * Mean log-loss of the batch and its gradients: dense (laid out like the
   * dense vector, written into `outDense` when given, else into a new array)
   * and rows (∂loss/∂ each gathered row, same layout as `rows`). `rows` holds
   * count × fields rows of dim floats, example-major (the row of example i,
   * field f at (i·fields + f)·dim); `rows` and `y` may be longer than needed.
   * The returned `rows` (and `dense` when no `outDense` is given) may share
   * one buffer. Inputs must not change until the promise settles.
   * @throws InvalidArgumentError for wrong lengths or labels other than 0 and 1.
   */
  gradient(dense: Float32Array, rows: Float32Array, y: Int32Array, count: number, outDense?: Float32Array): Promise<CtrGradient>;
  /**
   * Click probabilities of the `count` examples whose rows are in `rows` (layout as for {@link gradient}).
   * @throws InvalidArgumentError for wrong lengths.
   */
  predict(dense: Float32Array, rows: Float32Array, count: number): Promise<Float32Array>;
}

/** The CTR model for examples of `fields` ids. D = fields·dim·hidden + 2·hidden + 1. */
export function ctrModel(fields: number = CLICK_LOG_DEFAULTS.fields): CtrModel {
  if (!(Number.isInteger(fields) && fields >= 1)) throw new InvalidArgumentError(`a CTR model needs a positive integer number of fields, got ${fields}`);
  const dim = CTR_DIM;
  const inputs = fields * dim;
  const tensors: TensorSpec[] = [
    { name: 'W1', shape: [inputs, CTR_HIDDEN], init: { kind: 'glorot-uniform', fanIn: inputs, fanOut: CTR_HIDDEN } },
    { name: 'b1', shape: [CTR_HIDDEN], init: { kind: 'zeros' } },
    { name: 'W2', shape: [CTR_HIDDEN, 1], init: { kind: 'glorot-uniform', fanIn: CTR_HIDDEN, fanOut: 1 } },
    { name: 'b2', shape: [1], init: { kind: 'zeros' } },
  ];
  const spec = (seed: number): ModelSpec => ({
    name: 'ctr',
    seed,
    tensors: tensors.map((t) => ({ ...t, shape: [...t.shape] })),
    // Adagrad for the rows, whatever the dense tensors use: a row is updated only when its id comes up, and
    // adagrad's per-coordinate rate suits that (adam's moments go stale between touches and overfit; docs/worker.md).
    sparse: [{ name: CTR_TABLE, dim, init: { kind: 'uniform', low: -0.05, high: 0.05 }, optimizer: CTR_ROW_OPTIMIZER }],
    // Served: the example's ids, each row looked up (an id never trained reads zeros), through the MLP to the click probability.
    inference: {
      input: { kind: 'ids', table: CTR_TABLE, fields },
      layers: [
        { weight: 'W1', bias: 'b1', activation: 'relu' },
        { weight: 'W2', bias: 'b2', activation: 'sigmoid' },
      ],
      output: { name: 'click_probability' },
    },
  });
  validateModelSpec(spec(0));
  validateSparseTables(spec(0));
  const { tensors: placed, elements } = layout(spec(0));

  const checkDense = (dense: Float32Array): void => {
    if (dense.length !== elements) throw new InvalidArgumentError(`model ctr of ${fields} fields has ${elements} dense parameters but was given ${dense.length}`);
  };
  const checkRows = (rows: Float32Array, count: number): void => {
    if (!(Number.isInteger(count) && count >= 1)) throw new InvalidArgumentError(`a batch needs at least one example, got count ${count}`);
    const size = count * inputs;
    if (rows.length < size) throw new InvalidArgumentError(`${count} examples of ${fields} fields need ${size} row values (${dim} per row), got ${rows.length}`);
  };
  const checkLabels = (y: Int32Array, count: number): void => {
    if (y.length < count) throw new InvalidArgumentError(`${count} examples need ${count} labels, got ${y.length}`);
    for (let i = 0; i < count; i++) {
      const l = y[i]!;
      if (l !== 0 && l !== 1) throw new InvalidArgumentError(`label ${l} of example ${i} is not a click label (0 or 1)`);
    }
  };

  // Call inside tf.tidy.
  const unpack = (dense: Float32Array): [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D] => {
    const w: tf.Tensor[] = placed.map((t) => tf.tensor(dense.subarray(t.offset, t.offset + t.size), t.shape, 'float32'));
    return w as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D];
  };
  const features = (rows: Float32Array, count: number): tf.Tensor2D => tf.tensor2d(rows.subarray(0, count * inputs), [count, inputs], 'float32');

  return {
    name: 'ctr',
    fields,
    dim,
    elements,
    spec,

    async gradient(dense: Float32Array, rows: Float32Array, y: Int32Array, count: number, outDense?: Float32Array): Promise<CtrGradient> {
      checkDense(dense);
      checkRows(rows, count);
      checkLabels(y, count);
      if (outDense !== undefined && outDense.length !== elements) {
        throw new InvalidArgumentError(`gradient buffer holds ${outDense.length} values but model ctr of ${fields} fields has ${elements} dense parameters`);
      }
      // One tensor, one read-back: dense gradient, row gradients, loss.
      const packed = tf.tidy(() => {
        const [W1, b1, W2, b2] = unpack(dense);
        const x = features(rows, count);
        const labels = tf.cast(tf.tensor2d(y.subarray(0, count), [count, 1], 'int32'), 'float32') as tf.Tensor2D;
        const h = tf.relu(affine(x, W1, b1));
        const { loss, dLogits } = sigmoidCrossEntropy(affine(h, W2, b2), labels);
        // relu'(z) is taken as 0 at z = 0, as TensorFlow does; h > 0 exactly where z > 0.
        const dz = tf.mul<tf.Tensor2D>(matMulTranspose(dLogits, W2), tf.step(h));
        const parts = [transposeMatMul(x, dz), tf.sum(dz, 0), transposeMatMul(h, dLogits), tf.sum(dLogits, 0), matMulTranspose(dz, W1), loss];
        return tf.concat(parts.map((p) => tf.reshape(p, [-1])));
      });
      let values: Float32Array;
      try {
        values = (await packed.data()) as Float32Array;
      } finally {
        packed.dispose();
      }
      const rowValues = count * inputs;
      let denseGradient = values.subarray(0, elements);
      if (outDense) {
        outDense.set(denseGradient);
        denseGradient = outDense;
      }
      return { loss: values[elements + rowValues]!, dense: denseGradient, rows: values.subarray(elements, elements + rowValues) };
    },

    async predict(dense: Float32Array, rows: Float32Array, count: number): Promise<Float32Array> {
      checkDense(dense);
      checkRows(rows, count);
      const probabilities = tf.tidy(() => {
        const [W1, b1, W2, b2] = unpack(dense);
        return tf.reshape(tf.sigmoid(affine(tf.relu(affine(features(rows, count), W1, b1)), W2, b2)), [-1]);
      });
      try {
        return (await probabilities.data()) as Float32Array;
      } finally {
        probabilities.dispose();
      }
    },
  };
}

/** The CTR model for {@link CLICK_LOG_DEFAULTS}' number of fields. */
export const ctr: CtrModel = ctrModel();

/**
 * Mean sigmoid cross-entropy of `logits` [n, 1] against 0/1 `labels` [n, 1],
 * and its gradient with respect to the logits, (sigmoid(logits) − labels) / n.
 * The loss per example is written max(z, 0) − z·y + log(1 + e^(−|z|)), which
 * neither overflows nor takes log(0) for any z. Call inside `tf.tidy`.
 */
function sigmoidCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor2D): { loss: tf.Scalar; dLogits: tf.Tensor2D } {
  const n = logits.shape[0];
  const perExample = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, labels)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
  const loss = tf.div(tf.sum(perExample), n) as tf.Scalar;
  const dLogits = tf.div(tf.sub(tf.sigmoid(logits), labels), n) as tf.Tensor2D;
  return { loss, dLogits };
}
