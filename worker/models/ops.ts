import * as tf from '@tensorflow/tfjs-core';

/**
 * aᵀ·b, the shape of every weight gradient. The transpose is made explicit
 * because the wasm backend's MatMul with `transposeA` leaves its fast path:
 * for x [64, 784] and dz [64, 256] it took ≈ 14–22 ms against ≈ 1–2 ms for
 * transpose-then-multiply (tfjs 4.22, 2-core x86). Other backends pay one
 * small transpose.
 */
export function transposeMatMul(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return tf.matMul(tf.transpose(a), b);
}

/** a·bᵀ, likewise with an explicit transpose (faster on wasm for the small W used here). */
export function matMulTranspose(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return tf.matMul(a, tf.transpose(b));
}

/** x·W + b: a fully connected layer's pre-activation. */
export function affine(x: tf.Tensor2D, W: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.add<tf.Tensor2D>(tf.matMul(x, W), b);
}
