import { InvalidArgumentError } from '../../cluster/errors.js';
import { auc } from '../metrics/auc.js';
import { mixSeeds, seededRandom } from './random.js';

/**
 * A synthetic click log for click-through-rate models: examples of `fields`
 * categorical features, each a value out of `vocab`, labelled clicked (1) or
 * not (0) by a known ground-truth model. Knowing the truth gives the best AUC
 * any model can reach on the test split ({@link ClickLog.referenceAuc}), so a
 * trained model's AUC can be judged against it.
 *
 * Values: each field's value is drawn alone from a Zipf distribution over
 * 0 … vocab − 1, P(v) ∝ (v + 1)^(−zipf): value 0 is the most frequent, and the
 * tail is rare, as in real logs.
 *
 * Ground truth: logit = b + Σ_f a_f[v_f] + Σ_{(f,g) ∈ P} ⟨u_f[v_f], u_g[v_g]⟩,
 * P the field pairs (0,1), (2,3), (4,5)… (a last odd field has no partner),
 * with scalars a and vectors u of dimension {@link TRUTH_DIM} drawn per
 * (field, value) from normals of standard deviation (v + 1)^(−EFFECT_DECAY),
 * then scaled so that over a calibration sample the first-order sum has
 * standard deviation {@link FIRST_ORDER_STD} and the pair sum
 * {@link PAIR_STD}; b is then set so that the mean click probability there is
 * {@link CLICK_RATE}. The normalization keeps the click rate near its target
 * and the reference AUC near 0.77–0.80 whatever the seed. A label is
 * Bernoulli(sigmoid(logit)).
 *
 * The scales are set so that the `ctr` model (models/ctr.ts) can come within
 * 0.02 of the reference AUC in one epoch of the 100 000 default training
 * examples: rarer values have smaller effects (as in real logs, where the
 * rare ids say little), since a value seen a handful of times cannot be
 * learnt, and the pairwise part is small, since a ReLU layer of 32 units
 * approximates products of embeddings poorly. With every value's effect of
 * the same size and a pairwise part of standard deviation 0.8, one-pass
 * training stayed ≈ 0.09 below the reference.
 *
 * Everything is drawn from the seed alone; the parameters, the calibration
 * sample, the training split and the test split each from their own stream,
 * so changing `train` leaves the test split as it was.
 */

export interface ClickLogOptions {
  /** Seed of the ground truth and of both splits: an unsigned 32-bit integer. */
  seed: number;
  /** Categorical features per example. */
  fields: number;
  /** Distinct values per field. */
  vocab: number;
  /** Exponent s of the values' popularity, P(v) ∝ (v + 1)^(−s); 0 draws uniformly. */
  zipf: number;
  /** Training examples. */
  train: number;
  /** Test examples. */
  test: number;
}

/** The options of {@link clickLog} that are not given. */
export const CLICK_LOG_DEFAULTS: Readonly<ClickLogOptions> = Object.freeze({
  seed: 20_260_301,
  fields: 8,
  vocab: 1000,
  zipf: 1.1,
  train: 100_000,
  test: 20_000,
});

/** Dimension of the ground truth's interaction vectors u. */
export const TRUTH_DIM = 4;
/** Mean click probability the ground truth's bias is set to. */
export const CLICK_RATE = 0.25;
/** Standard deviation of the first-order part Σ_f a_f[v_f] of the true logit. */
export const FIRST_ORDER_STD = 1.2;
/** Standard deviation of the pairwise part Σ ⟨u_f, u_g⟩ of the true logit. */
export const PAIR_STD = 0.25;
/**
 * How fast the effects of rarer values shrink: a_f[v] and u_f[v] are drawn
 * with standard deviation (v + 1)^(−EFFECT_DECAY) before normalization, so
 * the signal sits mostly in values seen often enough to be learnt.
 */
export const EFFECT_DECAY = 0.75;
/** Examples drawn to calibrate the scales and the bias. */
const CALIBRATION_EXAMPLES = 20_000;

/** Labelled examples of a click log. */
export interface ClickData {
  /** Examples. */
  count: number;
  /** Features per example. */
  fields: number;
  /** count × fields ids, row-major; id of value v of field f = (BigInt(f) << 32n) | BigInt(v). */
  ids: BigUint64Array;
  /** 0 or 1 per example. */
  y: Int32Array;
  /** The ground-truth click probability of each example. */
  truth: Float32Array;
}

/** A click log: its two splits and the best AUC reachable on the test split. */
export interface ClickLog {
  train: ClickData;
  test: ClickData;
  /** AUC of `truth` against `y` on the test split; NaN if the test split holds one class only. */
  referenceAuc: number;
  /** The options it was drawn with, defaults filled in. */
  options: ClickLogOptions;
}

