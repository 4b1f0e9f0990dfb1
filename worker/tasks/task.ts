import { type TesseraClient } from '../../client/tessera-client.js';
import { type ModelSpec } from '../../cluster/model-spec.js';
import { type OptimizerName } from '../../cluster/optimizer-config.js';
import { type AugmentOptions } from '../data/augment.js';
import { type IndexBatch } from '../data/work-source.js';
import { type StepEvent, type TrainResult } from '../trainer.js';

/**
 * What a worker trains and how it is judged: a model with its data. The
 * built-in tasks are mnist-mlp and logreg (MNIST digits) and ctr (a click log
 * with sparse embeddings); a user's module is one too (user-task.ts).
 */
export interface TrainingTask {
  /** The model's name, as the cluster's configuration holds it. */
  readonly name: string;
  /** The model's tensors and tables, initialised from `seed`. */
  spec(seed: number): ModelSpec;
  /** Examples in the training data: what a run's blocks cut (work-source.ts). */
  readonly trainExamples: number;
  /** Learning rates known to train this task well, per optimizer. */
  readonly tunedLearningRates: Partial<Record<OptimizerName, number>>;
  /** Passes over the data `tessera local` trains for unless told otherwise: 10 for the MNIST models, 1 for ctr (whose held-out AUC falls after its first epochs). */
  readonly defaultEpochs: number;
  /** Pixels `tessera local` shifts training images by unless told otherwise: 1 for MNIST, 0 for tasks that are not images. */
  readonly defaultShift: number;
  /** Trains on the examples `source` hands out, through `client`, until `source` ends or `signal` aborts. */
  train(o: TaskTrainOptions): Promise<TrainResult>;
  /** Metrics of the cluster's current weights on the held-out data: always `test_accuracy`; ctr adds `test_auc` and `reference_auc`. */
  evaluate(client: TesseraClient): Promise<Record<string, number>>;
  /**
   * The held-out examples as a served model takes them (features, or ids),
   * and the task's metrics of a served model's outputs on them: what
   * `tessera export` measures each exported format with.
   */
  heldOut(): HeldOutSet;
}

/** Held-out examples in a served model's terms, and how to score its outputs. */
export interface HeldOutSet {
  /** What the examples are, in words. */
  dataset: string;
  /** rows × features float32 values, or rows × fields int64 ids. */
  inputs: Float32Array | BigInt64Array;
  rows: number;
  /** The metrics of `outputs` (rows × the model's output width: class probabilities, or click probabilities). */
  metrics(outputs: Float32Array, rows: number): Record<string, number>;
}

export interface TaskTrainOptions {
  client: TesseraClient;
  source: AsyncIterable<IndexBatch>;
  batchSize: number;
  /** Overlap communication with compute (trainer.ts). */
  pipeline: boolean;
  /** Image shifts, for image tasks; others refuse a non-zero shift. */
  augment?: AugmentOptions;
  /** Seeds what the task draws per batch (augmentation). */
  seed: number;
  signal?: AbortSignal;
  onStep?: (event: StepEvent) => void;
}
