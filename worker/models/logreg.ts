import * as tf from '@tensorflow/tfjs-core';
import { type DenseModelDefinition, defineDenseModel } from './dense-model.js';
import { type Model } from './model.js';
import { affine, transposeMatMul } from './ops.js';
import { softmaxCrossEntropy } from './softmax-cross-entropy.js';

const INPUTS = 784;
const CLASSES = 10;

/**
 * Multinomial logistic regression on MNIST's 784 pixels: logits = x·W + b,
 * softmax cross-entropy. Zero initial weights (the loss is convex, so no
 * symmetry needs breaking). D = 7 850: the cheapest model to train end to end.
 */
export const logregDefinition: DenseModelDefinition = {
  name: 'logreg',
  inputSize: INPUTS,
  classes: CLASSES,
  tensors: [
    { name: 'W', shape: [INPUTS, CLASSES], init: { kind: 'zeros' } },
    { name: 'b', shape: [CLASSES], init: { kind: 'zeros' } },
  ],
  inference: { input: { kind: 'features', features: INPUTS }, layers: [{ weight: 'W', bias: 'b', activation: 'softmax' }] },

  logits(w, x) {
    const [W, b] = w as [tf.Tensor2D, tf.Tensor1D];
    return affine(x, W, b);
  },

  lossAndGradients(w, x, labels) {
    const [W, b] = w as [tf.Tensor2D, tf.Tensor1D];
    const { loss, dLogits } = softmaxCrossEntropy(affine(x, W, b), labels);
    return { loss, gradients: [transposeMatMul(x, dLogits), tf.sum(dLogits, 0)] };
  },
};

export const logreg: Model = defineDenseModel(logregDefinition);
