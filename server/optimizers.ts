import { type OptimizerConfig, learningRateAt } from '../cluster/optimizer-config.js';
import { type SimdKernels, addressOf, simdKernels } from './simd-kernels.js';

/**
 * The update rules, as tight loops over Float32Arrays that V8 compiles to
 * straight-line code: no allocation, no per-element calls. Arithmetic is done
 * in float64 and rounded once on store, so the result is the float32 rounding
 * of the exact update (what the unit tests check against a float64 reference).
 *
 * `w` (values) and the state arrays are one slot's; `g` is the gradient, read
 * from `g[gOff]` for `n` elements.
 *
 * Two implementations, bit for bit the same:
 * - these loops, written several independent elements per iteration: V8 does
 *   not vectorise JavaScript, and a plain loop runs one element at a time
 *   through a chain of dependent conversions; unrolling lets the CPU overlap
 *   them without changing any element's arithmetic (same expression, same
 *   order). They run where the SIMD kernels cannot, and are the reference.
 * - the WebAssembly SIMD kernels of simd-kernels.ts, two float64 lanes at a
 *   time, used by {@link applyGradient} when the slot and the gradient lie in
 *   the float heap, as a shard's do.
 * Measured on 16M floats, 2-core x86-64: sgd ≈ 0.3 G params/s as plain
 * loops, ≈ 0.6 unrolled, ≈ 1.3–2 with SIMD (memory-bound); adam ≈ 0.14, ≈ 0.2,
 * ≈ 0.3 (docs/benchmarks.md).
 */

export interface SlotState {
  values: Float32Array;
  /** momentum velocity, adagrad accumulator or adam first moment. */
  s1: Float32Array | null;
  /** adam second moment. */
  s2: Float32Array | null;
  /** Pushes applied to this slot (adam's t). */
  step: number;
}

export function sgd(w: Float32Array, g: Float32Array, gOff: number, n: number, lr: number): void {
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const j = gOff + i;
    w[i] = w[i]! - lr * g[j]!;
    w[i + 1] = w[i + 1]! - lr * g[j + 1]!;
    w[i + 2] = w[i + 2]! - lr * g[j + 2]!;
    w[i + 3] = w[i + 3]! - lr * g[j + 3]!;
    w[i + 4] = w[i + 4]! - lr * g[j + 4]!;
    w[i + 5] = w[i + 5]! - lr * g[j + 5]!;
    w[i + 6] = w[i + 6]! - lr * g[j + 6]!;
    w[i + 7] = w[i + 7]! - lr * g[j + 7]!;
  }
  for (; i < n; i++) w[i] = w[i]! - lr * g[gOff + i]!;
}

export function momentum(w: Float32Array, v: Float32Array, g: Float32Array, gOff: number, n: number, lr: number, mu: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const j = gOff + i;
    const v0 = mu * v[i]! + g[j]!;
    const v1 = mu * v[i + 1]! + g[j + 1]!;
    const v2 = mu * v[i + 2]! + g[j + 2]!;
    const v3 = mu * v[i + 3]! + g[j + 3]!;
    v[i] = v0;
    v[i + 1] = v1;
    v[i + 2] = v2;
    v[i + 3] = v3;
    w[i] = w[i]! - lr * Math.fround(v0);
    w[i + 1] = w[i + 1]! - lr * Math.fround(v1);
    w[i + 2] = w[i + 2]! - lr * Math.fround(v2);
    w[i + 3] = w[i + 3]! - lr * Math.fround(v3);
  }
  for (; i < n; i++) {
    const vi = mu * v[i]! + g[gOff + i]!;
    v[i] = vi;
    w[i] = w[i]! - lr * Math.fround(vi);
  }
}

export function adagrad(w: Float32Array, a: Float32Array, g: Float32Array, gOff: number, n: number, lr: number, eps: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const j = gOff + i;
    const g0 = g[j]!;
    const g1 = g[j + 1]!;
    const g2 = g[j + 2]!;
    const g3 = g[j + 3]!;
    const a0 = a[i]! + g0 * g0;
    const a1 = a[i + 1]! + g1 * g1;
    const a2 = a[i + 2]! + g2 * g2;
    const a3 = a[i + 3]! + g3 * g3;
    a[i] = a0;
    a[i + 1] = a1;
    a[i + 2] = a2;
    a[i + 3] = a3;
    w[i] = w[i]! - (lr * g0) / (Math.sqrt(Math.fround(a0)) + eps);
    w[i + 1] = w[i + 1]! - (lr * g1) / (Math.sqrt(Math.fround(a1)) + eps);
    w[i + 2] = w[i + 2]! - (lr * g2) / (Math.sqrt(Math.fround(a2)) + eps);
    w[i + 3] = w[i + 3]! - (lr * g3) / (Math.sqrt(Math.fround(a3)) + eps);
  }
  for (; i < n; i++) {
    const gi = g[gOff + i]!;
    const ai = a[i]! + gi * gi;
    a[i] = ai;
    w[i] = w[i]! - (lr * gi) / (Math.sqrt(Math.fround(ai)) + eps);
  }
}

