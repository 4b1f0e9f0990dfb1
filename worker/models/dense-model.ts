import * as tf from '@tensorflow/tfjs-core';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type InferenceSpec, type ModelSpec, type TensorSpec, layout, validateModelSpec } from '../../cluster/model-spec.js';
import { lossAndGradientsOf } from './autodiff.js';
import { type Batch, type GradientResult, type Model } from './model.js';
import { softmaxCrossEntropyLoss } from './softmax-cross-entropy.js';

/**
 * The tensor-level part of a classifier over dense parameters: what differs
 * from one model to the next. {@link defineDenseModel} adds what they share:
 * moving the flat vector and the batch in and out of the backend, checks,
 * the loss and its gradients, and tensor hygiene.
 *
 * The gradients come from `lossAndGradients` when the model writes its
 * backward pass by hand (the built-in models do: it uses only kernels every
 * backend has, and the unit tests check it against a float64 reference);
 * otherwise from TensorFlow.js's autodiff over `loss` (autodiff.ts), and the
 * loss is mean softmax cross-entropy of `logits` unless `loss` says otherwise.
 */
export interface DenseModelDefinition {
  name: string;
  inputSize: number;
  classes: number;
  /** The tensors, in the order they are laid out in the flat vector. */
  tensors: readonly TensorSpec[];
  /** Logits [n, classes] of inputs `x` [n, inputSize]; `w` holds the tensors in declared order and shapes. */
  logits(w: readonly tf.Tensor[], x: tf.Tensor2D): tf.Tensor2D;
  /** Mean loss over the n examples (a scalar); `labels` are one-hot [n, classes]. Default: mean softmax cross-entropy of {@link logits}. */
  loss?(w: readonly tf.Tensor[], x: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar;
  /**
   * How the trained model predicts outside the cluster, as a chain of affine
   * layers over the tensors (cluster/model-spec.ts): what `tessera export`
   * writes and `tessera serve` runs. It should compute what {@link logits}
   * does, followed by the activation that turns logits into probabilities.
   * Default: the model cannot be exported.
   */
  inference?: InferenceSpec;
  /** Mean loss over the n examples, and its gradient per tensor (declared order and shapes), by hand. Default: autodiff of {@link loss}. */
  lossAndGradients?(w: readonly tf.Tensor[], x: tf.Tensor2D, labels: tf.Tensor2D): { loss: tf.Scalar; gradients: tf.Tensor[] };
}

/** A {@link Model} from its tensor-level definition. */
export function defineDenseModel(def: DenseModelDefinition): Model {
  const spec = (seed: number): ModelSpec => ({
    name: def.name,
    seed,
    tensors: def.tensors.map((t) => ({ ...t, shape: [...t.shape] })),
    ...(def.inference ? { inference: structuredClone(def.inference) } : {}),
  });
  validateModelSpec(spec(0));
  const { tensors, elements } = layout(spec(0));

  const unpack = (params: Float32Array): tf.Tensor[] => {
    if (params.length !== elements) throw new InvalidArgumentError(`model ${def.name} has ${elements} parameters but was given ${params.length}`);
    return tensors.map((t) => tf.tensor(params.subarray(t.offset, t.offset + t.size), t.shape, 'float32'));
  };

  const inputs = (x: Float32Array, count: number): tf.Tensor2D => {
    if (!(Number.isInteger(count) && count >= 1)) throw new InvalidArgumentError(`a batch needs at least one example, got count ${count}`);
    const size = count * def.inputSize;
    if (x.length < size) throw new InvalidArgumentError(`${count} examples of model ${def.name} need ${size} input values, got ${x.length}`);
    return tf.tensor2d(x.subarray(0, size), [count, def.inputSize]);
  };

  const oneHot = (y: Int32Array, count: number): tf.Tensor2D => {
    if (y.length < count) throw new InvalidArgumentError(`${count} examples need ${count} labels, got ${y.length}`);
    const labels = y.subarray(0, count);
    for (let i = 0; i < count; i++) {
      const l = labels[i]!;
      if (!(l >= 0 && l < def.classes)) throw new InvalidArgumentError(`label ${l} of example ${i} is outside 0…${def.classes - 1} for model ${def.name}`);
    }
    return tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), def.classes), 'float32') as tf.Tensor2D;
  };

  const lossOf = (w: readonly tf.Tensor[], x: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar => (def.loss ? def.loss(w, x, labels) : softmaxCrossEntropyLoss(def.logits(w, x), labels));
  const lossAndGradients = (w: readonly tf.Tensor[], x: tf.Tensor2D, labels: tf.Tensor2D): { loss: tf.Scalar; gradients: tf.Tensor[] } =>
    def.lossAndGradients ? def.lossAndGradients(w, x, labels) : lossAndGradientsOf((ws) => lossOf(ws, x, labels), w);

  return {
    name: def.name,
    inputSize: def.inputSize,
    classes: def.classes,
    elements,
    spec,

    async gradient(params: Float32Array, batch: Batch, out?: Float32Array): Promise<GradientResult> {
      const target = out ?? new Float32Array(elements);
      if (target.length !== elements) throw new InvalidArgumentError(`gradient buffer holds ${target.length} values but model ${def.name} has ${elements} parameters`);
      // One tensor, one read-back: the gradient with the loss appended, which
      // matters on GPU backends where every read is a round trip.
      const packed = tf.tidy(() => {
        const { loss, gradients } = lossAndGradients(unpack(params), inputs(batch.x, batch.count), oneHot(batch.y, batch.count));
        return tf.concat([...gradients.map((g) => tf.reshape(g, [-1])), tf.reshape(loss, [1])]);
      });
      try {
        const values = (await packed.data()) as Float32Array;
        target.set(values.subarray(0, elements));
        return { loss: values[elements]!, gradient: target };
      } finally {
        packed.dispose();
      }
    },

    async predict(params: Float32Array, x: Float32Array, count: number, out?: Int32Array): Promise<Int32Array> {
      const target = out ?? new Int32Array(count);
      if (target.length < count) throw new InvalidArgumentError(`prediction buffer holds ${target.length} values, fewer than the ${count} examples`);
      const classes = tf.tidy(() => tf.argMax(def.logits(unpack(params), inputs(x, count)), 1));
      try {
        target.set((await classes.data()) as Int32Array);
        return target;
      } finally {
        classes.dispose();
      }
    },
  };
}
