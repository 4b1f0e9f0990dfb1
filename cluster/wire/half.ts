/**
 * IEEE 754 half precision (float16) conversions, used by the fp16 gradient
 * codec on the wire (cluster/wire/gradient-codec.ts) and by the fp16 export
 * format. They live in cluster/ so that both cluster and serving code can use
 * one implementation (serving may import cluster, not the reverse).
 */

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/**
 * Half-precision bits of the float32 whose bit pattern is `x` (a uint32),
 * rounded to nearest even; overflow becomes ±Infinity. Split out of
 * {@link toHalf} so that a loop over a Float32Array can read the bits through
 * a Uint32Array view instead of a store and load per value.
 */
export function halfFromFloatBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const f = x & 0x7fffffff;
  // Fast path, bit for bit what the general code below gives, for magnitudes in [2^-14, 65536)
  // (normal halves, and the overflow to Inf of [65520, 65536)): rebias the exponent in place,
  // and round to nearest even without a branch by adding 0xfff plus the lowest kept bit
  // (a carry out of the mantissa moves the exponent up, as it must). The branchy form below
  // mispredicts on the rounding test about half the time, which cost 5× on gradients.
  if (f >= 0x38800000 && f < 0x47800000) return sign | ((f - 0x38000000 + 0xfff + ((f >>> 13) & 1)) >>> 13);
  return halfOutsideNormal(x);
}

/** halfFromFloatBits for the rest: zero and subnormal halves, overflow, Inf and NaN (a function of its own so the fast path stays small enough to inline). */
function halfOutsideNormal(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf, NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** IEEE half-precision bits of `v` (first rounded to float32), rounded to nearest even; overflow becomes ±Infinity. */
export function toHalf(v: number): number {
  F32[0] = v;
  return halfFromFloatBits(U32[0]!);
}

/** The float32 value of half-precision bits `h`. */
export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

let table: Float32Array | undefined;

/**
 * The float32 value of every half-precision bit pattern (65536 entries,
 * 256 KiB, built on first use): decoding a value is then one load instead of
 * a branchy computation.
 */
export function halfTable(): Float32Array {
  if (!table) {
    table = new Float32Array(0x10000);
    for (let h = 0; h < 0x10000; h++) table[h] = fromHalf(h);
  }
  return table;
}
