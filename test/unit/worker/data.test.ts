import { expect } from 'chai';
import { batchesPerEpoch, type Dataset, epochBatches, partition, subset } from '../../../worker/data/dataset.js';
import { DEFAULT_SPLIT_SEED, loadMnist, MNIST_CLASSES, MNIST_EXAMPLES, MNIST_INPUT_SIZE, MNIST_TEST_EXAMPLES, MNIST_TRAIN_EXAMPLES, mnistSplit } from '../../../worker/data/mnist.js';
import { permutation } from '../../../worker/data/random.js';

/** A 53-bit fingerprint of example i's pixels: the corpus has no two equal images, so it names an example. */
function fingerprint(data: Dataset, i: number): number {
  const words = new Uint32Array(data.x.buffer, data.x.byteOffset + i * data.inputSize * 4, data.inputSize);
  let a = 0x811c9dc5;
  let b = 0x9e3779b9;
  for (let k = 0; k < words.length; k++) {
    a = Math.imul(a ^ words[k]!, 0x01000193);
    b = Math.imul(b ^ words[k]!, 0x85ebca6b) ^ (b >>> 15);
  }
  return (a >>> 0) * 2 ** 21 + ((b >>> 0) >>> 11);
}

const fingerprints = (data: Dataset) => Array.from({ length: data.count }, (_, i) => fingerprint(data, i));
const sorted = (xs: Iterable<number>) => Float64Array.from(xs).sort();

describe('worker/data: MNIST and its split', function () {
  this.timeout(20_000);

  it('loads the 10 000 digits of the mnist package: 28×28 values in [0, 1], labels 0–9, all present', () => {
    const all = loadMnist();
    expect(all.count).to.equal(MNIST_EXAMPLES);
    expect(all.x.length).to.equal(MNIST_EXAMPLES * MNIST_INPUT_SIZE);
    expect(all.x.every((v) => v >= 0 && v <= 1)).to.equal(true);
    const perClass = new Array<number>(MNIST_CLASSES).fill(0);
    for (const label of all.y) perClass[label]! += 1;
    expect(perClass.every((n) => n > 800)).to.equal(true);
    expect(new Set(fingerprints(all)).size).to.equal(MNIST_EXAMPLES);
    expect(loadMnist()).to.equal(all); // loaded once per process
  });

  it('splits into disjoint train and test sets that cover the corpus, stratified by class', () => {
    const { train, test } = mnistSplit();
    expect(train.count).to.equal(MNIST_TRAIN_EXAMPLES);
    expect(test.count).to.equal(MNIST_TEST_EXAMPLES);
    const trainPrints = new Set(fingerprints(train));
    const testPrints = fingerprints(test);
    expect(testPrints.some((f) => trainPrints.has(f))).to.equal(false);
    expect(sorted([...trainPrints, ...testPrints])).to.deep.equal(sorted(fingerprints(loadMnist())));
    const all = loadMnist();
    for (let c = 0; c < MNIST_CLASSES; c++) {
      const share = (all.y.filter((l) => l === c).length * MNIST_TEST_EXAMPLES) / MNIST_EXAMPLES;
      const inTest = test.y.filter((l) => l === c).length;
      expect(Math.abs(inTest - share), `class ${c}`).to.be.below(1);
    }
    // Both sets are shuffled: no run of one class as the package stores them.
    expect(new Set(train.y.subarray(0, 50)).size).to.be.above(5);
  });

  it('is a function of the seed alone: the same on any host, different for another seed', () => {
    const split = mnistSplit(DEFAULT_SPLIT_SEED);
    expect(mnistSplit(DEFAULT_SPLIT_SEED)).to.equal(split); // cached
    // Computed once from the split's definition; a change here changes every reported accuracy.
    expect([...split.test.y.subarray(0, 16)]).to.deep.equal(GOLDEN_TEST_LABELS);
    expect(fingerprints(split.test).reduce((a, f) => (Math.imul(a, 31) + (f % 2 ** 32)) >>> 0, 0)).to.equal(GOLDEN_TEST_DIGEST);
    const other = mnistSplit(DEFAULT_SPLIT_SEED + 1);
    expect(fingerprints(other.test)).not.to.deep.equal(fingerprints(split.test));
  });
});

describe('worker/data: partitions and batches', () => {
  const { train } = mnistSplit();
  const trainPrints = fingerprints(train);

  for (const workers of [1, 2, 3, 7]) {
    it(`${workers} worker(s): partitions are disjoint, cover the training set and differ in size by at most one`, () => {
      const parts = Array.from({ length: workers }, (_, i) => partition(train, i, workers));
      const sizes = parts.map((p) => p.count);
      expect(sizes.reduce((a, b) => a + b, 0)).to.equal(train.count);
      expect(Math.max(...sizes) - Math.min(...sizes)).to.be.at.most(1);
      const seen = parts.flatMap(fingerprints);
      expect(new Set(seen).size).to.equal(train.count); // disjoint
      expect(sorted(seen)).to.deep.equal(sorted(trainPrints)); // covering
    });
  }

  it('refuses impossible partitions', () => {
    expect(() => partition(train, 2, 2)).to.throw(/worker index/);
    expect(() => partition(train, 0, 0)).to.throw(/worker count/);
    expect(() => partition(subset(train, [0, 1]), 0, 3)).to.throw(/3 workers cannot share 2 examples/);
  });

  it('an epoch visits each example at most once, in full batches, in an order fixed by (seed, epoch)', () => {
    const data = partition(train, 1, 3);
    const order = (seed: number, epoch: number) => {
      const prints: number[] = [];
      for (const batch of epochBatches(data, 64, seed, epoch)) {
        expect(batch.count).to.equal(64);
        prints.push(...fingerprints({ ...batch, inputSize: data.inputSize }));
      }
      return prints;
    };
    const first = order(11, 0);
    expect(first.length).to.equal(batchesPerEpoch(data.count, 64) * 64);
    expect(first.length).to.be.above(data.count - 64);
    expect(new Set(first).size).to.equal(first.length);
    const mine = new Set(fingerprints(data));
    expect(first.every((f) => mine.has(f))).to.equal(true);
    expect(order(11, 0)).to.deep.equal(first);
    expect(order(11, 1)).not.to.deep.equal(first);
    expect(order(12, 0)).not.to.deep.equal(first);
  });

  it('permutation is a seeded permutation', () => {
    const p = permutation(1000, 5);
    expect([...p].sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i));
    expect(permutation(1000, 5)).to.deep.equal(p);
    expect(permutation(1000, 6)).not.to.deep.equal(p);
  });
});

const GOLDEN_TEST_LABELS = [1, 8, 0, 8, 6, 6, 2, 6, 3, 8, 0, 3, 3, 2, 0, 0];
const GOLDEN_TEST_DIGEST = 3_345_673_679;