/** `t` is the 1-based count of this slot's updates, this one included. */
export function adam(w: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, gOff: number, n: number, lr: number, b1: number, b2: number, eps: number, t: number): void {
  const c1 = 1 - Math.pow(b1, t);
  const c2 = 1 - Math.pow(b2, t);
  const k1 = 1 - b1;
  const k2 = 1 - b2;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const j = gOff + i;
    const g0 = g[j]!;
    const g1 = g[j + 1]!;
    const g2 = g[j + 2]!;
    const g3 = g[j + 3]!;
    const m0 = Math.fround(b1 * m[i]! + k1 * g0);
    const m1 = Math.fround(b1 * m[i + 1]! + k1 * g1);
    const m2 = Math.fround(b1 * m[i + 2]! + k1 * g2);
    const m3 = Math.fround(b1 * m[i + 3]! + k1 * g3);
    const v0 = Math.fround(b2 * v[i]! + k2 * g0 * g0);
    const v1 = Math.fround(b2 * v[i + 1]! + k2 * g1 * g1);
    const v2 = Math.fround(b2 * v[i + 2]! + k2 * g2 * g2);
    const v3 = Math.fround(b2 * v[i + 3]! + k2 * g3 * g3);
    m[i] = m0;
    m[i + 1] = m1;
    m[i + 2] = m2;
    m[i + 3] = m3;
    v[i] = v0;
    v[i + 1] = v1;
    v[i + 2] = v2;
    v[i + 3] = v3;
    w[i] = w[i]! - (lr * (m0 / c1)) / (Math.sqrt(v0 / c2) + eps);
    w[i + 1] = w[i + 1]! - (lr * (m1 / c1)) / (Math.sqrt(v1 / c2) + eps);
    w[i + 2] = w[i + 2]! - (lr * (m2 / c1)) / (Math.sqrt(v2 / c2) + eps);
    w[i + 3] = w[i + 3]! - (lr * (m3 / c1)) / (Math.sqrt(v3 / c2) + eps);
  }
  for (; i < n; i++) {
    const gi = g[gOff + i]!;
    const mi = Math.fround(b1 * m[i]! + k1 * gi);
    const vi = Math.fround(b2 * v[i]! + k2 * gi * gi);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
  }
}

/**
 * Allocates a slot's optimizer state, filled with each rule's starting values.
 * `alloc` supplies zero-filled arrays (the shard's slot store passes one that
 * allocates from the float heap, so the SIMD kernels can reach them).
 */
export function newState(values: Float32Array, config: OptimizerConfig, alloc: (n: number) => Float32Array = (n) => new Float32Array(n)): SlotState {
  const n = values.length;
  switch (config.name) {
    case 'sgd':
      return { values, s1: null, s2: null, step: 0 };
    case 'momentum':
      return { values, s1: alloc(n), s2: null, step: 0 };
    case 'adagrad':
      return { values, s1: alloc(n).fill(config.initialAccumulator), s2: null, step: 0 };
    case 'adam':
      return { values, s1: alloc(n), s2: alloc(n), step: 0 };
  }
}

/**
 * Applies gradient `g[gOff, gOff + n)` to one slot with the configured rule:
 * with the SIMD kernels when the slot and the gradient lie in the float heap
 * (as a shard's do), else with the loops above; both give the same bits.
 */
export function applyGradient(slot: SlotState, g: Float32Array, gOff: number, scheduled: OptimizerConfig): void {
  const n = slot.values.length;
  slot.step++;
  // A learning-rate schedule: this update's rate, by the slot's update count.
  const config = scheduled.schedule?.length ? { ...scheduled, learningRate: learningRateAt(scheduled, slot.step) } : scheduled;
  const k = simdKernels();
  if (k && n >= 4 && inHeap(k, slot, g)) {
    const body = n - (n % 4);
    applySimd(k, slot, g, gOff, body, config);
    if (body < n) {
      const tail = { values: slot.values.subarray(body), s1: slot.s1?.subarray(body) ?? null, s2: slot.s2?.subarray(body) ?? null, step: slot.step };
      applyJs(tail, g, gOff + body, config);
    }
    return;
  }
  applyJs(slot, g, gOff, config);
}

