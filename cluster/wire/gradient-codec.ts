import { InvalidArgumentError } from '../errors.js';
import { firstNonFinite } from '../finite.js';
import { halfFromFloatBits, halfTable } from './half.js';
import { copyBytes } from './dense-values.js';

/**
 * Gradient compression on the wire (`--compression none|fp16|int8|topk:R`),
 * as pure functions over typed arrays. A push is encoded slot by slot (see
 * cluster/slots.ts): the bytes of a slot depend only on that slot's values, so
 * a retry that routes the slots differently (after a move) can cut the same
 * encoding at slot boundaries, and a shard can check the size of what it
 * receives from the slot lengths alone ({@link encodedSlotBytes}).
 *
 * All multi-byte fields are little-endian. These functions run on every push,
 * over up to tens of millions of values: no per-element allocation, bit
 * patterns read through Uint32Array views, float16 written and read as whole
 * 16-bit words, and top-k picks its values by a radix selection (linear time)
 * instead of a sort. Error feedback encodes slot by slot, each slot's g' still
 * in cache, and works out the residual during the encoding instead of decoding
 * the result again (see {@link ErrorFeedback.encode}).
 */

/** A codec for pushed gradients. */
export type Compression = { kind: 'none' } | { kind: 'fp16' } | { kind: 'int8' } | { kind: 'topk'; ratio: number };

const FORMS = 'none, fp16, int8 or topk:R with 0 < R ≤ 1 (e.g. topk:0.01)';
/** A plain decimal (exponent allowed, as String(number) writes small ratios: 1e-7); no hex, no sign, no Infinity. */
const RATIO = /^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/;

/**
 * The codec named by `text`: 'none' | 'fp16' | 'int8' | 'topk:R' (0 < R ≤ 1, e.g. topk:0.01).
 * Case and surrounding blanks are ignored.
 * @throws InvalidArgumentError with a message listing the forms.
 */
export function parseCompression(text: string): Compression {
  const t = text.trim().toLowerCase();
  if (t === 'none' || t === 'fp16' || t === 'int8') return { kind: t };
  if (t.startsWith('topk:')) {
    const r = t.slice(5);
    const ratio = RATIO.test(r) ? Number(r) : NaN;
    if (ratio > 0 && ratio <= 1) return { kind: 'topk', ratio };
    throw new InvalidArgumentError(`compression "${text}" needs a top-k ratio R with 0 < R ≤ 1; use ${FORMS}`);
  }
  throw new InvalidArgumentError(`unknown compression "${text}"; use ${FORMS}`);
}

/** The text {@link parseCompression} reads back as `c`: 'none', 'fp16', 'int8', 'topk:0.01'. */
export function formatCompression(c: Compression): string {
  return c.kind === 'topk' ? `topk:${c.ratio}` : c.kind;
}

/** Elements per int8 block, each with its own float32 scale. */
export const INT8_BLOCK = 256;

/** Largest magnitude fp16 holds (65504). */
export const FP16_MAX: number = 65504;

/** Bit pattern of FP16_MAX as float32: a value fits fp16 iff its magnitude bits are ≤ this (NaN and ±Inf are above). */
const FP16_MAX_BITS = new Uint32Array(Float32Array.of(FP16_MAX).buffer)[0]!;
/** Magnitude bits at or above this are ±Inf or NaN. */
const NON_FINITE_BITS = 0x7f800000;

/** Refuses a hand-built codec that parseCompression would not give (a ratio outside (0, 1], an unknown kind). */
function checkCompression(c: Compression): void {
  switch (c.kind) {
    case 'none':
    case 'fp16':
    case 'int8':
      return;
    case 'topk':
      if (c.ratio > 0 && c.ratio <= 1) return;
      throw new InvalidArgumentError(`top-k ratio ${c.ratio} is outside (0, 1]; use ${FORMS}`);
    default:
      throw new InvalidArgumentError(`unknown compression ${JSON.stringify(c)}; use ${FORMS}`);
  }
}

