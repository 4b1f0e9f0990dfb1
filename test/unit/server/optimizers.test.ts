import { expect } from 'chai';
import { type OptimizerConfig, type OptimizerName, optimizerWithDefaults, learningRateAt } from '../../../cluster/optimizer-config.js';
import { type SlotState, applyGradient, applyGradientToSlots, newState } from '../../../server/optimizers.js';
import { SlotStore } from '../../../server/slot-store.js';
import { floatHeap } from '../../../server/float-heap.js';
import { rng } from '../../helpers/random.js';

function randomFloats(next: () => number, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * (2 * next() - 1);
  return out;
}

/**
 * The update rules written out from the JSDoc of cluster/optimizer-config.ts,
 * independently of server/optimizers.ts. Arithmetic is float64. Values and
 * optimizer state are float32 arrays by design (the data model stores float32),
 * so between steps the reference stores them rounded to float32 (`f32`); within
 * a step nothing is rounded. That is what "the float32 rounding of the exact
 * update" means over several steps: a pure-float64 trajectory drifts from any
 * float32 store by ~1 ulp per step, which no tight per-element bound survives
 * once values cancel towards 0.
 */
class Reference {
  w: number[];
  s1: number[];
  s2: number[];
  t = 0;

  constructor(
    w0: Float32Array,
    readonly c: OptimizerConfig,
  ) {
    this.w = Array.from(w0);
    const n = w0.length;
    // Starting state: zero velocity/moments; adagrad's accumulator starts at the configured value.
    this.s1 = new Array<number>(n).fill(c.name === 'adagrad' ? f32(c.initialAccumulator) : 0);
    this.s2 = new Array<number>(n).fill(0);
  }

  step(g: ArrayLike<number>, gOff: number): void {
    const c = this.c;
    const eta = c.learningRate;
    this.t++;
    for (let i = 0; i < this.w.length; i++) {
      const gi = g[gOff + i]!;
      let w = this.w[i]!;
      switch (c.name) {
        case 'sgd':
          // w ← w − η·g
          w = w - eta * gi;
          break;
        case 'momentum': {
          // v ← μ·v + g;  w ← w − η·v
          const v = f32(c.momentum * this.s1[i]! + gi);
          this.s1[i] = v;
          w = w - eta * v;
          break;
        }
        case 'adagrad': {
          // a ← a + g²;  w ← w − η·g / (√a + ε)
          const a = f32(this.s1[i]! + gi * gi);
          this.s1[i] = a;
          w = w - (eta * gi) / (Math.sqrt(a) + c.epsilon);
          break;
        }
        case 'adam': {
          // m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  w ← w − η·m̂ / (√v̂ + ε),
          // m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
          const m = f32(c.beta1 * this.s1[i]! + (1 - c.beta1) * gi);
          const v = f32(c.beta2 * this.s2[i]! + (1 - c.beta2) * gi * gi);
          this.s1[i] = m;
          this.s2[i] = v;
          const mHat = m / (1 - c.beta1 ** this.t);
          const vHat = v / (1 - c.beta2 ** this.t);
          w = w - (eta * mHat) / (Math.sqrt(vHat) + c.epsilon);
          break;
        }
      }
      this.w[i] = f32(w);
    }
  }
}

function f32(x: number): number {
  return Math.fround(x);
}

/**
 * Relative error with an absolute floor: |got − want| / max(|want|, FLOOR).
 * Near 0 a relative error is meaningless (one ulp of a value that cancelled to
 * 1e-9 is a huge fraction of it), so below FLOOR the bound becomes absolute:
 * 1e-6 · 1e-6 = 1e-12, still far below one float32 ulp at 1 (1.2e-7).
 */
const TOLERANCE = 1e-6;
const FLOOR = 1e-6;

function worstError(got: ArrayLike<number>, want: ArrayLike<number>): { index: number; error: number } {
  expect(got.length).to.equal(want.length);
  let index = -1;
  let error = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), FLOOR);
    // NaN fails the comparison below, so count it as the worst.
    if (!(e <= error)) {
      error = Number.isNaN(e) ? Number.POSITIVE_INFINITY : e;
      index = i;
    }
  }
  return { index, error };
}

function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  const { index, error } = worstError(got, want);
  expect(error, `${what}: element ${index} is ${got[index]}, the reference says ${want[index]}`).to.be.at.most(TOLERANCE);
}

const N = 4096;
const STEPS = 8;

interface Case {
  name: string;
  config: Partial<OptimizerConfig> & { name: OptimizerName };
  /** Gradient scale: adagrad and adam are scale-free, so vary it to exercise ε. */
  scale: number;
}

