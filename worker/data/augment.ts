import { InvalidArgumentError } from '../../cluster/errors.js';
import { type Batch } from '../models/model.js';
import { mixSeeds, seededRandom } from './random.js';

/**
 * Data augmentation for image batches: each image is translated by a random
 * whole number of pixels along each axis, pixels that leave the frame are
 * dropped and the uncovered border is filled with 0 (MNIST's background).
 * A digit moved by a pixel or two is still the same digit, so every epoch
 * shows the model new, plausible examples: an MLP, which has no built-in
 * translation invariance, then generalizes further on a small training set.
 *
 * Draws come from {@link seededRandom}, never `Math.random`: an augmented run
 * is reproducible from its seed on any host. Labels are never touched.
 */

/** Side of an MNIST image in pixels: {@link AugmentOptions}' default width and height. */
export const MNIST_IMAGE_SIDE = 28;

export interface AugmentOptions {
  /**
   * Largest translation in pixels along each axis: an image moves by dx and dy
   * drawn independently and uniformly from the integers −maxShift … maxShift.
   * 0 leaves images unchanged. An integer in [0, min(width, height) − 1].
   */
  maxShift: number;
  /** Image width in pixels (row length); default {@link MNIST_IMAGE_SIDE}. */
  width?: number;
  /** Image height in pixels (rows); default {@link MNIST_IMAGE_SIDE}. */
  height?: number;
}

/** {@link AugmentOptions} with every default filled in and checked. */
export interface ResolvedAugmentOptions {
  readonly maxShift: number;
  readonly width: number;
  readonly height: number;
}

/** Tag that keeps {@link augmentSeed}'s seeds apart from the shuffling seeds `epochBatches` derives from the same run seed. */
const AUGMENT_STREAM = 0x61756721; // "aug!"

/**
 * Fills in the defaults of `options` and checks them.
 *
 * @param inputSize when given, the features per example the images must fill exactly (width × height).
 * @throws InvalidArgumentError for a shift that is not a whole number in [0, min(width, height) − 1],
 *   a size that is not a positive integer, or images that do not match `inputSize`.
 */
export function resolveAugmentOptions(options: AugmentOptions, inputSize?: number): ResolvedAugmentOptions {
  const width = options.width ?? MNIST_IMAGE_SIDE;
  const height = options.height ?? MNIST_IMAGE_SIDE;
  check(options.maxShift, width, height);
  if (inputSize !== undefined && inputSize !== width * height) {
    throw new InvalidArgumentError(`${width}×${height} images hold ${width * height} values but the examples have ${inputSize} features`);
  }
  return { maxShift: options.maxShift, width, height };
}

function check(maxShift: number, width: number, height: number): void {
  if (!(Number.isInteger(width) && width >= 1)) throw new InvalidArgumentError(`image width must be a positive integer, got ${width}`);
  if (!(Number.isInteger(height) && height >= 1)) throw new InvalidArgumentError(`image height must be a positive integer, got ${height}`);
  const limit = Math.min(width, height) - 1;
  if (!(Number.isInteger(maxShift) && maxShift >= 0 && maxShift <= limit)) {
    throw new InvalidArgumentError(`the largest shift must be a whole number of pixels in [0, ${limit}] for ${width}×${height} images, got ${maxShift}`);
  }
}

/**
 * The seed of the shifts applied to a batch of epoch `epoch` in a run seeded
 * with `seed`, the batch named by `batchKey` (the trainer uses the index of
 * its first example, so a batch is shifted alike whichever worker trains it):
 * a different, reproducible set of shifts for every batch of every epoch,
 * unrelated to the example order drawn from the same seed.
 */
export function augmentSeed(seed: number, epoch: number, batchKey: number): number {
  return mixSeeds(seed, AUGMENT_STREAM, epoch, batchKey);
}

/**
 * Writes image `src[srcOffset, srcOffset + width·height)`, translated by `dx`
 * pixels right and `dy` pixels down (negative: left, up), into
 * `dst[dstOffset, dstOffset + width·height)`: dst(x, y) = src(x − dx, y − dy)
 * where that lies inside the image, else 0. Images are row-major.
 *
 * The destination may be the source itself (same array and offset: the image
 * is shifted in place) or a region that does not overlap it. Nothing is
 * checked or allocated: this is the inner loop of {@link shiftBatch}, which
 * checks its arguments.
 */