function checkCount(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${n}`);
}

/** Values top-k sends out of `n`: min(n, max(1, ⌈ratio·n⌉)), 0 for an empty slot. */
function topkCount(ratio: number, n: number): number {
  return n === 0 ? 0 : Math.min(n, Math.max(1, Math.ceil(ratio * n)));
}

function int8Bytes(n: number): number {
  return n + 4 * Math.ceil(n / INT8_BLOCK);
}

/** Bytes encodeSlot would write for n values; for topk the exact k-based size (4 + 8k). */
export function encodedSlotBytes(c: Compression, n: number): number {
  checkCompression(c);
  checkCount(n, 'a slot length');
  return slotBytes(c, n);
}

function slotBytes(c: Compression, n: number): number {
  switch (c.kind) {
    case 'none':
      return 4 * n;
    case 'fp16':
      return 2 * n;
    case 'int8':
      return int8Bytes(n);
    case 'topk':
      return 4 + 8 * topkCount(c.ratio, n);
  }
}

// ---------------------------------------------------------------- encoding

function nonFiniteError(values: Float32Array, i: number): InvalidArgumentError {
  return new InvalidArgumentError(`gradient element ${i} is ${values[i]}; gradients must be finite (a diverging loss or a bad learning rate gives NaN/Inf)`);
}

function fp16Error(values: Float32Array, i: number): InvalidArgumentError {
  if (!Number.isFinite(values[i]!)) return nonFiniteError(values, i);
  return new InvalidArgumentError(
    `gradient element ${i} is ${values[i]}, beyond float16's largest magnitude ${FP16_MAX}; push this job with --compression int8 or none`,
  );
}

/** Where one slot is encoded: the whole output and views of it, made once per call rather than per slot. */
interface Sink {
  bytes: Uint8Array;
  i8: Int8Array;
  view: DataView;
  /** 16-bit words of `bytes` (little-endian, as the host is), or null where `bytes` starts at an odd address. */
  u16: Uint16Array | null;
}

function sink(bytes: Uint8Array): Sink {
  return {
    bytes,
    i8: new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    u16: bytes.byteOffset & 1 ? null : new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1),
  };
}

/**
 * Encodes `values[start, start+n)` (bit patterns in `bits`, a view of the same memory) at `pos`; returns the end.
 * With `keep` (error feedback), also overwrites each value with what the encoding drops of it,
 * v − decode(encode(v)) rounded to float32, as the decoder would give it: each value is read before
 * it is overwritten, and a value that is refused is left as it was.
 */
function encodeAt(c: Compression, values: Float32Array, bits: Uint32Array, start: number, n: number, out: Sink, pos: number, keep: boolean): number {
  switch (c.kind) {
    case 'none':
      return encodeNone(values, start, n, out, pos, keep);
    case 'fp16':
      return encodeFp16(values, bits, start, n, out, pos, keep);
    case 'int8':
      return encodeInt8(values, bits, start, n, out, pos, keep);
    case 'topk':
      return encodeTopk(values, bits, start, n, c.ratio, out, pos, keep);
  }
}

function encodeNone(values: Float32Array, start: number, n: number, out: Sink, pos: number, keep: boolean): number {
  const bad = firstNonFinite(values, start, start + n);
  if (bad >= 0) throw nonFiniteError(values, bad);
  // The host is little-endian (wire.ts refuses to load otherwise): the memory is the wire form.
  copyBytes(new Uint8Array(values.buffer, values.byteOffset + 4 * start, 4 * n), out.bytes.subarray(pos, pos + 4 * n));
  if (keep) values.fill(0, start, start + n); // v − v: +0 for every finite v
  return pos + 4 * n;
}