const logs = new Map<string, ClickLog>();

/**
 * The click log drawn from `options` (defaults {@link CLICK_LOG_DEFAULTS}).
 * Deterministic per options on any host, and cached per options in the
 * process: callers share the arrays and must not change them.
 *
 * @throws InvalidArgumentError for options out of range.
 */
export function clickLog(options: Partial<ClickLogOptions> = {}): ClickLog {
  const o: ClickLogOptions = { ...CLICK_LOG_DEFAULTS };
  for (const key of Object.keys(CLICK_LOG_DEFAULTS) as (keyof ClickLogOptions)[]) {
    const value = options[key];
    if (value !== undefined) o[key] = value;
  }
  checkOptions(o);
  const key = JSON.stringify([o.seed, o.fields, o.vocab, o.zipf, o.train, o.test]);
  const cached = logs.get(key);
  if (cached) return cached;

  const truth = groundTruth(o);
  const train = draw(truth, o.train, mixSeeds(o.seed, 2));
  const test = draw(truth, o.test, mixSeeds(o.seed, 3));
  let referenceAuc = NaN;
  const clicks = test.y.reduce((a, b) => a + b, 0);
  if (clicks > 0 && clicks < test.count) referenceAuc = auc(test.truth, test.y);
  const log: ClickLog = { train, test, referenceAuc, options: o };
  logs.set(key, log);
  return log;
}

/**
 * Examples [begin, end) of `data`: a view over the same arrays, no copy.
 * @throws InvalidArgumentError unless 0 ≤ begin ≤ end ≤ data.count are integers.
 */
export function clickSlice(data: ClickData, begin: number, end: number): ClickData {
  if (!(Number.isInteger(begin) && Number.isInteger(end) && begin >= 0 && begin <= end && end <= data.count)) {
    throw new InvalidArgumentError(`slice [${begin}, ${end}) is not a range of integers within the ${data.count} examples`);
  }
  const f = data.fields;
  return {
    count: end - begin,
    fields: f,
    ids: data.ids.subarray(begin * f, end * f),
    y: data.y.subarray(begin, end),
    truth: data.truth.subarray(begin, end),
  };
}

function checkOptions(o: ClickLogOptions): void {
  const integer = (name: keyof ClickLogOptions, min: number, max: number): void => {
    const v = o[name];
    if (!(Number.isInteger(v) && v >= min && v <= max)) throw new InvalidArgumentError(`click log option ${name} must be an integer in [${min}, ${max}], got ${v}`);
  };
  integer('seed', 0, 2 ** 32 - 1);
  integer('fields', 1, 1024);
  integer('vocab', 1, 2 ** 24);
  integer('train', 0, 2 ** 26);
  integer('test', 0, 2 ** 26);
  if (!(Number.isFinite(o.zipf) && o.zipf >= 0)) throw new InvalidArgumentError(`click log option zipf must be a finite number ≥ 0, got ${o.zipf}`);
  if ((o.train + o.test) * o.fields > 2 ** 28) {
    throw new InvalidArgumentError(`a click log of ${o.train + o.test} examples of ${o.fields} fields is too large to hold in memory; draw fewer`);
  }
}

/** The ground truth's parameters and the sampler of values. */
interface Truth {
  fields: number;
  vocab: number;
  bias: number;
  /** a_f[v] at f·vocab + v. */
  a: Float64Array;
  /** u_f[v] at (f·vocab + v)·TRUTH_DIM. */
  u: Float64Array;
  /** P(value ≤ v) at v: the Zipf distribution's CDF. */
  cdf: Float64Array;
}

