import { InvalidArgumentError } from '../cluster/errors.js';
import { type StepClock } from '../client/tessera-client.js';
import { WorkerClock } from './step-clock.js';
import { batchesPerEpoch, type Dataset, epochIndexBatches } from './data/dataset.js';
import { type AugmentOptions, augmentSeed, resolveAugmentOptions, shiftBatch } from './data/augment.js';
import { type IndexBatch } from './data/work-source.js';
import { type Batch, type Model } from './models/model.js';

/**
 * What the training loop needs of the cluster: a `TesseraClient`, or any
 * stand-in with the same three members (an in-process one in tests).
 */
export interface ParameterClient {
  /** Elements of the cluster's parameter vector. */
  readonly elements: number;
  /** Whether pulls and pushes carry the worker's clock (the cluster runs ssp or bsp). Default false. */
  readonly clocked?: boolean;
  /** The whole parameter vector, written into `out`; with `at`, once step `at.clock` may see it. */
  pull(out: Float32Array, at?: StepClock): Promise<Float32Array>;
  /** Applies a gradient of the whole vector (of step `clock` when clocked); resolves once it is applied or, under bsp, summed. */
  push(gradient: Float32Array, seq?: number, clock?: number): Promise<unknown>;
  /** The clock a worker joining now starts from; needed when clocked. */
  clusterClock?(): Promise<number>;
}

/** Reported after every step. */
export interface StepEvent {
  /** Steps done so far, this one included (1-based). */
  step: number;
  /** The epoch the step belongs to, from 0. */
  epoch: number;
  /** Mean loss of the step's batch, at the parameters it pulled. */
  loss: number;
  /** Examples consumed so far, this step's included. */
  samples: number;
  /** Where the step's time went (the worker's `tessera_worker_step_seconds`, docs/operations.md). */
  seconds?: StepSeconds;
}

/**
 * A step's time, in seconds, by what the loop was doing: waiting for the
 * parameters (`pull`: with pipelining, only the part of the pull that the
 * previous step's compute did not hide), computing the gradient (`compute`:
 * gathering the batch included), waiting for a push to be acknowledged
 * (`push`: with pipelining, the previous step's, before this one's is sent,
 * and a block's last).
 */
export interface StepSeconds {
  pull: number;
  compute: number;
  push: number;
}

export interface TrainerOptions {
  client: ParameterClient;
  model: Model;
  /** The examples: this worker's share of the training set, or with `source` the whole set that `source` indexes. */
  data: Dataset;
  /**
   * Where the batches come from: examples of `data` by index (claimedBatches:
   * the blocks this worker claims from the cluster's work queue). Without it
   * the worker trains `epochs` passes over `data` in a seeded order (`seed`),
   * the last partial batch of each pass dropped.
   */
  source?: AsyncIterable<IndexBatch>;
  /** Examples per step. Default 64. */
  batchSize?: number;
  /** Passes over `data`; required without `source`, ignored with it. */
  epochs?: number;
  /** Seed of the example order; each epoch reshuffles from (seed, epoch) (without `source`). */
  seed: number;
  onStep?: (event: StepEvent) => void;
  /** Stops the loop between two steps; `train` then resolves with `aborted: true`. */
  signal?: AbortSignal;
  /**
   * Overlap communication with compute: the pull for step t+1 is in flight
   * while step t computes, and the push of step t while step t+1 pulls and
   * computes (at most one of each in flight). Step t+1 then reads weights
   * that may not hold step t's gradient yet (a staleness of one step, as in
   * BytePS). Default true; false runs pull → compute → push strictly in order.
   */
  pipeline?: boolean;
  /**
   * Shift each training image by up to `maxShift` pixels (worker/data/augment.ts),
   * drawn from (seed, epoch, the batch's first example) so a batch is shifted
   * the same whichever worker trains it. Default none.
   */
  augment?: AugmentOptions;
}

/** The defaults of {@link TrainerOptions}. */
export const TRAINER_DEFAULTS = { batchSize: 64, pipeline: true } as const;

export interface TrainResult {
  steps: number;
  samples: number;
  /** Loss of the last step; NaN when no step ran. */
  lastLoss: number;
  wallMs: number;
  /** Whether `signal` stopped the loop before the last epoch ended. */
  aborted: boolean;
}

/**
 * One worker's training loop: for each batch of each epoch, pull the
 * parameters, compute the gradient of the batch's mean loss, push it; with
 * `pipeline` (the default) the pull of the next step and the push of this one
 * overlap the compute, else the three happen strictly in sequence. Batches
 * come from `source` (the blocks claimed from the cluster), or without one
 * follow `epochBatches`: a seeded reshuffle per epoch, the last partial
 * batch of an epoch dropped.
 *
 * @throws InvalidArgumentError when the model does not match the cluster's
 *   vector or the data cannot fill one batch; client errors as they come.
 */