function encodeFp16(values: Float32Array, bits: Uint32Array, start: number, n: number, out: Sink, pos: number, keep: boolean): number {
  const end = start + n;
  const u16 = out.u16;
  if (u16 === null || pos & 1) {
    // Unaligned output (never from this module's own buffers, which start at 0 and hold 2n bytes a slot): byte by byte.
    const bytes = out.bytes;
    const table = halfTable();
    for (let i = start; i < end; i++) {
      const x = bits[i]!;
      if ((x & 0x7fffffff) > FP16_MAX_BITS) throw fp16Error(values, i);
      const h = halfFromFloatBits(x);
      bytes[pos] = h & 0xff;
      bytes[pos + 1] = h >>> 8;
      pos += 2;
      if (keep) values[i] = values[i]! - table[h]!;
    }
    return pos;
  }
  let w = pos >>> 1;
  if (keep) {
    const table = halfTable();
    for (let i = start; i < end; i++) {
      const x = bits[i]!;
      if ((x & 0x7fffffff) > FP16_MAX_BITS) throw fp16Error(values, i);
      const h = halfFromFloatBits(x);
      u16[w++] = h;
      values[i] = values[i]! - table[h]!;
    }
  } else {
    for (let i = start; i < end; i++) {
      const x = bits[i]!;
      // One compare refuses NaN, ±Inf and overflow alike: their magnitude bits are all above FP16_MAX's.
      if ((x & 0x7fffffff) > FP16_MAX_BITS) throw fp16Error(values, i);
      u16[w++] = halfFromFloatBits(x);
    }
  }
  return w << 1;
}

const SCALE_F32 = new Float32Array(1);
const SCALE_U32 = new Uint32Array(SCALE_F32.buffer);

/**
 * The int8 scale of a block whose largest magnitude has bits `maxBits`:
 * max/127 in float32, 1 for an all-zero block (so it decodes to zeros). Where
 * max/127 rounds down far enough that max/scale would round to 128 (only when
 * max/127 is a float32 subnormal, i.e. max < 2^-119), the scale is nudged up a
 * step at a time, so every value still fits −127…127 within half a step.
 */
function int8Scale(maxBits: number): number {
  if (maxBits === 0) return 1;
  SCALE_U32[0] = maxBits;
  const max = SCALE_F32[0]!;
  SCALE_F32[0] = max / 127;
  while (!(max / SCALE_F32[0]! < 127.5)) SCALE_U32[0]!++;
  return SCALE_F32[0]!;
}

/**
 * Set by encodeInt8 under `keep` when a value decodes to ±Inf (127 · a scale near float32's largest
 * overflows): the decoder refuses such a block, so error feedback decodes the encoding to throw its error.
 */
let int8DecodesNonFinite = false;

function encodeInt8(values: Float32Array, bits: Uint32Array, start: number, n: number, out: Sink, pos: number, keep: boolean): number {
  const { i8, view } = out;
  const end = start + n;
  for (let b = start; b < end; b += INT8_BLOCK) {
    const e = Math.min(end, b + INT8_BLOCK);
    let maxBits = 0; // the largest |v| compared as integers: magnitude bits of floats order as the floats do
    for (let i = b; i < e; i++) {
      const m = bits[i]! & 0x7fffffff;
      if (m > maxBits) maxBits = m;
    }
    if (maxBits >= NON_FINITE_BITS) throw nonFiniteError(values, firstNonFinite(values, b, e));
    const scale = int8Scale(maxBits);
    view.setFloat32(pos, scale, true);
    pos += 4;
    // Division, not a multiply by 1/scale: round(v/scale) is what the layout promises, to the last tie.
    // Math.round as floor(x + 0.5), which V8 compiles to a few instructions (Math.round itself ran
    // 8× slower); the two differ only where x + 0.5 rounds up to 1, at x = 0.5 − 2^-54.
    if (keep) {
      let acc = 0; // as in decodeInt8: x·0 is NaN only for ±Inf
      for (let i = b; i < e; i++) {
        const v = values[i]!;
        const x = v / scale;
        const r = Math.floor(x + 0.5) - (x === 0.49999999999999994 ? 1 : 0);
        const q = r > 127 ? 127 : r < -127 ? -127 : r;
        i8[pos++] = q;
        const d = Math.fround(q * scale); // as decodeInt8 gives it: rounded to float32 before the subtraction
        acc += d * 0;
        values[i] = v - d;
      }
      if (acc !== 0) int8DecodesNonFinite = true;
    } else {
      for (let i = b; i < e; i++) {
        const x = values[i]! / scale;
        const r = Math.floor(x + 0.5) - (x === 0.49999999999999994 ? 1 : 0);
        i8[pos++] = r > 127 ? 127 : r < -127 ? -127 : r;
      }
    }
  }
  return pos;
}

