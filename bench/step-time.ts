import { type Batch, type Model } from '../worker/models/model.js';

/**
 * Median ms of one worker compute step (upload parameters and batch,
 * forward, backward, read the gradient back) on the active backend: `timed`
 * steps after `warmup` untimed ones. Also the 90th percentile.
 */
export async function stepTimes(model: Model, params: Float32Array, batch: Batch, warmup: number, timed: number): Promise<{ medianMs: number; p90Ms: number }> {
  const gradient = new Float32Array(model.elements);
  for (let i = 0; i < warmup; i++) await model.gradient(params, batch, gradient);
  const ms: number[] = [];
  for (let i = 0; i < timed; i++) {
    const t0 = performance.now();
    await model.gradient(params, batch, gradient);
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { medianMs: ms[ms.length >> 1]!, p90Ms: ms[Math.floor(ms.length * 0.9)]! };
}
