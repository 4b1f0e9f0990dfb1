import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import type { LoadedModel, TensorSignature } from '../../../serving/runtime/runtime.js';
import { Batcher, BatchStats } from '../../../serving/serve/batcher.js';

/** A model whose every output row is a fixed function of its input row; counts the rows of each run. */
function fakeModel(opts: { datatype?: 'FP32' | 'INT64'; width?: number; outWidth?: number; wrongOutput?: boolean } = {}): LoadedModel & { runs: number[] } {
  const input: TensorSignature = { name: 'x', datatype: opts.datatype ?? 'FP32', width: opts.width ?? 3 };
  const output: TensorSignature = { name: 'y', datatype: 'FP32', width: opts.outWidth ?? 2 };
  const runs: number[] = [];
  return {
    format: 'onnx',
    input,
    output,
    runs,
    async run(data, rows) {
      runs.push(rows);
      await new Promise((r) => setImmediate(r));
      if (data.length !== rows * input.width) throw new InvalidArgumentError(`expected ${rows * input.width} values`);
      const out = new Float32Array((opts.wrongOutput ? rows + 1 : rows) * output.width);
      for (let r = 0; r < rows; r++) {
        let sum = 0;
        for (let i = 0; i < input.width; i++) {
          const v = Number(data[r * input.width + i]);
          if (v < 0) throw new InvalidArgumentError('negative input');
          sum += v * (i + 1);
        }
        for (let j = 0; j < output.width; j++) out[r * output.width + j] = sum * (j + 1) + j;
      }
      return out;
    },
    async close() {},
  };
}

function rowsOf(rows: number, width: number, seed: number): Float32Array {
  return Float32Array.from({ length: rows * width }, (_, i) => ((seed * 31 + i * 7) % 17) / 4);
}

describe('serving/serve batcher', () => {
  it('merges requests up to maxBatch rows into one run, at once when full, with each result equal to its unbatched one', async () => {
    const model = fakeModel();
    // A long delay: the batch must go because it is full, not because the window ended.
    const batcher = new Batcher(model, { maxBatch: 4, maxDelayMs: 60_000 });
    const inputs = [1, 2, 3, 4].map((seed) => rowsOf(1, 3, seed));
    const results = await Promise.all(inputs.map((x) => batcher.submit(x, 1)));
    expect(model.runs).to.deep.equal([4]);
    const alone = fakeModel();
    for (let i = 0; i < inputs.length; i++) expect(Array.from(results[i]!)).to.deep.equal(Array.from(await alone.run(inputs[i]!, 1)));
  });

  it('runs what arrived within maxDelayMs of the first as one batch', async () => {
    const model = fakeModel();
    const batcher = new Batcher(model, { maxBatch: 32, maxDelayMs: 5 });
    const a = batcher.submit(rowsOf(2, 3, 1), 2);
    const b = batcher.submit(rowsOf(1, 3, 2), 1);
    const [ra, rb] = await Promise.all([a, b]);
    expect(model.runs).to.deep.equal([3]);
    expect(ra.length).to.equal(4);
    expect(rb.length).to.equal(2);
  });

  it('starts a new batch when the next request would overflow maxBatch', async () => {
    const model = fakeModel();
    const batcher = new Batcher(model, { maxBatch: 4, maxDelayMs: 60_000 });
    const a = batcher.submit(rowsOf(3, 3, 1), 3);
    const b = batcher.submit(rowsOf(2, 3, 2), 2);
    expect(model.runs).to.deep.equal([3]);
    batcher.flush();
    await Promise.all([a, b]);
    expect(model.runs).to.deep.equal([3, 2]);
  });

  it('runs a request larger than maxBatch alone and at once, leaving the waiting batch alone', async () => {
    const model = fakeModel();
    const batcher = new Batcher(model, { maxBatch: 4, maxDelayMs: 60_000 });
    const small = batcher.submit(rowsOf(1, 3, 1), 1);
    const big = batcher.submit(rowsOf(6, 3, 2), 6);
    expect(model.runs).to.deep.equal([6]);
    expect((await big).length).to.equal(12);
    batcher.flush();
    expect((await small).length).to.equal(2);
    expect(model.runs).to.deep.equal([6, 1]);
  });

  for (const maxBatch of [0, 1]) {
    it(`runs every request alone and at once with maxBatch ${maxBatch}`, async () => {
      const model = fakeModel();
      const batcher = new Batcher(model, { maxBatch, maxDelayMs: 60_000 });
      const all = [1, 2, 3].map((seed) => batcher.submit(rowsOf(2, 3, seed), 2));
      expect(model.runs).to.deep.equal([2, 2, 2]);
      await Promise.all(all);
    });
  }

  it('counts batches, rows, requests, the largest batch and a histogram of batch sizes, shared between batchers', async () => {
    const stats = new BatchStats();
    const a = new Batcher(fakeModel(), { maxBatch: 8, maxDelayMs: 60_000 }, stats);
    const b = new Batcher(fakeModel(), { maxBatch: 8, maxDelayMs: 60_000 }, stats);
    const waits = [a.submit(rowsOf(1, 3, 1), 1), a.submit(rowsOf(2, 3, 2), 2), b.submit(rowsOf(5, 3, 3), 5), a.submit(rowsOf(9, 3, 4), 9)];
    a.flush();
    b.flush();
    await Promise.all(waits);
    // Runs: 9 (alone), 3 (1 + 2), 5.
    expect(stats.snapshot()).to.deep.equal({ batches: 3, rows: 17, requests: 4, largestBatch: 9, histogram: { '1': 0, '2': 0, '4': 1, '8': 1, '16': 1 } });
  });

  it('batches INT64 inputs', async () => {
    const model = fakeModel({ datatype: 'INT64', width: 2 });
    const batcher = new Batcher(model, { maxBatch: 3, maxDelayMs: 60_000 });
    const inputs = [BigInt64Array.of(1n, 2n), BigInt64Array.of(3n, 4n, 5n, 6n)];
    const [r0, r1] = await Promise.all([batcher.submit(inputs[0]!, 1), batcher.submit(inputs[1]!, 2)]);
    expect(model.runs).to.deep.equal([3]);
    expect(Array.from(r0!)).to.deep.equal([5, 11]);
    expect(Array.from(r1!)).to.deep.equal([11, 23, 17, 35]);
  });

  it('fails only the request that makes a merged run fail: the others are rerun alone and succeed', async () => {
    const model = fakeModel();
    const batcher = new Batcher(model, { maxBatch: 3, maxDelayMs: 60_000 });
    const bad = Float32Array.of(1, -1, 1);
    const settled = await Promise.allSettled([batcher.submit(rowsOf(1, 3, 1), 1), batcher.submit(bad, 1), batcher.submit(rowsOf(1, 3, 3), 1)]);
    expect(settled.map((s) => s.status)).to.deep.equal(['fulfilled', 'rejected', 'fulfilled']);
    expect(((settled[1] as PromiseRejectedResult).reason as Error).message).to.equal('negative input');
    expect(model.runs).to.deep.equal([3, 1, 1, 1]);
  });

  it('rejects every request of a run whose output has the wrong length', async () => {
    const batcher = new Batcher(fakeModel({ wrongOutput: true }), { maxBatch: 2, maxDelayMs: 60_000 });
    const settled = await Promise.allSettled([batcher.submit(rowsOf(1, 3, 1), 1), batcher.submit(rowsOf(1, 3, 2), 1)]);
    for (const s of settled) expect(((s as PromiseRejectedResult).reason as Error).message).to.match(/returned 6 values for 2 rows/);
  });
});