/** Histograms of the radix selection (top 11 magnitude bits, then 10 and 10), cleared after each use. */
const HIST_HI = new Uint32Array(1 << 11);
const HIST_LO = new Uint32Array(1 << 10);
/** Magnitudes in the bucket that holds the threshold; grows, is kept for the next slot. */
let candidates = new Uint32Array(1024);
/** Set by selectThreshold: how many magnitudes equal to the threshold are taken (the lowest-indexed ones). */
let tiesTaken = 0;

/**
 * The k-th largest magnitude (as float32 bits without sign) of `bits[start,
 * start+n)`, 1 ≤ k ≤ n, by a three-level radix selection: a histogram of the
 * top 11 magnitude bits finds the bucket holding it, whose members are
 * collected and narrowed by the next 10 bits, then the last 10. Linear in n
 * whatever the data (all equal, all zero), with two passes over the slot.
 * Sets {@link tiesTaken}. Returns −1 if a value is NaN or ±Inf.
 */
function selectThreshold(bits: Uint32Array, start: number, n: number, k: number): number {
  const end = start + n;
  let top = 0;
  for (let i = start; i < end; i++) {
    const b = (bits[i]! & 0x7fffffff) >>> 20;
    HIST_HI[b]!++;
    if (b > top) top = b;
  }
  if (top >= NON_FINITE_BITS >>> 20) {
    HIST_HI.fill(0, 0, top + 1);
    return -1;
  }
  // Walk down from the largest bucket (close to the threshold for small k) rather than from 2047.
  let need = k;
  let b1 = top;
  while (HIST_HI[b1]! < need) need -= HIST_HI[b1--]!;
  const m = HIST_HI[b1]!;
  HIST_HI.fill(0, 0, top + 1);

  if (candidates.length < m) candidates = new Uint32Array(Math.max(m, 2 * candidates.length));
  const cand = candidates;
  let c = 0;
  for (let i = start; i < end; i++) {
    const key = bits[i]! & 0x7fffffff;
    if (key >>> 20 === b1) cand[c++] = key;
  }

  let top2 = 0;
  for (let i = 0; i < m; i++) {
    const b = (cand[i]! >>> 10) & 0x3ff;
    HIST_LO[b]!++;
    if (b > top2) top2 = b;
  }
  let b2 = top2;
  while (HIST_LO[b2]! < need) need -= HIST_LO[b2--]!;
  HIST_LO.fill(0, 0, top2 + 1);

  const prefix = (b1 << 10) | b2;
  let top3 = 0;
  for (let i = 0; i < m; i++) {
    const key = cand[i]!;
    if (key >>> 10 === prefix) {
      const b = key & 0x3ff;
      HIST_LO[b]!++;
      if (b > top3) top3 = b;
    }
  }
  let b3 = top3;
  while (HIST_LO[b3]! < need) need -= HIST_LO[b3--]!;
  HIST_LO.fill(0, 0, top3 + 1);

  tiesTaken = need;
  return (prefix << 10) | b3;
}

