import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { augmentSeed, MNIST_IMAGE_SIDE, resolveAugmentOptions, shiftBatch, shiftImage } from '../../../worker/data/augment.js';
import { epochBatches } from '../../../worker/data/dataset.js';
import { mnistSplit } from '../../../worker/data/mnist.js';
import { mixSeeds } from '../../../worker/data/random.js';
import { type Batch } from '../../../worker/models/model.js';

/** `count` images of w×h whose pixel values are all distinct and non-zero: image i, pixel (x, y) holds 1 + i·w·h + y·w + x. */
function numbered(count: number, w: number, h: number): Float32Array {
  return Float32Array.from({ length: count * w * h }, (_, k) => k + 1);
}

/** The reference: dst(x, y) = src(x − dx, y − dy) inside the frame, else 0, one image. */
function shiftedReference(src: Float32Array, offset: number, w: number, h: number, dx: number, dy: number): number[] {
  const out: number[] = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const sx = x - dx;
      const sy = y - dy;
      out.push(sx >= 0 && sx < w && sy >= 0 && sy < h ? src[offset + sy * w + sx]! : 0);
    }
  }
  return out;
}

/** The (dx, dy) that maps `src` image onto `dst` image, found by trying every shift in ±max; null when none does. */
function findShift(src: Float32Array, dst: Float32Array, offset: number, w: number, h: number, max: number): [number, number] | null {
  const got = Array.from(dst.subarray(offset, offset + w * h));
  for (let dy = -max; dy <= max; dy++) {
    for (let dx = -max; dx <= max; dx++) {
      if (shiftedReference(src, offset, w, h, dx, dy).every((v, k) => v === got[k])) return [dx, dy];
    }
  }
  return null;
}

const batchOf = (x: Float32Array, count: number): Batch => ({ x, y: Int32Array.from({ length: count }, (_, i) => i % 10), count });