/** The truth's parameters from `o.seed`, normalized and calibrated as the module's comment says. */
function groundTruth(o: ClickLogOptions): Truth {
  const { fields, vocab } = o;
  const normal = normalSampler(seededRandom(mixSeeds(o.seed, 1)));
  const a = new Float64Array(fields * vocab);
  const u = new Float64Array(fields * vocab * TRUTH_DIM);
  for (let f = 0; f < fields; f++) {
    for (let v = 0; v < vocab; v++) {
      const scale = (v + 1) ** -EFFECT_DECAY;
      a[f * vocab + v] = scale * normal();
      for (let k = 0; k < TRUTH_DIM; k++) u[(f * vocab + v) * TRUTH_DIM + k] = scale * normal();
    }
  }
  const cdf = zipfCdf(vocab, o.zipf);
  const truth: Truth = { fields, vocab, bias: 0, a, u, cdf };

  // Calibration: scale each part to its target spread, then solve for the bias.
  const random = seededRandom(mixSeeds(o.seed, 4));
  const values = new Uint32Array(fields);
  const first = new Float64Array(CALIBRATION_EXAMPLES);
  const pairs = new Float64Array(CALIBRATION_EXAMPLES);
  for (let i = 0; i < CALIBRATION_EXAMPLES; i++) {
    for (let f = 0; f < fields; f++) values[f] = zipfValue(cdf, random());
    first[i] = firstOrder(truth, values);
    pairs[i] = pairwise(truth, values);
  }
  const firstStd = std(first);
  const pairStd = std(pairs);
  const firstScale = firstStd > 0 ? FIRST_ORDER_STD / firstStd : 0;
  const pairScale = pairStd > 0 ? PAIR_STD / pairStd : 0;
  for (let i = 0; i < a.length; i++) a[i]! *= firstScale;
  const uScale = Math.sqrt(pairScale);
  for (let i = 0; i < u.length; i++) u[i]! *= uScale;
  const logits = first.map((v, i) => firstScale * v + pairScale * pairs[i]!);
  truth.bias = biasFor(logits, CLICK_RATE);
  return truth;
}

/** Draws `count` examples of `truth` from the stream `seed`. */
function draw(truth: Truth, count: number, seed: number): ClickData {
  const { fields, cdf } = truth;
  const random = seededRandom(seed);
  const ids = new BigUint64Array(count * fields);
  const words = LITTLE_ENDIAN ? new Uint32Array(ids.buffer, ids.byteOffset, 2 * ids.length) : null;
  const y = new Int32Array(count);
  const probability = new Float32Array(count);
  const values = new Uint32Array(fields);
  for (let i = 0; i < count; i++) {
    for (let f = 0; f < fields; f++) {
      const v = zipfValue(cdf, random());
      values[f] = v;
      const k = i * fields + f;
      if (words) {
        words[2 * k] = v;
        words[2 * k + 1] = f;
      } else {
        ids[k] = (BigInt(f) << 32n) | BigInt(v);
      }
    }
    const p = sigmoid(truth.bias + firstOrder(truth, values) + pairwise(truth, values));
    probability[i] = p;
    y[i] = random() < p ? 1 : 0;
  }
  return { count, fields, ids, y, truth: probability };
}

/** Whether a Uint32Array over uint64 bytes holds the low half first (every host Node runs on in practice). */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

function firstOrder(truth: Truth, values: Uint32Array): number {
  let s = 0;
  for (let f = 0; f < truth.fields; f++) s += truth.a[f * truth.vocab + values[f]!]!;
  return s;
}

function pairwise(truth: Truth, values: Uint32Array): number {
  const { u, vocab } = truth;
  let s = 0;
  for (let f = 0; f + 1 < truth.fields; f += 2) {
    const p = (f * vocab + values[f]!) * TRUTH_DIM;
    const q = ((f + 1) * vocab + values[f + 1]!) * TRUTH_DIM;
    for (let k = 0; k < TRUTH_DIM; k++) s += u[p + k]! * u[q + k]!;
  }
  return s;
}

/** The CDF of Zipf(s) over 0 … n − 1, P(v) ∝ (v + 1)^(−s); the last entry is exactly 1. */
function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let v = 0; v < n; v++) {
    total += (v + 1) ** -s;
    cdf[v] = total;
  }
  for (let v = 0; v < n; v++) cdf[v]! /= total;
  cdf[n - 1] = 1;
  return cdf;
}

/** The value whose CDF interval holds `r` ∈ [0, 1): the smallest v with cdf[v] > r (binary search). */
function zipfValue(cdf: Float64Array, r: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid]! > r) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Standard normal draws from uniform ones (Box–Muller, both outputs used). */
function normalSampler(random: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(1 - random())); // 1 − U ∈ (0, 1]: no log(0)
    const t = 2 * Math.PI * random();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

function std(xs: Float64Array): number {
  let mean = 0;
  for (const x of xs) mean += x;
  mean /= xs.length;
  let sq = 0;
  for (const x of xs) sq += (x - mean) ** 2;
  return Math.sqrt(sq / xs.length);
}

function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** The b for which the mean of sigmoid(b + logits) is `rate`: bisection, the mean being increasing in b. */
function biasFor(logits: Float64Array, rate: number): number {
  const meanRate = (b: number): number => {
    let s = 0;
    for (const z of logits) s += sigmoid(b + z);
    return s / logits.length;
  };
  let lo = -30;
  let hi = 30;
  for (let i = 0; i < 50; i++) {
    const mid = (lo + hi) / 2;
    if (meanRate(mid) < rate) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