function encodeTopk(values: Float32Array, bits: Uint32Array, start: number, n: number, ratio: number, out: Sink, pos: number, keep: boolean): number {
  const { view } = out;
  const k = topkCount(ratio, n);
  view.setUint32(pos, k, true);
  if (k === 0) return pos + 4;
  const threshold = selectThreshold(bits, start, n, k);
  if (threshold < 0) throw nonFiniteError(values, firstNonFinite(values, start, start + n));
  // Everything above the threshold, and of the values equal to it the lowest-indexed ones,
  // in index order: the indices come out ascending with no sort.
  let ties = tiesTaken;
  let at = pos + 4;
  const valuesAt = at + 4 * k;
  for (let i = 0; i < n; i++) {
    const x = bits[start + i]!;
    const key = x & 0x7fffffff;
    if (key > threshold || (key === threshold && ties > 0)) {
      if (key === threshold) ties--;
      view.setUint32(at, i, true);
      view.setUint32(valuesAt + (at - pos - 4), x, true); // the float's bits: sent exactly
      at += 4;
      if (keep) values[start + i] = 0; // v − v (+0); what is not sent stays whole: v − 0 = v
    }
  }
  return valuesAt + 4 * k;
}

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

/**
 * Encodes one slot's values. Layouts, little-endian:
 *  none: n float32;  fp16: n float16;  int8: per block of up to INT8_BLOCK values: float32 scale (max|v|/127, 1 for an all-zero block) then the int8 values (round(v/scale), −127…127);
 *  topk: uint32 k, then k uint32 indices (ascending, within the slot) then k float32 values; k = min(n, max(1, ceil(ratio·n))) (0 for n = 0), the k values largest in magnitude (ties: lower index).
 * @throws InvalidArgumentError for a non-finite value, or (fp16) a value whose magnitude exceeds FP16_MAX, naming it and saying to use int8 or none.
 */
export function encodeSlot(c: Compression, values: Float32Array): Uint8Array {
  checkCompression(c);
  const out = new Uint8Array(slotBytes(c, values.length));
  encodeAt(c, values, bitsOf(values), 0, values.length, sink(out), 0, false);
  return out;
}

function sumLengths(lengths: readonly number[]): number {
  let total = 0;
  for (const n of lengths) {
    checkCount(n, 'a slot length');
    total += n;
  }
  return total;
}

/**
 * encodeSlot for each run of `lengths` consecutive values of `values` (the slots of a range), concatenated.
 * Errors name the element by its index in `values`.
 * @throws InvalidArgumentError as encodeSlot, or when the lengths do not add up to `values.length`.
 */
export function encodeSlots(c: Compression, values: Float32Array, lengths: readonly number[]): Uint8Array {
  checkCompression(c);
  const total = sumLengths(lengths);
  if (total !== values.length) throw new InvalidArgumentError(`slot lengths add up to ${total} values but ${values.length} were given`);
  let size = 0;
  for (const n of lengths) size += slotBytes(c, n);
  const out = sink(new Uint8Array(size));
  const bits = bitsOf(values);
  let pos = 0;
  let start = 0;
  for (const n of lengths) {
    pos = encodeAt(c, values, bits, start, n, out, pos, false);
    start += n;
  }
  return out.bytes;
}

// ---------------------------------------------------------------- decoding

function truncated(c: Compression, n: number, need: number, pos: number, bytes: Uint8Array): InvalidArgumentError {
  return new InvalidArgumentError(
    `truncated ${formatCompression(c)} gradient: a slot of ${n} values needs ${need} bytes at offset ${pos}, only ${Math.max(0, bytes.byteLength - pos)} remain`,
  );
}

function badDecoded(c: Compression, i: number, v: number, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`${formatCompression(c)} gradient: value ${i} of a slot decodes to ${v}${why}; gradients must be finite`);
}

/** Decodes a slot of n values at `pos` into `out[start, start+n)`; returns the end. */
function decodeAt(c: Compression, src: Sink, pos: number, out: Float32Array, start: number, n: number): number {
  switch (c.kind) {
    case 'none':
      return decodeNone(c, src, pos, out, start, n);
    case 'fp16':
      return decodeFp16(c, src, pos, out, start, n);
    case 'int8':
      return decodeInt8(c, src, pos, out, start, n);
    case 'topk':
      return decodeTopk(c, src, pos, out, start, n);
  }
}

