import { type OptimizerConfig } from '../cluster/optimizer-config.js';

/**
 * The update rules, as tight loops over Float32Arrays that V8 compiles to
 * straight-line code: no allocation, no per-element calls. Arithmetic is done
 * in float64 and rounded once on store, so the result is the float32 rounding
 * of the exact update (what the unit tests check against a float64 reference).
 *
 * `w` (values) and the state arrays are one slot's; `g` is the gradient, read
 * from `g[gOff]` for `n` elements.
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
  for (let i = 0; i < n; i++) w[i] = w[i]! - lr * g[gOff + i]!;
}

export function momentum(w: Float32Array, v: Float32Array, g: Float32Array, gOff: number, n: number, lr: number, mu: number): void {
  for (let i = 0; i < n; i++) {
    const vi = mu * v[i]! + g[gOff + i]!;
    v[i] = vi;
    w[i] = w[i]! - lr * Math.fround(vi);
  }
}

export function adagrad(w: Float32Array, a: Float32Array, g: Float32Array, gOff: number, n: number, lr: number, eps: number): void {
  for (let i = 0; i < n; i++) {
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
  for (let i = 0; i < n; i++) {
    const gi = g[gOff + i]!;
    const mi = Math.fround(b1 * m[i]! + k1 * gi);
    const vi = Math.fround(b2 * v[i]! + k2 * gi * gi);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
  }
}

/** Allocates a slot's optimizer state, filled with each rule's starting values. */
export function newState(values: Float32Array, config: OptimizerConfig): SlotState {
  const n = values.length;
  switch (config.name) {
    case 'sgd':
      return { values, s1: null, s2: null, step: 0 };
    case 'momentum':
      return { values, s1: new Float32Array(n), s2: null, step: 0 };
    case 'adagrad':
      return { values, s1: new Float32Array(n).fill(config.initialAccumulator), s2: null, step: 0 };
    case 'adam':
      return { values, s1: new Float32Array(n), s2: new Float32Array(n), step: 0 };
  }
}

/** Applies gradient `g[gOff, gOff + n)` to one slot with the configured rule. */
export function applyGradient(slot: SlotState, g: Float32Array, gOff: number, config: OptimizerConfig): void {
  const n = slot.values.length;
  slot.step++;
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