const CASES: Case[] = [
  { name: 'sgd, defaults', config: { name: 'sgd' }, scale: 1 },
  { name: 'sgd, η = 0.37', config: { name: 'sgd', learningRate: 0.37 }, scale: 3 },
  { name: 'momentum, defaults', config: { name: 'momentum' }, scale: 1 },
  { name: 'momentum, η = 0.02, μ = 0.5', config: { name: 'momentum', learningRate: 0.02, momentum: 0.5 }, scale: 2 },
  { name: 'momentum, μ = 0 (plain sgd)', config: { name: 'momentum', learningRate: 0.1, momentum: 0 }, scale: 1 },
  { name: 'adagrad, defaults', config: { name: 'adagrad' }, scale: 1 },
  { name: 'adagrad, η = 0.3, ε = 1e-3, a₀ = 0.5', config: { name: 'adagrad', learningRate: 0.3, epsilon: 1e-3, initialAccumulator: 0.5 }, scale: 0.01 },
  { name: 'adagrad, a₀ = 0', config: { name: 'adagrad', learningRate: 0.1, initialAccumulator: 0 }, scale: 1 },
  { name: 'adam, defaults', config: { name: 'adam' }, scale: 1 },
  { name: 'adam, η = 0.01, β₁ = 0.8, β₂ = 0.95, ε = 1e-4', config: { name: 'adam', learningRate: 0.01, beta1: 0.8, beta2: 0.95, epsilon: 1e-4 }, scale: 0.001 },
  { name: 'adam, β₁ = 0.5, β₂ = 0.6 (strong bias correction)', config: { name: 'adam', learningRate: 0.05, beta1: 0.5, beta2: 0.6 }, scale: 1 },
];