function decodeNone(c: Compression, src: Sink, pos: number, out: Float32Array, start: number, n: number): number {
  const need = 4 * n;
  if (pos + need > src.bytes.byteLength) throw truncated(c, n, need, pos, src.bytes);
  // Received bytes are rarely 4-byte aligned: a byte copy into the float memory, at memcpy speed.
  copyBytes(src.bytes.subarray(pos, pos + need), new Uint8Array(out.buffer, out.byteOffset + 4 * start, need));
  const bad = firstNonFinite(out, start, start + n);
  if (bad >= 0) throw badDecoded(c, bad - start, out[bad]!, '');
  return pos + need;
}

function decodeFp16(c: Compression, src: Sink, pos: number, out: Float32Array, start: number, n: number): number {
  const need = 2 * n;
  const bytes = src.bytes;
  if (pos + need > bytes.byteLength) throw truncated(c, n, need, pos, bytes);
  const table = halfTable();
  const u16 = src.u16;
  let acc = 0; // x·0 is 0 for finite x, NaN for NaN/±Inf: one add per value instead of a branch
  if (u16 !== null && (pos & 1) === 0) {
    const w = pos >>> 1;
    for (let i = 0; i < n; i++) {
      const x = table[u16[w + i]!]!;
      out[start + i] = x;
      acc += x * 0;
    }
    pos += need;
  } else {
    for (let i = 0; i < n; i++) {
      const x = table[bytes[pos]! | (bytes[pos + 1]! << 8)]!;
      out[start + i] = x;
      acc += x * 0;
      pos += 2;
    }
  }
  if (acc !== 0) {
    const bad = firstNonFinite(out, start, start + n);
    throw badDecoded(c, bad - start, out[bad]!, ' (float16 ±Inf or NaN)');
  }
  return pos;
}

function decodeInt8(c: Compression, src: Sink, pos: number, out: Float32Array, start: number, n: number): number {
  const need = int8Bytes(n);
  const { bytes, i8, view } = src;
  if (pos + need > bytes.byteLength) throw truncated(c, n, need, pos, bytes);
  for (let b = 0; b < n; b += INT8_BLOCK) {
    const e = Math.min(n, b + INT8_BLOCK);
    const scale = view.getFloat32(pos, true);
    if (!Number.isFinite(scale)) {
      throw new InvalidArgumentError(`int8 gradient: the block of values ${b}…${e - 1} of a slot has scale ${scale} (at byte ${pos}); gradients must be finite`);
    }
    pos += 4;
    let acc = 0;
    for (let i = b; i < e; i++) {
      // Rounded to float32 before the check: 127 · a huge scale can overflow float32 but not float64.
      const x = Math.fround(i8[pos++]! * scale);
      out[start + i] = x;
      acc += x * 0;
    }
    if (acc !== 0) {
      const bad = firstNonFinite(out, start + b, start + e);
      throw badDecoded(c, bad - start, out[bad]!, ` (value × scale ${scale} overflows float32)`);
    }
  }
  return pos;
}

function decodeTopk(c: Compression, src: Sink, pos: number, out: Float32Array, start: number, n: number): number {
  const { bytes, view } = src;
  if (pos + 4 > bytes.byteLength) throw truncated(c, n, 4, pos, bytes);
  const k = view.getUint32(pos, true);
  if (k > n) throw new InvalidArgumentError(`topk gradient: a slot of ${n} values says it carries k = ${k} of them (at byte ${pos}); k must be at most ${n}`);
  const need = 4 + 8 * k;
  if (pos + need > bytes.byteLength) throw truncated(c, n, need, pos, bytes);
  out.fill(0, start, start + n);
  const indicesAt = pos + 4;
  const valuesAt = indicesAt + 4 * k;
  let prev = -1;
  for (let j = 0; j < k; j++) {
    const idx = view.getUint32(indicesAt + 4 * j, true);
    if (idx >= n) throw new InvalidArgumentError(`topk gradient: index ${idx} (entry ${j}) is out of range for a slot of ${n} values`);
    if (idx <= prev) throw new InvalidArgumentError(`topk gradient: indices must be ascending, but entry ${j} is ${idx} after ${prev}`);
    const v = view.getFloat32(valuesAt + 4 * j, true);
    if (!Number.isFinite(v)) throw badDecoded(c, idx, v, ` (entry ${j})`);
    out[start + idx] = v;
    prev = idx;
  }
  return pos + need;
}