describe('worker/data/augment: random shifts of image batches', () => {
  it('shifts a known image by a known offset, dropping what leaves the frame and filling the border with 0', () => {
    // 4×3 image:  1  2  3  4
    //             5  6  7  8
    //             9 10 11 12
    const src = numbered(1, 4, 3);
    const dst = new Float32Array(12).fill(NaN);
    shiftImage(src, 0, dst, 0, 4, 3, 1, 1); // one right, one down
    expect([...dst]).to.deep.equal([0, 0, 0, 0, 0, 1, 2, 3, 0, 5, 6, 7]);
    shiftImage(src, 0, dst, 0, 4, 3, -2, 0); // two left
    expect([...dst]).to.deep.equal([3, 4, 0, 0, 7, 8, 0, 0, 11, 12, 0, 0]);
    shiftImage(src, 0, dst, 0, 4, 3, 0, -1); // one up
    expect([...dst]).to.deep.equal([5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0]);
    shiftImage(src, 0, dst, 0, 4, 3, 3, 2); // all but one pixel leaves the frame
    expect([...dst]).to.deep.equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    shiftImage(src, 0, dst, 0, 4, 3, 0, 0);
    expect([...dst]).to.deep.equal([...src]);
    expect([...src]).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // the source is left alone
  });

  it('shifts in place exactly as into a separate buffer, for every direction', () => {
    const w = 7;
    const h = 5;
    const src = numbered(3, w, h);
    for (let dy = -4; dy <= 4; dy++) {
      for (let dx = -6; dx <= 6; dx++) {
        const inPlace = src.slice();
        shiftImage(inPlace, w * h, inPlace, w * h, w, h, dx, dy); // the middle image
        expect([...inPlace.subarray(w * h, 2 * w * h)], `dx ${dx}, dy ${dy}`).to.deep.equal(shiftedReference(src, w * h, w, h, dx, dy));
        expect([...inPlace.subarray(0, w * h)]).to.deep.equal([...src.subarray(0, w * h)]); // neighbours untouched
        expect([...inPlace.subarray(2 * w * h)]).to.deep.equal([...src.subarray(2 * w * h)]);
      }
    }
  });

  it('with maxShift 0 is the identity, in place and into a buffer', () => {
    const x = numbered(5, 28, 28);
    const before = x.slice();
    const batch = batchOf(x, 5);
    expect(shiftBatch(batch, { maxShift: 0 }, 1)).to.equal(x);
    expect(x).to.deep.equal(before);
    const out = new Float32Array(x.length).fill(-1);
    expect(shiftBatch(batch, { maxShift: 0 }, 1, out)).to.equal(out);
    expect(out).to.deep.equal(before);
  });

  it('moves each image by a whole shift within ±maxShift, every shift occurring, and leaves the labels alone', () => {
    const count = 400;
    const w = 8;
    const h = 6;
    const x = numbered(count, w, h);
    const batch = batchOf(x, count);
    const labels = batch.y.slice();
    const out = new Float32Array(x.length);
    shiftBatch(batch, { maxShift: 2, width: w, height: h }, 42, out);
    expect(x).to.deep.equal(numbered(count, w, h)); // the batch is unchanged when an output buffer is given
    expect(batch.y).to.deep.equal(labels);
    const seen = new Set<string>();
    for (let i = 0; i < count; i++) {
      const shift = findShift(x, out, i * w * h, w, h, 2);
      expect(shift, `image ${i}`).to.not.equal(null);
      seen.add(String(shift));
    }
    expect(seen.size).to.equal(25); // all of {−2…2}²

    // The same shifts in place.
    const inPlace = batchOf(x.slice(), count);
    shiftBatch(inPlace, { maxShift: 2, width: w, height: h }, 42);
    expect(inPlace.x).to.deep.equal(out);
    expect(inPlace.y).to.deep.equal(labels);
  });

  it('is a function of the seed: the same seed gives the same images, another seed others', () => {
    const x = numbered(64, 28, 28);
    const run = (seed: number) => shiftBatch(batchOf(x, 64), { maxShift: 1 }, seed, new Float32Array(x.length));
    const first = run(7);
    expect(run(7)).to.deep.equal(first);
    expect(run(8)).to.not.deep.equal(first);
    // Pinned: a change here changes every augmented run.
    const shifts = Array.from({ length: 6 }, (_, i) => findShift(x, first, i * 784, 28, 28, 1));
    expect(shifts).to.deep.equal(GOLDEN_SHIFTS);
  });

  it('gives each batch of each epoch its own seed, apart from the shuffling seeds', () => {
    const seeds = new Set<number>();
    for (let epoch = 0; epoch < 10; epoch++) for (let b = 0; b < 100; b++) seeds.add(augmentSeed(1001, epoch, b));
    expect(seeds.size).to.equal(1000);
    expect(augmentSeed(1001, 3, 4)).to.equal(augmentSeed(1001, 3, 4));
    expect(augmentSeed(1002, 3, 4)).to.not.equal(augmentSeed(1001, 3, 4));
    for (let epoch = 0; epoch < 10; epoch++) expect(seeds.has(mixSeeds(1001, epoch))).to.equal(false);
  });

  it('keeps real digits whole: MNIST digits sit in a 20×20 box, so a shift of ±2 loses the ink of few if any', () => {
    const { train } = mnistSplit();
    const batch = epochBatches(train, 64, 1, 0).next().value as Batch;
    const ink = (x: Float32Array, i: number) => x.subarray(i * 784, (i + 1) * 784).reduce((a, v) => a + v, 0);
    const before = Array.from({ length: 64 }, (_, i) => ink(batch.x, i));
    const labels = batch.y.slice();
    shiftBatch(batch, { maxShift: 2 }, augmentSeed(1, 0, 0));
    const after = Array.from({ length: 64 }, (_, i) => ink(batch.x, i));
    const kept = after.filter((a, i) => Math.abs(a - before[i]!) < 1e-3).length;
    expect(kept).to.be.at.least(60);
    expect(after.every((a, i) => a <= before[i]! + 1e-3)).to.equal(true);
    expect(batch.y).to.deep.equal(labels);
  });

  it('refuses bad options and buffers with InvalidArgumentError', () => {
    const batch = batchOf(new Float32Array(2 * 784), 2);
    const bad = (f: () => unknown, message: RegExp) => expect(f).to.throw(InvalidArgumentError, message);
    bad(() => shiftBatch(batch, { maxShift: -1 }, 1), /largest shift must be a whole number of pixels in \[0, 27\]/);
    bad(() => shiftBatch(batch, { maxShift: 1.5 }, 1), /largest shift/);
    bad(() => shiftBatch(batch, { maxShift: 28 }, 1), /largest shift/);
    bad(() => shiftBatch(batch, { maxShift: NaN }, 1), /largest shift/);
    bad(() => shiftBatch(batch, { maxShift: 1, width: 0 }, 1), /width must be a positive integer/);
    bad(() => shiftBatch(batch, { maxShift: 1, height: 2.5 }, 1), /height must be a positive integer/);
    bad(() => shiftBatch(batch, { maxShift: 1 }, 0.5), /seed must be an integer/);
    bad(() => shiftBatch({ ...batch, count: 3 }, { maxShift: 1 }, 1), /3 images of 28×28 need 2352 input values, the batch has 1568/);
    bad(() => shiftBatch({ ...batch, count: -1 }, { maxShift: 1 }, 1), /count must be a non-negative integer/);
    bad(() => shiftBatch(batch, { maxShift: 1 }, 1, new Float32Array(784)), /need 1568 output values, the buffer has 784/);
    const shared = new Float32Array(4 * 784);
    bad(() => shiftBatch(batchOf(shared.subarray(0, 1568), 2), { maxShift: 1 }, 1, shared.subarray(1, 1569)), /partly overlaps/);
    bad(() => shiftBatch(batchOf(shared.subarray(784, 2352), 2), { maxShift: 1 }, 1, shared.subarray(0, 1568)), /partly overlaps/);
    expect(() => shiftBatch(batchOf(shared.subarray(0, 1568), 2), { maxShift: 1 }, 1, shared.subarray(1568))).to.not.throw(); // adjacent, not overlapping
    bad(() => resolveAugmentOptions({ maxShift: 1 }, 100), /28×28 images hold 784 values but the examples have 100 features/);
    expect(resolveAugmentOptions({ maxShift: 2 }, 784)).to.deep.equal({ maxShift: 2, width: MNIST_IMAGE_SIDE, height: MNIST_IMAGE_SIDE });
    expect(resolveAugmentOptions({ maxShift: 0, width: 1, height: 1 })).to.deep.equal({ maxShift: 0, width: 1, height: 1 });
    // A batch with no images is fine.
    expect(shiftBatch({ x: new Float32Array(0), y: new Int32Array(0), count: 0 }, { maxShift: 2 }, 1).length).to.equal(0);
  });
});

const GOLDEN_SHIFTS: [number, number][] = [
  [-1, -1],
  [1, 1],
  [0, 0],
  [0, -1],
  [0, 1],
  [-1, -1],
];
