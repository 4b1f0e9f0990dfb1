/**
 * Seeded Zipf sampling for the sparse benchmark: ranks k in [1, n] with
 * P(k) ∝ k^(−s), drawn by rejection-inversion (W. Hörmann and G. Derflinger,
 * "Rejection-inversion to generate variates from monotone discrete
 * distributions", 1996; the method of Apache Commons' ZipfDistribution). O(1)
 * per draw and no table, so n = 10M costs no memory; s > 0, s = 1 included.
 */

/** splitmix32-style generator: uniform doubles in [0, 1) with 53 random bits, from a 32-bit seed. */
export function seededUniform(seed: number): () => number {
  let state = seed >>> 0;
  const next32 = (): number => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  return () => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992;
}

export class ZipfSampler {
  private readonly hX1: number;
  private readonly hN: number;
  private readonly squeeze: number;

  constructor(
    readonly n: number,
    readonly exponent: number,
    private readonly uniform: () => number,
  ) {
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`zipf: n must be a positive integer, got ${n}`);
    if (!(exponent > 0)) throw new Error(`zipf: exponent must be > 0, got ${exponent}`);
    this.hX1 = this.hIntegral(1.5) - 1;
    this.hN = this.hIntegral(n + 0.5);
    this.squeeze = 2 - this.hIntegralInverse(this.hIntegral(2.5) - this.h(2));
  }

  /** One rank in [1, n]; rank 1 is the most frequent. */
  sample(): number {
    for (;;) {
      const u = this.hN + this.uniform() * (this.hX1 - this.hN);
      const x = this.hIntegralInverse(u);
      let k = Math.floor(x + 0.5);
      if (k < 1) k = 1;
      else if (k > this.n) k = this.n;
      if (k - x <= this.squeeze || u >= this.hIntegral(k + 0.5) - this.h(k)) return k;
    }
  }

  /** h(x) = x^(−s). */
  private h(x: number): number {
    return Math.exp(-this.exponent * Math.log(x));
  }

  /** H(x) = ∫₁ˣ h = (x^(1−s) − 1) / (1 − s), or log x for s = 1. */
  private hIntegral(x: number): number {
    const logX = Math.log(x);
    return helper2((1 - this.exponent) * logX) * logX;
  }

  private hIntegralInverse(x: number): number {
    let t = x * (1 - this.exponent);
    if (t < -1) t = -1; // numerical safety: H's range ends there
    return Math.exp(helper1(t) * x);
  }
}

/** log(1 + x) / x, continuous at 0. */
function helper1(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.log1p(x) / x : 1 - x * (0.5 - x * (1 / 3 - 0.25 * x));
}

/** (e^x − 1) / x, continuous at 0. */
function helper2(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.expm1(x) / x : 1 + x * 0.5 * (1 + (x / 3) * (1 + 0.25 * x));
}