export function shiftImage(src: Float32Array, srcOffset: number, dst: Float32Array, dstOffset: number, width: number, height: number, dx: number, dy: number): void {
  // In place, each pixel must be read before it is overwritten: walk rows
  // away from the side the image moves to (bottom-up when moving down), and
  // within a row likewise, since a row may be its own source when dy = 0.
  const rowStep = dy > 0 ? -1 : 1;
  const colStep = dx > 0 ? -1 : 1;
  const y0 = dy > 0 ? height - 1 : 0;
  const x0 = dx > 0 ? width - 1 : 0;
  for (let r = 0, y = y0; r < height; r++, y += rowStep) {
    const sy = y - dy;
    const out = dstOffset + y * width;
    if (sy < 0 || sy >= height) {
      dst.fill(0, out, out + width);
      continue;
    }
    const row = srcOffset + sy * width;
    for (let c = 0, x = x0; c < width; c++, x += colStep) {
      const sx = x - dx;
      dst[out + x] = sx >= 0 && sx < width ? src[row + sx]! : 0;
    }
  }
}

/**
 * Randomly translates each of the batch's `count` images (see
 * {@link AugmentOptions}) and writes the results into `out`, by default
 * `batch.x` itself (in place). `out` may also be a separate buffer of at least
 * `count · width · height` values, which leaves `batch.x` unchanged; it must
 * not partly overlap `batch.x`. `batch.y` is never read or written.
 *
 * The shifts are a function of `seed` alone, drawn in order (dx then dy for
 * image 0, then image 1, …): the same seed and batch give the same result on
 * any host. Derive a fresh seed per batch with {@link augmentSeed}. Allocates
 * only the generator; with `maxShift` 0 the images are copied unchanged (or
 * left alone in place) and nothing is drawn.
 *
 * @returns `out`.
 * @throws InvalidArgumentError for bad options (see {@link resolveAugmentOptions}),
 *   a non-integer seed or count, buffers too short for `count` images, or an
 *   `out` that partly overlaps `batch.x`.
 */
export function shiftBatch(batch: Batch, options: AugmentOptions, seed: number, out: Float32Array = batch.x): Float32Array {
  const { maxShift } = options;
  const width = options.width ?? MNIST_IMAGE_SIDE;
  const height = options.height ?? MNIST_IMAGE_SIDE;
  check(maxShift, width, height);
  if (!Number.isInteger(seed)) throw new InvalidArgumentError(`augmentation seed must be an integer, got ${seed}`);
  const { x, count } = batch;
  if (!(Number.isInteger(count) && count >= 0)) throw new InvalidArgumentError(`a batch's count must be a non-negative integer, got ${count}`);
  const size = width * height;
  const needed = count * size;
  if (x.length < needed) throw new InvalidArgumentError(`${count} images of ${width}×${height} need ${needed} input values, the batch has ${x.length}`);
  if (out.length < needed) throw new InvalidArgumentError(`${count} images of ${width}×${height} need ${needed} output values, the buffer has ${out.length}`);
  const inPlace = out.buffer === x.buffer && out.byteOffset === x.byteOffset;
  if (!inPlace && overlaps(x, out, needed)) throw new InvalidArgumentError('the output buffer partly overlaps the batch: pass the batch itself (in place) or a separate buffer');

  if (maxShift === 0) {
    if (!inPlace) out.set(x.subarray(0, needed));
    return out;
  }
  const random = seededRandom(seed);
  const choices = 2 * maxShift + 1;
  for (let i = 0; i < count; i++) {
    const dx = Math.floor(random() * choices) - maxShift;
    const dy = Math.floor(random() * choices) - maxShift;
    shiftImage(x, i * size, out, i * size, width, height, dx, dy);
  }
  return out;
}

/** Whether the first `n` elements of `a` and `b` share any byte. */
function overlaps(a: Float32Array, b: Float32Array, n: number): boolean {
  if (a.buffer !== b.buffer || n === 0) return false;
  const bytes = n * Float32Array.BYTES_PER_ELEMENT;
  return a.byteOffset < b.byteOffset + bytes && b.byteOffset < a.byteOffset + bytes;
}