function checkOffset(bytes: Uint8Array, offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > bytes.byteLength) {
    throw new InvalidArgumentError(`offset ${offset} is outside the ${bytes.byteLength} encoded bytes`);
  }
}

/**
 * Decodes one slot of `n = out.length` values from `bytes` at `offset` into `out` (topk: zeros where nothing was sent) and returns the bytes consumed.
 * On an error `out` may be partly written.
 * @throws InvalidArgumentError for truncated input, a topk k > n, an index ≥ n or not ascending, or a decoded value that is not finite (a NaN/Inf smuggled in a scale or value).
 */
export function decodeSlot(c: Compression, bytes: Uint8Array, offset: number, out: Float32Array): number {
  checkCompression(c);
  checkOffset(bytes, offset);
  return decodeAt(c, sink(bytes), offset, out, 0, out.length) - offset;
}

/**
 * decodeSlot for each slot length in turn; returns bytes consumed; the slots' values go to consecutive places of `out` starting at 0
 * (`out` may be longer than the slots: the rest is left alone). On an error `out` may be partly written.
 * @throws InvalidArgumentError as decodeSlot, or when the slots hold more values than `out`.
 */
export function decodeSlots(c: Compression, bytes: Uint8Array, offset: number, lengths: readonly number[], out: Float32Array): number {
  checkCompression(c);
  checkOffset(bytes, offset);
  const total = sumLengths(lengths);
  if (total > out.length) throw new InvalidArgumentError(`slots of ${total} values do not fit the ${out.length} places given`);
  const src = sink(bytes);
  let pos = offset;
  let start = 0;
  for (const n of lengths) {
    pos = decodeAt(c, src, pos, out, start, n);
    start += n;
  }
  return pos - offset;
}

// ---------------------------------------------------------------- error feedback

/**
 * Error feedback for lossy codecs (the worker keeps what it did not send and adds it to the next gradient):
 * holds a residual per element of the flat vector. Without it top-k would drop
 * most of every gradient for good; with it every part of the gradient is sent
 * eventually, and Σ sent + residual = Σ gradients at all times.
 */
export class ErrorFeedback {
  private residual: Float32Array;
  /**
   * A buffer for the next push's g' (and then its residual), kept from a committed push: a push of the
   * whole vector hands back the old residual (its own g' becomes the residual), any other push its g'
   * buffer once every slot of it committed. Pushes in flight together each take their own.
   */
  private spare: Float32Array | null = null;

  /** @param elements length of the flat vector (D). */
  constructor(readonly elements: number) {
    checkCount(elements, 'the element count');
    this.residual = new Float32Array(elements);
  }

