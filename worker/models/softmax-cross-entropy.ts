import * as tf from '@tensorflow/tfjs-core';

/**
 * The classification head every model here shares: mean softmax
 * cross-entropy of `logits` [n, k] against one-hot `labels` [n, k], and its
 * gradient with respect to the logits, (softmax(logits) − labels) / n.
 * Computed through log-softmax, so large logits neither overflow nor lose the
 * loss to log(0). Call inside `tf.tidy`.
 */
export function softmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor2D): { loss: tf.Scalar; dLogits: tf.Tensor2D } {
  const n = logits.shape[0];
  const logProbs = tf.logSoftmax(logits);
  const loss = tf.div(tf.neg(tf.sum(tf.mul(labels, logProbs))), n) as tf.Scalar;
  const dLogits = tf.div(tf.sub(tf.exp(logProbs), labels), n) as tf.Tensor2D;
  return { loss, dLogits };
}

/** The mean softmax cross-entropy alone, for autodiff (dense-model.ts): the same loss as {@link softmaxCrossEntropy}. */
export function softmaxCrossEntropyLoss(logits: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar {
  return tf.div(tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits)))), logits.shape[0]) as tf.Scalar;
}
