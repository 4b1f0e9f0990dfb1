import { type ModelSpec } from '../../cluster/model-spec.js';

/**
 * What a trainable model is to a worker: a spec the cluster stores, and two
 * computations over the flat parameter vector (`layout(spec)`: the dense
 * tensors concatenated in declared order) on the active TensorFlow.js backend.
 *
 * Both computations are asynchronous because reading results back from a GPU
 * backend is; both leave no tensor behind.
 */
export interface Model {
  /** The registered name, also the spec's name (e.g. "mnist-mlp"). */
  readonly name: string;
  /** Features per example (784 for MNIST's 28×28 pixels). */
  readonly inputSize: number;
  /** Number of classes, labels being 0 … classes − 1. */
  readonly classes: number;
  /** Elements of the flat parameter vector (D). */
  readonly elements: number;

  /** The model's tensors, shapes and initializers; `seed` drives the initializers. */
  spec(seed: number): ModelSpec;

  /**
   * The mean softmax cross-entropy over the batch and its gradient with
   * respect to the flat parameter vector. The gradient is written into `out`
   * when given (length {@link elements}), else into a new array.
   * `params` and `batch` must not change until the promise settles.
   */
  gradient(params: Float32Array, batch: Batch, out?: Float32Array): Promise<GradientResult>;

  /** The most likely class of each of the `count` examples in `x`, into `out` when given. */
  predict(params: Float32Array, x: Float32Array, count: number, out?: Int32Array): Promise<Int32Array>;
}

/** A batch of labelled examples. */
export interface Batch {
  /** `count` examples, row-major: example i is x[i·inputSize, (i+1)·inputSize). May be longer than needed. */
  x: Float32Array;
  /** Class of each example, 0 … classes − 1. May be longer than needed. */
  y: Int32Array;
  count: number;
}

export interface GradientResult {
  /** Mean loss over the batch. */
  loss: number;
  /** ∂loss/∂params, laid out like the parameter vector. */
  gradient: Float32Array;
}
