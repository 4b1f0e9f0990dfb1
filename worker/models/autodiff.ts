import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

/** Built by `npm run build` beside this file's compiled form (scripts/build-gradients.mjs). */
const BUNDLE = './tfjs-gradients.cjs';

let registered = false;

/**
 * Makes `tf.grads`, `tf.valueAndGrads` and chained ops (`x.matMul(y)`) work
 * on the worker's `@tensorflow/tfjs-core`, whose Node build registers neither
 * gradients nor chained ops: loads TensorFlow.js's own registrations, bundled
 * at build time. Idempotent.
 *
 * @throws Error when the bundle was not built (the project was compiled with
 *   plain `tsc` rather than `npm run build`).
 */
export function registerGradients(): void {
  if (registered) return;
  if (!existsSync(new URL(BUNDLE, import.meta.url))) throw new Error(`TensorFlow.js gradients are not built (${BUNDLE} beside worker/models/autodiff.js is missing); run npm run build`);
  createRequire(import.meta.url)(BUNDLE);
  registered = true;
}

/**
 * The value of `loss` at `w` and its gradient with respect to each tensor of
 * `w`, by TensorFlow.js's reverse-mode autodiff. Call inside `tf.tidy`.
 */
export function lossAndGradientsOf(loss: (w: tf.Tensor[]) => tf.Scalar, w: readonly tf.Tensor[]): { loss: tf.Scalar; gradients: tf.Tensor[] } {
  registerGradients();
  const { value, grads } = tf.valueAndGrads((...ws: tf.Tensor[]) => loss(ws))([...w]);
  return { loss: value as tf.Scalar, gradients: grads };
}
