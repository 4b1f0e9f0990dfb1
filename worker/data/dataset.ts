import { InvalidArgumentError } from '../../cluster/errors.js';
import { type Batch } from '../models/model.js';
import { mixSeeds, permutation } from './random.js';

/**
 * Labelled examples held as one row-major matrix. A dataset is also a
 * {@link Batch} of all its examples.
 */
export interface Dataset extends Batch {
  /** Features per example. */
  readonly inputSize: number;
}

/** A new dataset of the examples at `indices`, in that order (rows are copied). */
export function subset(data: Dataset, indices: ArrayLike<number>): Dataset {
  const n = indices.length;
  const d = data.inputSize;
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const src = indices[i]!;
    if (!(src >= 0 && src < data.count)) throw new InvalidArgumentError(`example index ${src} is outside the dataset's ${data.count} examples`);
    x.set(data.x.subarray(src * d, (src + 1) * d), i * d);
    y[i] = data.y[src]!;
  }
  return { x, y, count: n, inputSize: d };
}

/**
 * Worker `workerIndex`'s share of `data` when `workerCount` workers split it:
 * examples [⌊i·N/W⌋, ⌊(i+1)·N/W⌋), a view with no copy. The shares are
 * disjoint, cover the dataset and differ in size by at most one. Contiguous
 * blocks are random samples when `data` is in random order, as a split is.
 */
export function partition(data: Dataset, workerIndex: number, workerCount: number): Dataset {
  if (!(Number.isInteger(workerCount) && workerCount >= 1)) throw new InvalidArgumentError(`worker count must be a positive integer, got ${workerCount}`);
  if (!(Number.isInteger(workerIndex) && workerIndex >= 0 && workerIndex < workerCount)) {
    throw new InvalidArgumentError(`worker index must be an integer in [0, ${workerCount - 1}], got ${workerIndex}`);
  }
  if (workerCount > data.count) throw new InvalidArgumentError(`${workerCount} workers cannot share ${data.count} examples`);
  const begin = Math.floor((workerIndex * data.count) / workerCount);
  const end = Math.floor(((workerIndex + 1) * data.count) / workerCount);
  const d = data.inputSize;
  return { x: data.x.subarray(begin * d, end * d), y: data.y.subarray(begin, end), count: end - begin, inputSize: d };
}

/** Full batches in an epoch: the last, partial batch is dropped (see {@link epochBatches}). */
export function batchesPerEpoch(examples: number, batchSize: number): number {
  return Math.floor(examples / batchSize);
}

/** The example indices of each full batch of one epoch, in the order {@link epochBatches} uses; views of one array. */
export function* epochIndexBatches(examples: number, batchSize: number, seed: number, epoch: number): Generator<Uint32Array> {
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InvalidArgumentError(`batch size must be a positive integer, got ${batchSize}`);
  const order = permutation(examples, mixSeeds(seed, epoch));
  const full = batchesPerEpoch(examples, batchSize);
  for (let b = 0; b < full; b++) yield order.subarray(b * batchSize, (b + 1) * batchSize);
}

/**
 * The batches of one epoch: the examples in an order drawn from (seed, epoch),
 * cut into `batchSize` runs. The last partial batch is dropped, as
 * `drop_remainder` does in tf.data: every step then averages the same number
 * of examples, and GPU backends see one input shape; the reshuffle each epoch
 * means a dropped example is only dropped for that epoch.
 *
 * The yielded batch is one buffer, refilled in place for the next: use it
 * before asking for the next one.
 */
export function* epochBatches(data: Dataset, batchSize: number, seed: number, epoch: number): Generator<Batch> {
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InvalidArgumentError(`batch size must be a positive integer, got ${batchSize}`);
  const order = permutation(data.count, mixSeeds(seed, epoch));
  const d = data.inputSize;
  const batch: Batch = { x: new Float32Array(batchSize * d), y: new Int32Array(batchSize), count: batchSize };
  const full = batchesPerEpoch(data.count, batchSize);
  for (let b = 0; b < full; b++) {
    for (let i = 0; i < batchSize; i++) {
      const src = order[b * batchSize + i]!;
      batch.x.set(data.x.subarray(src * d, (src + 1) * d), i * d);
      batch.y[i] = data.y[src]!;
    }
    yield batch;
  }
}