describe('server/optimizers', () => {
  for (const [k, c] of CASES.entries()) {
    it(`${c.name}: ${STEPS} consecutive updates match the float64 reference within 1e-6`, () => {
      const config = optimizerWithDefaults(c.config);
      const next = rng(1000 + k);
      const w0 = randomFloats(next, N, 1);
      const slot = newState(Float32Array.from(w0), config);
      const ref = new Reference(w0, config);
      // Read the gradient from the middle of a larger buffer, as a shard does for a multi-slot push.
      const gOff = 37;
      for (let step = 1; step <= STEPS; step++) {
        const g = new Float32Array(gOff + N + 11).fill(Number.NaN);
        g.set(randomFloats(next, N, c.scale), gOff);
        applyGradient(slot, g, gOff, config);
        ref.step(g, gOff);
        expect(slot.step, 'updates counted per slot').to.equal(step);
        expectClose(`${c.name}, values after step ${step}`, slot.values, ref.w);
        if (config.name !== 'sgd') expectClose(`${c.name}, first state after step ${step}`, slot.s1!, ref.s1);
        if (config.name === 'adam') expectClose(`${c.name}, second moment after step ${step}`, slot.s2!, ref.s2);
      }
      // The updates really moved the weights (a no-op kernel would fail above, but say it outright).
      expect(worstError(slot.values, w0).error).to.be.above(1e-4);
    });
  }

  it('newState allocates each rule’s state with its starting values, over the given values', () => {
    const values = new Float32Array([1, 2, 3]);
    const sgd = newState(values, optimizerWithDefaults({ name: 'sgd' }));
    expect(sgd.values).to.equal(values);
    expect([sgd.s1, sgd.s2, sgd.step]).to.deep.equal([null, null, 0]);
    const mom = newState(values, optimizerWithDefaults({ name: 'momentum' }));
    expect(Array.from(mom.s1!)).to.deep.equal([0, 0, 0]);
    expect(mom.s2).to.equal(null);
    const ada = newState(values, optimizerWithDefaults({ name: 'adagrad', initialAccumulator: 0.25 }));
    expect(Array.from(ada.s1!)).to.deep.equal([0.25, 0.25, 0.25]);
    const adam = newState(values, optimizerWithDefaults({ name: 'adam' }));
    expect(Array.from(adam.s1!)).to.deep.equal([0, 0, 0]);
    expect(Array.from(adam.s2!)).to.deep.equal([0, 0, 0]);
    expect(adam.step).to.equal(0);
  });

  it('adam with bias correction moves every weight by ≈ η on its first step, whatever the gradient scale', () => {
    // t = 1: m̂ = g and v̂ = g², so Δw = η·g/(|g| + ε) ≈ η·sign(g). Without the
    // correction the step would be (1−β₁)/√(1−β₂) ≈ 3.16·η with the defaults.
    for (const scale of [1e-3, 1, 1e3]) {
      const config = optimizerWithDefaults({ name: 'adam', learningRate: 0.01 });
      const next = rng(77);
      const w0 = randomFloats(next, 256, 1);
      const g = randomFloats(next, 256, scale);
      const slot = newState(Float32Array.from(w0), config);
      applyGradient(slot, g, 0, config);
      for (let i = 0; i < 256; i++) {
        const expected = (0.01 * g[i]!) / (Math.abs(g[i]!) + 1e-8);
        expect(w0[i]! - slot.values[i]!, `element ${i}, gradient ${g[i]}`).to.be.closeTo(expected, 1e-6);
      }
    }
  });

  it('adam counts t per slot: a fresh slot is corrected as t = 1 while an older one is at t = 4', () => {
    const config = optimizerWithDefaults({ name: 'adam', learningRate: 0.1, beta1: 0.5, beta2: 0.5 });
    const g = new Float32Array([0.5, -0.25]);
    const old = newState(new Float32Array([0, 0]), config);
    for (let t = 0; t < 3; t++) applyGradient(old, g, 0, config);
    const fresh = newState(new Float32Array([0, 0]), config);
    const ref = new Reference(new Float32Array([0, 0]), config);
    applyGradient(fresh, g, 0, config);
    ref.step(g, 0);
    expectClose('fresh slot at t = 1', fresh.values, ref.w);
    const refOld = new Reference(new Float32Array([0, 0]), config);
    for (let t = 0; t < 3; t++) refOld.step(g, 0);
    applyGradient(old, g, 0, config);
    refOld.step(g, 0);
    expect(old.step).to.equal(4);
    expectClose('slot at t = 4', old.values, refOld.w);
  });

  it('sgd with η = 1 subtracts the gradient exactly (the float32 rounding of w − g)', () => {
    const config = optimizerWithDefaults({ name: 'sgd', learningRate: 1 });
    const w = new Float32Array([1, 0.5, -3, 1e-8]);
    const slot: SlotState = newState(Float32Array.from(w), config);
    const g = new Float32Array([0.25, 0.5, -1, 1]);
    applyGradient(slot, g, 0, config);
    expect(Array.from(slot.values)).to.deep.equal([0.75, 0, -2, Math.fround(1e-8 - 1)]);
  });

  it('a schedule multiplies η from the update after each drop on, compounding; a bad drop is refused', () => {
    const config = optimizerWithDefaults({ name: 'sgd', learningRate: 1, schedule: [{ afterSteps: 2, factor: 0.5 }, { afterSteps: 3, factor: 0.5 }] });
    expect([1, 2, 3, 4, 5].map((t) => learningRateAt(config, t))).to.deep.equal([1, 1, 0.5, 0.25, 0.25]);
    const slot = newState(new Float32Array([0]), config);
    for (let t = 0; t < 4; t++) applyGradient(slot, new Float32Array([1]), 0, config);
    expect(slot.values[0]).to.equal(-(1 + 1 + 0.5 + 0.25));
    expect(() => optimizerWithDefaults({ name: 'adam', schedule: [{ afterSteps: -1, factor: 0.1 }] })).to.throw(/non-negative integer/);
    expect(() => optimizerWithDefaults({ name: 'adam', schedule: [{ afterSteps: 5, factor: 0 }] })).to.throw(/positive number/);
  });

  describe('applyGradientToSlots: runs of slots side by side in memory, by one call', () => {
    const SLOTS = 64;
    const ELEMENTS = 64 * 37 + 5;
    /** A store whose slots are created in three separate runs plus two alone, so blocks differ. */
    function store(config: OptimizerConfig): SlotStore {
      const st = new SlotStore({ name: 'u', slots: SLOTS, model: { name: 'm', seed: 3, tensors: [{ name: 'w', shape: [ELEMENTS], init: { kind: 'uniform', low: -1, high: 1 } }] }, optimizer: config, consistency: 'async' });
      st.ensureRange(0, 20);
      st.ensure(20);
      st.ensureRange(21, 40);
      st.ensure(41);
      st.ensureRange(40, SLOTS);
      return st;
    }
    const bytes = (st: SlotStore) => Buffer.concat(st.held().flatMap(([, x]) => [x.values, x.s1, x.s2].filter((a) => a !== null).map((a) => Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)))));

    for (const c of [...CASES, { name: 'adam with a schedule', config: { name: 'adam' as const, schedule: [{ afterSteps: 1, factor: 0.5 }] }, scale: 1 }]) {
      it(`${c.name}: the bits and update counts of applyGradient slot by slot, across blocks and differing counts`, () => {
        const config = optimizerWithDefaults(c.config);
        const [whole, bySlot] = [store(config), store(config)];
        const next = rng(11);
        // Some slots a step ahead (a push they alone applied), which splits the runs.
        for (const st of [whole, bySlot]) for (const s of [5, 6, 33]) applyGradient(st.get(s)!, new Float32Array(st.get(s)!.values.length).fill(0.25), 0, config);
        for (let step = 0; step < 3; step++) {
          // In the float heap where there is one, as a shard's gradients are: the SIMD kernels then run.
          const g = floatHeap()?.alloc(ELEMENTS, whole) ?? new Float32Array(ELEMENTS);
          g.set(randomFloats(next, ELEMENTS, c.scale));
          // Slots 3…60 in push order, the gradient laid out as a push of them.
          const slots = [...Array(58).keys()].map((k) => k + 3);
          const off = whole.get(3)!.start;
          applyGradientToSlots(slots.map((s) => whole.get(s)!), g, off, config);
          for (const s of slots) applyGradient(bySlot.get(s)!, g, bySlot.get(s)!.start, config);
          expect(bytes(whole).equals(bytes(bySlot)), `step ${step}: bit-identical`).to.equal(true);
          expect(whole.held().map(([, x]) => x.step)).to.deep.equal(bySlot.held().map(([, x]) => x.step));
        }
        expect(whole.get(0)!.block, 'a run shares one block').to.equal(whole.get(19)!.block);
        expect(whole.get(20)!.block, 'a slot created alone has its own').to.not.equal(whole.get(19)!.block);
      });
    }
  });
});