  /**
   * For the slots given (each as {start, length} in the flat vector, e.g. from cluster/slots.ts), computes what will be sent:
   * g' = gradient + residual (for those elements), c = decode(encode(g')) per slot, and gives `bytes`, the slots'
   * encodings one after the other (slot j's at [offsets[j], offsets[j + 1])); `sent` is c, laid out as `gradient`
   * (`gradient[i]` is element `start_0 + i` of the concatenation of the slots in order). A push sends these very
   * bytes (on every attempt), so the shard applies exactly `sent`. The residual is untouched until `commit(which)`
   * sets residual = g' − c for the slots at positions `which` of `slots` (default all), once their shard
   * acknowledged them, so a retried push does not count twice; each slot commits at most once. Slots must not
   * overlap; `sent` may be `gradient` itself. Without a `sent` buffer, `sent` is decoded from `bytes` when first
   * read (a push that never reads it decodes nothing).
   * @throws InvalidArgumentError for a slot outside the vector, lengths that do not match, or what encodeSlots refuses.
   */
  encode(c: Compression, slots: readonly { start: number; length: number }[], gradient: Float32Array, sent?: Float32Array): { bytes: Uint8Array; offsets: number[]; sent: Float32Array; commit: (which?: readonly number[]) => void } {
    checkCompression(c);
    const lengths: number[] = [];
    const starts: number[] = []; // copied: the caller may reuse its slot list before committing
    let total = 0;
    let size = 0;
    let inOrder = true; // the slots tile [0, total) in order: g' is laid out as the residual is
    for (const s of slots) {
      checkCount(s.start, 'a slot start');
      checkCount(s.length, 'a slot length');
      if (s.start + s.length > this.elements) {
        throw new InvalidArgumentError(`slot [${s.start}, ${s.start + s.length}) is outside the ${this.elements} elements of the vector`);
      }
      if (s.start !== total) inOrder = false;
      lengths.push(s.length);
      starts.push(s.start);
      total += s.length;
      size += slotBytes(c, s.length); // every codec's size follows from n alone
    }
    const sentLength = sent?.length ?? gradient.length;
    if (gradient.length !== total || sentLength !== total) {
      throw new InvalidArgumentError(`the slots hold ${total} values, but the gradient has ${gradient.length} and the sent buffer ${sentLength}`);
    }
    // g' in a buffer of this push's own: it outlives this call (commit needs it) and is not shared
    // with a push in flight beside this one. Slot by slot, g' is summed and at once encoded while still
    // in cache, the encoder overwriting it with the residual to keep (g' − c, exactly as decoding c and
    // subtracting would give it).
    const base = this.spare !== null && this.spare.length >= total ? this.spare : new Float32Array(total);
    if (base === this.spare) this.spare = null;
    const next = base.length === total ? base : base.subarray(0, total);
    const bits = bitsOf(next);
    const residual = this.residual;
    const out = sink(new Uint8Array(size));
    const offsets = [0];
    const starts0: number[] = [];
    int8DecodesNonFinite = false;
    let at = 0;
    let pos = 0;
    for (let j = 0; j < starts.length; j++) {
      const start = starts[j]!;
      const n = lengths[j]!;
      for (let i = 0; i < n; i++) next[at + i] = gradient[at + i]! + residual[start + i]!;
      pos = encodeAt(c, next, bits, at, n, out, pos, true);
      offsets.push(pos);
      starts0.push(at);
      at += n;
    }
    const bytes = out.bytes;
    if (int8DecodesNonFinite) {
      int8DecodesNonFinite = false;
      decodeSlots(c, bytes, 0, lengths, new Float32Array(total)); // throws the decoder's own error
    }
    if (sent) decodeSlots(c, bytes, 0, lengths, sent);
    let decoded = sent;
    const whole = inOrder && total === this.elements && next === base;
    const committed = new Uint8Array(lengths.length);
    let open = lengths.length;
    // Slot by slot, as each shard acknowledges its part: a push that reached one shard and not another
    // keeps the residual of the slots that were not applied, and only of those.
    const commit = (which?: readonly number[]) => {
      const js = which ?? lengths.map((_, j) => j);
      const fresh: number[] = [];
      for (const j of js) {
        if (committed[j]) continue;
        committed[j] = 1;
        fresh.push(j);
      }
      if (fresh.length === 0) return;
      open -= fresh.length;
      if (whole && fresh.length === lengths.length) {
        // The whole vector at once: g' − c becomes the residual as it stands, the old one the spare.
        this.spare = this.residual;
        this.residual = next;
        return;
      }
      const r = this.residual;
      for (const j of fresh) r.set(next.subarray(starts0[j]!, starts0[j]! + lengths[j]!), starts[j]);
      if (open === 0) this.spare = base;
    };
    return {
      bytes,
      offsets,
      get sent(): Float32Array {
        if (!decoded) decodeSlots(c, bytes, 0, lengths, (decoded = new Float32Array(total)));
        return decoded;
      },
      commit,
    };
  }

  /** Sum of |residual|, for tests and status. */
  residualNorm1(): number {
    let sum = 0;
    const r = this.residual;
    for (let i = 0; i < r.length; i++) sum += Math.abs(r[i]!);
    return sum;
  }
}