/**
 * Applies `g[gOff …]` to `slots`, whose parts of the gradient follow one
 * another from `gOff`. Slots side by side in memory (values and each kind of
 * state; slots created together are, see SlotStore) with the same update
 * count are applied as one array, by one call; others one by one. The bits
 * are those of {@link applyGradient} slot by slot: the rules work element by
 * element, and each slot's count still advances by one.
 */
export function applyGradientToSlots(slots: readonly BlockSlot[], g: Float32Array, gOff: number, config: OptimizerConfig): void {
  let off = gOff;
  for (let i = 0; i < slots.length; ) {
    const a = slots[i]!;
    let j = i + 1;
    while (j < slots.length && adjacent(slots[j - 1]!, slots[j]!)) j++;
    const length = slots[j - 1]!.end - a.start;
    if (j - i === 1) applyGradient(a, g, off, config);
    else {
      const span = { values: spanning(a.values, length), s1: a.s1 && spanning(a.s1, length), s2: a.s2 && spanning(a.s2, length), step: a.step };
      applyGradient(span, g, off, config);
      for (let k = i; k < j; k++) slots[k]!.step = span.step;
    }
    off += length;
    i = j;
  }
}

/** A slot that knows where its arrays lie (SlotStore's slots do). */
export interface BlockSlot extends SlotState {
  /** First element of the slot in the model, and the first after it. */
  start: number;
  end: number;
  /** The allocation its arrays are part of: slots sharing it lie side by side, in the order of their elements, in values and in each kind of state. */
  block: object;
}

/** Whether `b` follows `a` in memory (values and state) and has the same update count. */
function adjacent(a: BlockSlot, b: BlockSlot): boolean {
  return a.block === b.block && b.start === a.end && a.step === b.step;
}

/** `length` floats of `a`'s memory from its start. */
function spanning(a: Float32Array, length: number): Float32Array {
  return new Float32Array(a.buffer, a.byteOffset, length);
}

function inHeap(k: SimdKernels, slot: SlotState, g: Float32Array): boolean {
  const h = k.heap;
  // Arrays of one heap share its memory's buffer (until the heap grows): one lookup then covers them all.
  const b = g.buffer;
  if (slot.values.buffer === b && (!slot.s1 || slot.s1.buffer === b) && (!slot.s2 || slot.s2.buffer === b)) return h.holds(g);
  return h.holds(slot.values) && h.holds(g) && (!slot.s1 || h.holds(slot.s1)) && (!slot.s2 || h.holds(slot.s2));
}

/** The first `n` elements (a multiple of 4) of the slot, with the WebAssembly kernels. */
function applySimd(k: SimdKernels, slot: SlotState, g: Float32Array, gOff: number, n: number, config: OptimizerConfig): void {
  const w = addressOf(slot.values);
  const gp = addressOf(g, gOff);
  switch (config.name) {
    case 'sgd':
      return k.fn.sgd(w, gp, n, config.learningRate);
    case 'momentum':
      return k.fn.momentum(w, addressOf(slot.s1!), gp, n, config.learningRate, config.momentum);
    case 'adagrad':
      return k.fn.adagrad(w, addressOf(slot.s1!), gp, n, config.learningRate, config.epsilon);
    case 'adam': {
      const { beta1: b1, beta2: b2 } = config;
      const c1 = 1 - Math.pow(b1, slot.step);
      const c2 = 1 - Math.pow(b2, slot.step);
      return k.fn.adam(w, addressOf(slot.s1!), addressOf(slot.s2!), gp, n, b1, 1 - b1, b2, 1 - b2, config.learningRate, c1, c2, config.epsilon);
    }
  }
}

function applyJs(slot: SlotState, g: Float32Array, gOff: number, config: OptimizerConfig): void {
  const n = slot.values.length;
  switch (config.name) {
    case 'sgd':
      return sgd(slot.values, g, gOff, n, config.learningRate);
    case 'momentum':
      return momentum(slot.values, slot.s1!, g, gOff, n, config.learningRate, config.momentum);
    case 'adagrad':
      return adagrad(slot.values, slot.s1!, g, gOff, n, config.learningRate, config.epsilon);
    case 'adam':
      return adam(slot.values, slot.s1!, slot.s2!, g, gOff, n, config.learningRate, config.beta1, config.beta2, config.epsilon, slot.step);
  }
}
