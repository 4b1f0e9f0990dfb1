import { type ClusterConfig } from '../cluster/cluster-config.js';
import { type OptimizerName, optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { floatHeap } from '../server/float-heap.js';
import { applyGradient, newState, type SlotState } from '../server/optimizers.js';
import { SlotStore } from '../server/slot-store.js';
import { type Memcpy } from './baselines.js';
import { type Figure, MB, median, rateFigure } from './figures.js';

/**
 * Server apply rate, in-process: one pushed gradient applied to every slot of
 * a 16M-float model (1 024 slots; arrays far larger than any cache), as a
 * shard applies a whole-model push: slots made by the shard's SlotStore, the
 * gradient where the shard assembles one (the float heap), so the figure is
 * the shard's own path (SIMD kernels where available). The JavaScript kernels
 * are timed too, on plain arrays, for comparison.
 *
 * Held against the memory-copy bound: the rate at which memory moves the bytes
 * each rule reads and writes per element, at the traffic `Buffer.copy`
 * sustains (2 × bytes copied), measured between the repetitions.
 */

/** Bytes each rule reads and writes per element (float32 values, gradient and state). */
export const BYTES_PER_ELEMENT: Record<OptimizerName, number> = {
  sgd: 12, // read w, g; write w
  momentum: 20, // read w, v, g; write w, v
  adagrad: 20, // read w, a, g; write w, a
  adam: 28, // read w, m, v, g; write w, m, v
};

function config(name: OptimizerName, elements: number, slots: number): ClusterConfig {
  return {
    name: 'bench',
    slots,
    model: { name: 'flat', seed: 7, tensors: [{ name: 'w', shape: [elements], init: { kind: 'uniform', low: -1, high: 1 } }] },
    optimizer: optimizerWithDefaults({ name, learningRate: 1e-6 }),
    consistency: 'async',
  };
}

/** Params/s of `reps` whole-model applies (after one warm-up), with a memcpy sample after each. */
function time(slots: SlotState[], offsets: number[], g: Float32Array, c: ClusterConfig, reps: number, memcpy: Memcpy | null, copies: number[]): number[] {
  const rates: number[] = [];
  const elements = g.length;
  for (let r = 0; r <= reps; r++) {
    const t0 = process.hrtime.bigint();
    for (let s = 0; s < slots.length; s++) applyGradient(slots[s]!, g, offsets[s]!, c.optimizer);
    const ns = Number(process.hrtime.bigint() - t0);
    if (r === 0) continue; // warm-up: JIT, first touch
    rates.push(elements / (ns / 1e9));
    if (memcpy) copies.push(memcpy.once());
  }
  return rates;
}

function gradient(elements: number, owner: object): Float32Array {
  const g = floatHeap()?.alloc(elements, owner) ?? new Float32Array(elements);
  for (let i = 0; i < elements; i++) g[i] = ((i % 97) - 48) / 4800;
  return g;
}

export function applyRate(name: OptimizerName, elements: number, slotCount: number, reps: number, memcpy: Memcpy, copyRates: number[]): Figure {
  const c = config(name, elements, slotCount);
  const store = new SlotStore(c);
  const slots = store.ensureRange(0, slotCount);
  const offsets = slots.map((s) => s.start);
  const copies: number[] = [];
  const rates = time(slots, offsets, gradient(elements, store), c, reps, memcpy, copies);
  copyRates.push(...copies);
  // The JavaScript kernels on plain arrays: what the shard runs where WebAssembly SIMD is unavailable.
  const plain = slots.map((s) => newState(Float32Array.from(s.values), c.optimizer));
  const gPlain = new Float32Array(elements);
  for (let i = 0; i < elements; i++) gPlain[i] = ((i % 97) - 48) / 4800;
  const jsRates = time(plain, offsets, gPlain, c, Math.max(2, Math.ceil(reps / 2)), null, []);

  const f = rateFigure(`apply_${name}`, 'params/s', rates);
  const bound = (2 * median(copies) * MB) / BYTES_PER_ELEMENT[name];
  f.limit = `memcpy bound, ${BYTES_PER_ELEMENT[name]} B/param`;
  f.ratio = f.value / bound;
  f.detail = { bound_params_per_s: bound, GBps_moved: (f.value * BYTES_PER_ELEMENT[name]) / 1e9, js_kernels_params_per_s: median(jsRates), simd: floatHeap() ? 'yes' : 'no' };
  return f;
}
