import { SparseClient } from '../../client/sparse-client.js';
import { type TesseraClient } from '../../client/tessera-client.js';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type ClickData, clickLog } from '../data/click-log.js';
import { auc } from '../metrics/auc.js';
import { CTR_TABLE, ctr } from '../models/ctr.js';
import { WorkerClock } from '../step-clock.js';
import { type TrainResult, handled } from '../trainer.js';
import { type TaskTrainOptions, type TrainingTask } from './task.js';

/** Examples per pull while evaluating: bounds the rows in flight. */
const EVAL_CHUNK = 2_000;

/**
 * Click-through-rate prediction on the synthetic click log (worker/data/click-log.ts):
 * per example, one row of the sparse table `emb` per field, looked up by the
 * field's id, feeds a small MLP (worker/models/ctr.ts). Each step pulls the
 * dense weights and only the rows its batch touches (each distinct id once),
 * and pushes the dense gradient and those rows' gradients (a repeated id's
 * summed). Rows are created by their shard on the first push that touches them.
 *
 * Under ssp/bsp rows follow the clocks as the dense weights do: their pulls
 * carry the step's clock, and a step's rows are pushed (and acknowledged)
 * before its dense push, which ends the step on the shards; under bsp each
 * row then moves by its mean gradient over the step's workers
 * (docs/consistency.md). Evaluation reads rows without creating them.
 */
export const ctrTask: TrainingTask = {
  name: ctr.name,
  spec: (seed) => ctr.spec(seed),
  get trainExamples() {
    return clickLog().train.count;
  },
  defaultShift: 0,
  // Rare ids' rows overfit: held-out AUC is highest after epoch 1 (docs/worker.md).
  defaultEpochs: 1,
  tunedLearningRates: { adam: 0.003, adagrad: 0.1, sgd: 0.5, momentum: 0.05 },

  async train(o: TaskTrainOptions): Promise<TrainResult> {
    if (o.augment?.maxShift) throw new InvalidArgumentError('ctr trains on click logs, not images: drop --augment');
    const { client, batchSize, signal, onStep } = o;
    const data = clickLog().train;
    const sparse = new SparseClient(client);
    const fields = ctr.fields;
    const dense = new Float32Array(ctr.elements);
    const gradients = [new Float32Array(ctr.elements), new Float32Array(ctr.elements)];
    const ids = new BigUint64Array(batchSize * fields);
    const y = new Int32Array(batchSize);
    const clock = new WorkerClock(client);
    await clock.join(0);
    const started = performance.now();
    let steps = 0;
    let samples = 0;
    let lastLoss = NaN;
    let aborted = false;
    let pushing: Promise<unknown> | null = null;
    try {
      for await (const { epoch, indices, lastOfBlock, resumed } of o.source) {
        if (signal?.aborted) {
          aborted = true;
          break;
        }
        if (resumed) await clock.join(steps);
        const t0 = performance.now();
        const n = gather(data, indices, ids, y);
        const batchIds = ids.slice(0, n * fields);
        const at = clock.at(steps);
        const t1 = performance.now();
        const [, rows] = await Promise.all([client.pull(dense, at), sparse.pull(CTR_TABLE, batchIds, { at })]);
        const t2 = performance.now();
        const g = await ctr.gradient(dense, rows, y, n, gradients[steps % 2]);
        const t3 = performance.now();
        // At most one push in flight: with pipelining it overlaps the next step's pulls and compute.
        if (pushing) await pushing;
        const rowGradients = g.rows.slice(0, n * fields * ctr.dim);
        pushing = handled(
          at
            ? sparse.push(CTR_TABLE, batchIds, rowGradients, undefined, at.clock).then(() => client.push(g.dense, undefined, at.clock))
            : Promise.all([client.push(g.dense), sparse.push(CTR_TABLE, batchIds, rowGradients)]),
        );
        // A block is reported done only once its last push is acknowledged (work-source.ts).
        if (!o.pipeline || lastOfBlock) {
          await pushing;
          pushing = null;
        }
        const t4 = performance.now();
        steps++;
        samples += n;
        lastLoss = g.loss;
        // Where the step's time went (trainer.ts, StepSeconds): the gather is compute, the rows' slice before the push too.
        onStep?.({ step: steps, epoch, loss: g.loss, samples, seconds: { pull: (t2 - t1) / 1000, compute: (t1 - t0 + t3 - t2) / 1000, push: (t4 - t3) / 1000 } });
      }
      if (pushing) await pushing;
    } finally {
      await pushing?.catch(() => undefined);
    }
    return { steps, samples, lastLoss, wallMs: performance.now() - started, aborted };
  },

  async evaluate(client: TesseraClient) {
    const log = clickLog();
    const test = log.test;
    const sparse = new SparseClient(client);
    const dense = await client.pull();
    const scores = new Float32Array(test.count);
    const ids = new BigUint64Array(EVAL_CHUNK * ctr.fields);
    const y = new Int32Array(EVAL_CHUNK);
    for (let begin = 0; begin < test.count; begin += EVAL_CHUNK) {
      const indices = Uint32Array.from({ length: Math.min(EVAL_CHUNK, test.count - begin) }, (_, i) => begin + i);
      const n = gather(test, indices, ids, y);
      const rows = await sparse.pull(CTR_TABLE, ids.subarray(0, n * ctr.fields), { readOnly: true });
      scores.set((await ctr.predict(dense, rows, n)).subarray(0, n), begin);
    }
    return clickMetrics(scores, test.y, log.referenceAuc);
  },

  heldOut() {
    const log = clickLog();
    const test = log.test;
    return {
      dataset: `click log held-out split, ${test.count} examples`,
      // The ids are below 2^63, so their int64 reading is the same number.
      inputs: new BigInt64Array(test.ids.buffer, test.ids.byteOffset, test.count * test.fields),
      rows: test.count,
      metrics: (outputs, rows) => clickMetrics(outputs.subarray(0, rows), test.y.subarray(0, rows), log.referenceAuc),
    };
  },
};

/** Accuracy at a threshold of 0.5, AUC, and the best AUC any model can reach on the split. */
function clickMetrics(scores: Float32Array, y: Int32Array, referenceAuc: number): Record<string, number> {
  let correct = 0;
  for (let i = 0; i < scores.length; i++) if ((scores[i]! >= 0.5 ? 1 : 0) === y[i]) correct++;
  return { test_accuracy: correct / scores.length, test_auc: auc(scores, y), reference_auc: referenceAuc };
}

/** Copies the ids and labels of the examples at `indices` into `ids` and `y`; returns how many. */
function gather(data: ClickData, indices: Uint32Array, ids: BigUint64Array, y: Int32Array): number {
  const f = data.fields;
  if (indices.length > y.length) throw new InvalidArgumentError(`a batch of ${indices.length} examples is larger than the batch size ${y.length}`);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i]!;
    if (src >= data.count) throw new InvalidArgumentError(`example index ${src} is outside the click log's ${data.count} examples`);
    ids.set(data.ids.subarray(src * f, (src + 1) * f), i * f);
    y[i] = data.y[src]!;
  }
  return indices.length;
}
