import { createLogger } from '../../cluster/log.js';
import type { LoadedModel } from '../runtime/runtime.js';

const log = createLogger('batcher');

/** How requests are merged into runs. */
export interface BatcherOptions {
  /** Most rows in one run; a request with more runs alone. ≤ 1: no batching, every request runs alone at once. */
  maxBatch: number;
  /** Longest a request waits for others to join its run, counted from the first request of the run. */
  maxDelayMs: number;
}

/** A copy of the counters, for stats endpoints and tests. */
export interface BatchStatsSnapshot {
  /** Runs of the model. */
  batches: number;
  /** Rows run, over all runs. */
  rows: number;
  /** Requests submitted. */
  requests: number;
  /** Rows of the largest run. */
  largestBatch: number;
  /**
   * Runs by size: the key is a bucket's upper bound in rows (1, 2, 4, 8, …)
   * and a run of r rows counts in the smallest bucket ≥ r. Buckets up to the
   * largest run are listed, empty ones as 0.
   */
  histogram: Record<string, number>;
}

/** Counters of one or more batchers (the model server shares one between the versions it serves). */
export class BatchStats {
  private batches = 0;
  private rows = 0;
  private requests = 0;
  private largestBatch = 0;
  /** Index k counts runs of (2^(k-1), 2^k] rows; index 0 runs of 1 row. */
  private readonly buckets: number[] = [];

  /** One request submitted (whatever run it ends up in). */
  recordRequest(): void {
    this.requests++;
  }

  /** One run of the model of `rows` rows. */
  recordBatch(rows: number): void {
    this.batches++;
    this.rows += rows;
    this.largestBatch = Math.max(this.largestBatch, rows);
    const k = rows <= 1 ? 0 : Math.ceil(Math.log2(rows));
    while (this.buckets.length <= k) this.buckets.push(0);
    this.buckets[k]!++;
  }

  /** A copy of the counters. */
  snapshot(): BatchStatsSnapshot {
    const histogram: Record<string, number> = {};
    this.buckets.forEach((count, k) => (histogram[String(2 ** k)] = count));
    return { batches: this.batches, rows: this.rows, requests: this.requests, largestBatch: this.largestBatch, histogram };
  }
}

interface Waiting {
  input: Float32Array | BigInt64Array;
  rows: number;
  resolve(output: Float32Array): void;
  reject(err: unknown): void;
}

/**
 * Dynamic batching for one model version: requests submitted close together
 * are merged into one `run` of up to `maxBatch` rows — or of whatever arrived
 * within `maxDelayMs` of the first, whichever comes first — and the result is
 * split back per request. The runtime computes each row on its own, so a
 * request's result is the same batched or not.
 *
 * Runs are not serialized here: a full batch starts at once even while
 * another runs, and the runtime decides how runs share the machine.
 */
export class Batcher {
  private waiting: Waiting[] = [];
  private waitingRows = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly model: LoadedModel,
    private readonly options: BatcherOptions,
    /** Where runs and requests are counted; pass one to share it between batchers. */
    readonly stats: BatchStats = new BatchStats(),
  ) {
    if (!Number.isInteger(options.maxBatch)) throw new Error(`maxBatch must be an integer, got ${options.maxBatch}`);
    if (!(options.maxDelayMs >= 0)) throw new Error(`maxDelayMs must be ≥ 0, got ${options.maxDelayMs}`);
  }

  /**
   * Runs `rows` examples (row-major, `rows × input.width` values of the
   * model's input type) in the next batch and resolves to their
   * `rows × output.width` outputs: a view of the batch's result, not a copy.
   */
  submit(input: Float32Array | BigInt64Array, rows: number): Promise<Float32Array> {
    this.stats.recordRequest();
    return new Promise<Float32Array>((resolve, reject) => {
      const request: Waiting = { input, rows, resolve, reject };
      const { maxBatch } = this.options;
      if (maxBatch <= 1 || rows >= maxBatch) {
        // Alone: nothing to merge it with, and it should not wait for a window it would overflow.
        this.run([request]);
        return;
      }
      if (this.waitingRows + rows > maxBatch) this.flush();
      this.waiting.push(request);
      this.waitingRows += rows;
      if (this.waitingRows === maxBatch) this.flush();
      else if (this.waiting.length === 1) this.timer = setTimeout(() => this.flush(), this.options.maxDelayMs);
    });
  }

  /** Starts a run of whatever is waiting now, without waiting out the delay. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.waiting.length === 0) return;
    const batch = this.waiting;
    this.waiting = [];
    this.waitingRows = 0;
    this.run(batch);
  }

  private run(batch: Waiting[]): void {
    const rows = batch.reduce((n, r) => n + r.rows, 0);
    this.stats.recordBatch(rows);
    let output: Promise<Float32Array>;
    try {
      // Inside the try: this may run from a timer, where a throw would take the process down.
      const input = batch.length === 1 ? batch[0]!.input : this.concat(batch, rows);
      output = this.model.run(input, rows);
    } catch (err) {
      output = Promise.reject(err);
    }
    output.then(
      (out) => {
        const width = this.model.output.width;
        if (out.length !== rows * width) {
          const err = new Error(`the model returned ${out.length} values for ${rows} rows of output width ${width} (expected ${rows * width})`);
          for (const r of batch) r.reject(err);
          return;
        }
        let at = 0;
        for (const r of batch) {
          r.resolve(out.subarray(at * width, (at + r.rows) * width));
          at += r.rows;
        }
      },
      (err: unknown) => {
        if (batch.length === 1) {
          batch[0]!.reject(err);
          return;
        }
        // One bad request must not fail the others merged with it: each runs
        // again alone, so every request gets what it would have got unbatched.
        log.debug(`a run of ${batch.length} requests failed (${(err as Error).message}); running each alone`);
        for (const r of batch) this.run([r]);
      },
    );
  }

  private concat(batch: Waiting[], rows: number): Float32Array | BigInt64Array {
    const n = rows * this.model.input.width;
    const all = this.model.input.datatype === 'INT64' ? new BigInt64Array(n) : new Float32Array(n);
    let at = 0;
    for (const r of batch) {
      // Requests are decoded for this model's input type, so the types match.
      (all as Float32Array).set(r.input as Float32Array, at);
      at += r.input.length;
    }
    return all;
  }
}