export async function train(options: TrainerOptions): Promise<TrainResult> {
  const { client, model, data, epochs, seed, onStep, signal } = options;
  const batchSize = options.batchSize ?? TRAINER_DEFAULTS.batchSize;
  validate(options, batchSize);

  const pipeline = options.pipeline ?? TRAINER_DEFAULTS.pipeline;
  const augment = options.augment?.maxShift ? resolveAugmentOptions(options.augment, data.inputSize) : undefined;
  // Two of each buffer when pipelined: one in use by the network while the other is computed on.
  const params = [new Float32Array(model.elements), new Float32Array(model.elements)];
  const gradients = [new Float32Array(model.elements), new Float32Array(model.elements)];
  const started = performance.now();
  let steps = 0;
  let samples = 0;
  let lastLoss = NaN;
  let aborted = false;
  // Known up front without a source: the last step then starts no pull for a step that will not come.
  const totalSteps = options.source ? Infinity : batchesPerEpoch(data.count, batchSize) * epochs!;
  const batches = options.source ?? staticBatches(data.count, batchSize, epochs!, seed);
  const batch: Batch = { x: new Float32Array(batchSize * data.inputSize), y: new Int32Array(batchSize), count: 0 };
  let pulling: Promise<Float32Array> | null = null;
  let pushing: Promise<unknown> | null = null;
  // Under ssp/bsp every pull and push carries the step's clock, counted from where the cluster is now.
  const clock = new WorkerClock(client);
  await clock.join(0);
  try {
    for await (const { epoch, indices, lastOfBlock, resumed } of batches) {
      if (signal?.aborted) {
        aborted = true;
        break;
      }
      if (resumed && clock.clocked) {
        // Back from idle: the steps closed without this worker; rejoin where the run is now.
        await pulling?.catch(() => undefined);
        pulling = null;
        await clock.join(steps);
      }
      const t0 = performance.now();
      gather(data, indices, batch);
      if (augment) shiftBatch(batch, augment, augmentSeed(seed, epoch, indices[0]!));
      const slot = pipeline ? steps % 2 : 0;
      const t1 = performance.now();
      const current = await (pulling ?? client.pull(params[slot]!, clock.at(steps)));
      const t2 = performance.now();
      // Pipelined: fetch the next step's weights into the other buffer while this one computes.
      pulling = pipeline && steps + 1 < totalSteps ? handled(client.pull(params[1 - slot]!, clock.at(steps + 1))) : null;
      const { loss } = await model.gradient(current, batch, gradients[slot]!);
      const t3 = performance.now();
      // The previous push must finish before its buffer is reused, and at most one is in flight.
      if (pushing) await pushing;
      pushing = handled(client.push(gradients[slot]!, undefined, clock.at(steps)?.clock));
      // A block is reported done only once its last push is acknowledged (work-source.ts).
      if (!pipeline || lastOfBlock) {
        await pushing;
        pushing = null;
      }
      const t4 = performance.now();
      steps++;
      samples += batch.count;
      lastLoss = loss;
      onStep?.({ step: steps, epoch, loss, samples, seconds: { pull: (t2 - t1) / 1000, compute: (t1 - t0 + t3 - t2) / 1000, push: (t4 - t3) / 1000 } });
    }
    if (pushing) await pushing;
  } finally {
    // After an abort or a failure: let calls still in flight settle so none is left unobserved.
    await pulling?.catch(() => undefined);
    await pushing?.catch(() => undefined);
  }
  return { steps, samples, lastLoss, wallMs: performance.now() - started, aborted };
}

/**
 * `p`, marked as observed: a prefetched pull or an unawaited push may fail
 * while the loop waits elsewhere (for its data source); the loop awaits it
 * later and sees the error then, rather than Node ending the process for an
 * unhandled rejection first.
 */
export function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** `epochs` passes over `examples` in a seeded order each, cut into full batches (as epochBatches does). */
async function* staticBatches(examples: number, batchSize: number, epochs: number, seed: number): AsyncGenerator<IndexBatch> {
  for (let epoch = 0; epoch < epochs; epoch++) for (const indices of epochIndexBatches(examples, batchSize, seed, epoch)) yield { epoch, indices };
}

/** Copies the examples at `indices` into `batch` (at most its capacity). */
function gather(data: Dataset, indices: Uint32Array, batch: Batch): void {
  const d = data.inputSize;
  if (indices.length * d > batch.x.length) throw new InvalidArgumentError(`a batch of ${indices.length} examples is larger than the batch size ${batch.y.length}`);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i]!;
    if (src >= data.count) throw new InvalidArgumentError(`example index ${src} is outside the dataset's ${data.count} examples`);
    batch.x.set(data.x.subarray(src * d, (src + 1) * d), i * d);
    batch.y[i] = data.y[src]!;
  }
  batch.count = indices.length;
}

function validate(o: TrainerOptions, batchSize: number): void {
  if (o.client.elements !== o.model.elements) {
    throw new InvalidArgumentError(`the cluster's model has ${o.client.elements} parameters but model ${o.model.name} has ${o.model.elements}; train the model the cluster was created with`);
  }
  if (o.data.inputSize !== o.model.inputSize) {
    throw new InvalidArgumentError(`model ${o.model.name} takes ${o.model.inputSize} features per example, the data has ${o.data.inputSize}`);
  }
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InvalidArgumentError(`batch size must be a positive integer, got ${batchSize}`);
  if (!o.source && !(Number.isInteger(o.epochs) && o.epochs! >= 0)) throw new InvalidArgumentError(`epochs must be a non-negative integer, got ${o.epochs}`);
  if (!Number.isInteger(o.seed)) throw new InvalidArgumentError(`seed must be an integer, got ${o.seed}`);
  if (!o.source && o.epochs! > 0 && batchesPerEpoch(o.data.count, batchSize) === 0) {
    throw new InvalidArgumentError(`this worker's ${o.data.count} examples do not fill one batch of ${batchSize}; use a smaller batch size or fewer workers`);
  }
}
