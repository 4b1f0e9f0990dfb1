import * as tf from '@tensorflow/tfjs-core';
import { type DenseModelDefinition, defineDenseModel } from './dense-model.js';
import { type Model } from './model.js';
import { affine, matMulTranspose, transposeMatMul } from './ops.js';
import { softmaxCrossEntropy } from './softmax-cross-entropy.js';

const INPUTS = 784;
const HIDDEN = 256;
const CLASSES = 10;

/**
 * A one-hidden-layer perceptron over MNIST's 784 pixels: h = relu(x·W1 + b1),
 * logits = h·W2 + b2, softmax cross-entropy. Glorot-uniform weights, zero
 * biases. `mnistMlp` is the 256-unit one; wider ones serve the compute
 * benchmarks (bench/gpu-compare.ts).
 */
export function mlp(name: string, hidden: number): Model {
  return defineDenseModel(mlpDefinition(name, hidden));
}

/** The tensors, logits and backward pass of {@link mlp}. */
export function mlpDefinition(name: string, hidden: number): DenseModelDefinition {
  return {
    name,
    inputSize: INPUTS,
    classes: CLASSES,
    tensors: [
      { name: 'W1', shape: [INPUTS, hidden], init: { kind: 'glorot-uniform', fanIn: INPUTS, fanOut: hidden } },
      { name: 'b1', shape: [hidden], init: { kind: 'zeros' } },
      { name: 'W2', shape: [hidden, CLASSES], init: { kind: 'glorot-uniform', fanIn: hidden, fanOut: CLASSES } },
      { name: 'b2', shape: [CLASSES], init: { kind: 'zeros' } },
    ],
    inference: {
      input: { kind: 'features', features: INPUTS },
      layers: [
        { weight: 'W1', bias: 'b1', activation: 'relu' },
        { weight: 'W2', bias: 'b2', activation: 'softmax' },
      ],
    },

    logits(w, x) {
      const [W1, b1, W2, b2] = w as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D];
      return affine(tf.relu(affine(x, W1, b1)), W2, b2);
    },

    lossAndGradients(w, x, labels) {
      const [W1, b1, W2, b2] = w as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D];
      const h = tf.relu(affine(x, W1, b1));
      const { loss, dLogits } = softmaxCrossEntropy(affine(h, W2, b2), labels);
      // relu'(z) is taken as 0 at z = 0, as TensorFlow does; h > 0 exactly where z > 0.
      const dz = tf.mul<tf.Tensor2D>(matMulTranspose(dLogits, W2), tf.step(h));
      return { loss, gradients: [transposeMatMul(x, dz), tf.sum(dz, 0), transposeMatMul(h, dLogits), tf.sum(dLogits, 0)] };
    },
  };
}

/** The MNIST model, 784-256-10. D = 784·256 + 256 + 256·10 + 10 = 203 530. */
export const mnistMlp: Model = mlp('mnist-mlp', HIDDEN);
