import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import {
  type Compression,
  ErrorFeedback,
  FP16_MAX,
  INT8_BLOCK,
  decodeSlot,
  decodeSlots,
  encodeSlot,
  encodeSlots,
  encodedSlotBytes,
  formatCompression,
  parseCompression,
} from '../../../cluster/wire/gradient-codec.js';
import { fromHalf, halfFromFloatBits, toHalf } from '../../../cluster/wire/half.js';
import { slotElements } from '../../../cluster/slots.js';
import { rng } from '../../helpers/random.js';

/*
 * cluster/wire/gradient-codec.ts: per-slot gradient codecs (float32, fp16, int8 with
 * a scale per block, top-k), their byte layouts and sizes, what they refuse
 * on either side, and error feedback; cluster/wire/half.ts: float16 rounding.
 */

const NONE: Compression = { kind: 'none' };
const FP16: Compression = { kind: 'fp16' };
const INT8: Compression = { kind: 'int8' };
const topk = (ratio: number): Compression => ({ kind: 'topk', ratio });
const ALL: Compression[] = [NONE, FP16, INT8, topk(0.01), topk(0.1), topk(0.5), topk(1)];
const LENGTHS = [0, 1, 255, 256, 257, 1000];
const FORMS = /none, fp16, int8 or topk:R/;

/** `n` floats uniform in [−scale, scale), seeded. */
function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * next() - 1) * scale;
  return out;
}

/** Indices of the k largest magnitudes, ties to the lower index, ascending: the reference top-k by a full sort. */
function referenceTopk(v: Float32Array, k: number): number[] {
  const order = Array.from(v.keys()).sort((a, b) => Math.abs(v[b]!) - Math.abs(v[a]!) || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

function topkCount(ratio: number, n: number): number {
  return n === 0 ? 0 : Math.min(n, Math.max(1, Math.ceil(ratio * n)));
}

function roundTrip(c: Compression, v: Float32Array): { bytes: Uint8Array; out: Float32Array } {
  const bytes = encodeSlot(c, v);
  expect(bytes.byteLength, `${formatCompression(c)} size of ${v.length} values`).to.equal(encodedSlotBytes(c, v.length));
  const out = new Float32Array(v.length).fill(NaN);
  expect(decodeSlot(c, bytes, 0, out)).to.equal(bytes.byteLength);
  return { bytes, out };
}

/** Checks the decoded top-k slot against the reference selection; one assertion at the end. */
function checkTopk(ratio: number, v: Float32Array): void {
  const { bytes, out } = roundTrip(topk(ratio), v);
  const k = topkCount(ratio, v.length);
  const keep = referenceTopk(v, k);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(view.getUint32(0, true)).to.equal(k);
  const sentIdx = Array.from({ length: k }, (_, j) => view.getUint32(4 + 4 * j, true));
  expect(sentIdx).to.deep.equal(keep);
  const kept = new Set(keep);
  let failure: string | null = null;
  for (let i = 0; i < v.length && !failure; i++) {
    const want = kept.has(i) ? v[i]! : 0;
    if (!Object.is(out[i], want) && !(want === 0 && out[i] === 0)) failure = `element ${i}: ${out[i]} instead of ${want}`;
  }
  expect(failure).to.equal(null);
}

/** The residual of every element, read through the public API: a float32 "push" of a zero gradient, never committed. */
function residualOf(ef: ErrorFeedback): Float32Array {
  const n = ef.elements;
  const out = new Float32Array(n);
  ef.encode(NONE, [{ start: 0, length: n }], new Float32Array(n), out);
  return out;
}

describe('cluster/gradient-codec', () => {
  describe('round trips', () => {
    it('float32 is exact and 4 bytes a value', () => {
      for (const n of LENGTHS) {
        const v = randomValues(n, 10 + n);
        const { bytes, out } = roundTrip(NONE, v);
        expect(bytes.byteLength).to.equal(4 * n);
        expect(Buffer.from(out.buffer).equals(Buffer.from(v.buffer)), `n = ${n}`).to.equal(true);
      }
    });

    it('fp16 is within 2^-11 relative for normal values, within 2^-25 for subnormal ones', () => {
      for (const n of [...LENGTHS, 5000]) {
        // Magnitudes over many binades, down into float16's subnormals (below 2^-14).
        const next = rng(20 + n);
        const v = Float32Array.from({ length: n }, () => (next() < 0.5 ? -1 : 1) * 2 ** (-20 + 36 * next()));
        const { bytes, out } = roundTrip(FP16, v);
        expect(bytes.byteLength).to.equal(2 * n);
        let failure: string | null = null;
        for (let i = 0; i < n && !failure; i++) {
          const a = Math.abs(v[i]!);
          const bound = a >= 2 ** -14 ? a * 2 ** -11 : 2 ** -25;
          if (!(Math.abs(out[i]! - v[i]!) <= bound)) failure = `element ${i}: ${v[i]} came back as ${out[i]}`;
        }
        expect(failure, `n = ${n}`).to.equal(null);
      }
    });

    it('fp16 writes little-endian half bits and holds ±FP16_MAX', () => {
      const bytes = encodeSlot(FP16, Float32Array.of(1, -2, FP16_MAX, -FP16_MAX, 0));
      expect(Array.from(bytes)).to.deep.equal([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0xff, 0xfb, 0, 0]);
      expect(FP16_MAX).to.equal(65504);
    });

    it('int8 is within half a step of its block (max|v|/254) and writes a scale per 256 values', () => {
      expect(INT8_BLOCK).to.equal(256);
      for (const n of [...LENGTHS, 3000]) {
        // Blocks of very different scales, so a shared scale would fail the bound.
        const v = randomValues(n, 30 + n);
        for (let i = 0; i < n; i++) v[i] = v[i]! * 10 ** ((Math.floor(i / INT8_BLOCK) % 5) - 2);
        const { bytes, out } = roundTrip(INT8, v);
        expect(bytes.byteLength).to.equal(n + 4 * Math.ceil(n / INT8_BLOCK));
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        let failure: string | null = null;
        for (let b = 0; b < n && !failure; b += INT8_BLOCK) {
          const e = Math.min(n, b + INT8_BLOCK);
          let max = 0;
          for (let i = b; i < e; i++) max = Math.max(max, Math.abs(v[i]!));
          const scale = view.getFloat32((b / INT8_BLOCK) * (INT8_BLOCK + 4), true);
          if (scale !== Math.fround(max / 127)) failure = `block at ${b}: scale ${scale}, expected ${Math.fround(max / 127)}`;
          const bound = (max / 254) * (1 + 1e-6);
          for (let i = b; i < e && !failure; i++) {
            if (!(Math.abs(out[i]! - v[i]!) <= bound)) failure = `element ${i}: ${v[i]} came back as ${out[i]} (bound ${bound})`;
          }
        }
        expect(failure, `n = ${n}`).to.equal(null);
      }
    });

    it('int8 lays out scale then round(v/scale), and gives a zero block scale 1', () => {
      const bytes = encodeSlot(INT8, Float32Array.of(0.5, -1, 0));
      const scale = Math.fround(1 / 127);
      const head = Buffer.alloc(4);
      head.writeFloatLE(scale);
      expect(Array.from(bytes)).to.deep.equal([...head, 64, 256 - 127, 0]);
      const zeros = encodeSlot(INT8, new Float32Array(300));
      expect(Buffer.from(zeros).readFloatLE(0)).to.equal(1);
      expect(Buffer.from(zeros).readFloatLE(260)).to.equal(1);
      const out = new Float32Array(300).fill(7);
      decodeSlot(INT8, zeros, 0, out);
      expect(out.every((x) => x === 0)).to.equal(true);
    });

    it('int8 keeps tiny (subnormal) blocks within half a step', () => {
      const v = Float32Array.from({ length: 40 }, (_, i) => (i - 20) * 2 ** -149 * 5);
      const { out } = roundTrip(INT8, v);
      const max = 100 * 2 ** -149;
      for (let i = 0; i < v.length; i++) expect(Math.abs(out[i]! - v[i]!)).to.be.at.most(max / 127);
    });

    it('top-k sends exactly the k largest magnitudes, exactly, and zeros elsewhere', () => {
      for (const ratio of [0.01, 0.1, 0.5, 1]) {
        for (const n of LENGTHS) checkTopk(ratio, randomValues(n, 40 + n));
      }
    });

    it('top-k lays out k, ascending indices, then values', () => {
      const bytes = Buffer.from(encodeSlot(topk(0.5), Float32Array.of(0.1, -3, 2, 0.5)));
      expect(bytes.byteLength).to.equal(4 + 8 * 2);
      expect([bytes.readUInt32LE(0), bytes.readUInt32LE(4), bytes.readUInt32LE(8), bytes.readFloatLE(12), bytes.readFloatLE(16)]).to.deep.equal([2, 1, 2, -3, 2]);
      expect(Array.from(encodeSlot(topk(0.5), new Float32Array(0)))).to.deep.equal([0, 0, 0, 0]);
    });

    it('top-k breaks ties towards the lower index, whatever the sign, in large and small slots', () => {
      const next = rng(50);
      // Few distinct magnitudes: the threshold is always tied.
      for (const n of [10, 1000, 70_000]) {
        const v = Float32Array.from({ length: n }, () => (next() < 0.5 ? -1 : 1) * [0, 0.25, 0.5, 1][Math.floor(next() * 4)]!);
        for (const ratio of [0.01, 0.3, 0.9]) checkTopk(ratio, v);
      }
      checkTopk(0.01, new Float32Array(5000)); // all zero: the first k indices, zeros
      checkTopk(0.1, new Float32Array(5000).fill(-3.5));
    });

    it('top-k selects correctly where the magnitudes share their top bits (every radix level used)', () => {
      const next = rng(60);
      // All within [1, 1 + 2^-10): same top 11 bits, and many within the same next 10.
      const v = Float32Array.from({ length: 100_000 }, () => (next() < 0.5 ? -1 : 1) * (1 + next() * 2 ** -10));
      for (const ratio of [0.001, 0.01, 0.5]) checkTopk(ratio, v);
      // Normal gradients, large slot.
      checkTopk(0.01, randomValues(100_000, 61, 1e-3));
    });

    it('sizes match encodedSlotBytes for every codec and length', () => {
      for (const c of ALL) {
        for (const n of [...LENGTHS, 16_384]) expect(encodeSlot(c, randomValues(n, n)).byteLength, `${formatCompression(c)}, n = ${n}`).to.equal(encodedSlotBytes(c, n));
      }
      expect(encodedSlotBytes(topk(0.01), 200)).to.equal(4 + 8 * 2);
      expect(encodedSlotBytes(topk(0.01), 16_384)).to.equal(4 + 8 * 164);
      expect(encodedSlotBytes(INT8, 257)).to.equal(257 + 8);
      expect(() => encodedSlotBytes(FP16, -1)).to.throw(InvalidArgumentError, /non-negative integer/);
    });
  });

  describe('encodeSlots / decodeSlots', () => {
    const lengths = [0, 1, 255, 256, 257, 1000, 3];
    const total = lengths.reduce((a, b) => a + b, 0);

    it('equal the slots encoded one by one, concatenated, and decode back at any offset', () => {
      const v = randomValues(total, 70);
      for (const c of ALL) {
        const whole = encodeSlots(c, v, lengths);
        const pieces: Uint8Array[] = [];
        let at = 0;
        for (const n of lengths) {
          pieces.push(encodeSlot(c, v.subarray(at, at + n)));
          at += n;
        }
        expect(Buffer.from(whole).equals(Buffer.concat(pieces)), formatCompression(c)).to.equal(true);

        const framed = new Uint8Array(whole.byteLength + 5);
        framed.set(whole, 3); // behind a 3-byte prefix: unaligned, as received bytes are
        const out = new Float32Array(total + 2).fill(9);
        expect(decodeSlots(c, framed, 3, lengths, out)).to.equal(whole.byteLength);
        const expected = new Float32Array(total);
        at = 0;
        for (let s = 0; s < lengths.length; s++) {
          decodeSlot(c, pieces[s]!, 0, expected.subarray(at, at + lengths[s]!));
          at += lengths[s]!;
        }
        expect(Array.from(out.subarray(0, total))).to.deep.equal(Array.from(expected));
        expect([out[total], out[total + 1]]).to.deep.equal([9, 9]); // past the slots: untouched
      }
    });

    it('refuse lengths that do not match the values', () => {
      expect(() => encodeSlots(FP16, new Float32Array(10), [3, 3])).to.throw(InvalidArgumentError, /add up to 6 values but 10/);
      expect(() => decodeSlots(FP16, new Uint8Array(40), 0, [10, 10], new Float32Array(10))).to.throw(InvalidArgumentError, /20 values do not fit/);
      expect(() => encodeSlots(FP16, new Float32Array(3), [1.5, 1.5])).to.throw(InvalidArgumentError, /non-negative integer/);
    });
  });

  describe('parseCompression / formatCompression', () => {
    it('round trip every form', () => {
      for (const text of ['none', 'fp16', 'int8', 'topk:0.01', 'topk:1', 'topk:0.5', 'topk:1e-7']) {
        const c = parseCompression(text);
        expect(formatCompression(c)).to.equal(text);
        expect(parseCompression(formatCompression(c))).to.deep.equal(c);
      }
      expect(parseCompression('topk:0.01')).to.deep.equal({ kind: 'topk', ratio: 0.01 });
      expect(parseCompression(' FP16 ')).to.deep.equal({ kind: 'fp16' });
      expect(parseCompression('topk:.25')).to.deep.equal({ kind: 'topk', ratio: 0.25 });
    });

    it('refuse bad forms with a message listing the good ones', () => {
      for (const text of ['topk:0', 'topk:2', 'topk:x', 'zip', '', 'topk:', 'topk:-0.1', 'topk:0x1', 'topk:Infinity', 'topk:NaN', 'topk']) {
        expect(() => parseCompression(text), JSON.stringify(text)).to.throw(InvalidArgumentError, FORMS);
      }
    });

    it('a hand-built codec with a bad ratio is refused where it is used', () => {
      expect(() => encodeSlot(topk(0), new Float32Array(4))).to.throw(InvalidArgumentError, FORMS);
      expect(() => encodedSlotBytes(topk(1.5), 4)).to.throw(InvalidArgumentError, FORMS);
      expect(() => decodeSlot(topk(NaN), new Uint8Array(4), 0, new Float32Array(0))).to.throw(InvalidArgumentError, FORMS);
    });
  });

  describe('errors', () => {
    it('encoding refuses NaN and ±Inf under every codec, naming the element', () => {
      for (const c of ALL) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const v = randomValues(600, 80);
          v[517] = bad;
          expect(() => encodeSlot(c, v), `${formatCompression(c)} with ${bad}`).to.throw(InvalidArgumentError, new RegExp(`element 517 is ${bad}.*finite`));
        }
      }
      const v = randomValues(20, 81);
      v[13] = NaN;
      expect(() => encodeSlots(INT8, v, [10, 10])).to.throw(InvalidArgumentError, /element 13 is NaN/);
    });

    it('fp16 refuses magnitudes above FP16_MAX, saying to use int8 or none', () => {
      for (const big of [70_000, -65_505, 65_504.5, 1e30]) {
        const v = Float32Array.of(0, 1, big);
        const named = String(Math.fround(big)).replace('+', '\\+');
        expect(() => encodeSlot(FP16, v), String(big)).to.throw(InvalidArgumentError, new RegExp(`element 2 is ${named}.*65504.*int8 or none`));
      }
      expect(() => encodeSlot(FP16, Float32Array.of(65_504, -65_504))).not.to.throw();
      expect(() => encodeSlot(INT8, Float32Array.of(70_000))).not.to.throw();
    });

    it('decoding refuses truncated input under every codec', () => {
      for (const c of ALL) {
        const bytes = encodeSlot(c, randomValues(300, 90));
        const short = bytes.subarray(0, bytes.byteLength - 1);
        expect(() => decodeSlot(c, short, 0, new Float32Array(300)), formatCompression(c)).to.throw(InvalidArgumentError, /truncated/);
        expect(() => decodeSlots(c, short, 0, [300], new Float32Array(300)), formatCompression(c)).to.throw(InvalidArgumentError, /truncated/);
      }
      expect(() => decodeSlot(topk(0.1), new Uint8Array(3), 0, new Float32Array(10))).to.throw(InvalidArgumentError, /truncated/);
      expect(() => decodeSlot(FP16, new Uint8Array(3), 4, new Float32Array(0))).to.throw(InvalidArgumentError, /offset 4/);
    });

    /** A top-k slot as raw fields. */
    function topkBytes(k: number, indices: number[], values: number[]): Uint8Array {
      const b = Buffer.alloc(4 + 4 * indices.length + 4 * values.length);
      b.writeUInt32LE(k, 0);
      indices.forEach((x, j) => b.writeUInt32LE(x, 4 + 4 * j));
      values.forEach((x, j) => b.writeFloatLE(x, 4 + 4 * indices.length + 4 * j));
      return b;
    }

    it('top-k decoding refuses k > n, indices out of range or not ascending, and non-finite values', () => {
      const c = topk(0.5);
      const out = new Float32Array(5);
      expect(decodeSlot(c, topkBytes(2, [1, 4], [3, -2]), 0, out)).to.equal(20);
      expect(Array.from(out)).to.deep.equal([0, 3, 0, 0, -2]);
      expect(() => decodeSlot(c, topkBytes(6, [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1]), 0, out)).to.throw(InvalidArgumentError, /k = 6.*at most 5/);
      expect(() => decodeSlot(c, topkBytes(2, [1, 10], [1, 1]), 0, out)).to.throw(InvalidArgumentError, /index 10.*out of range/);
      expect(() => decodeSlot(c, topkBytes(2, [3, 1], [1, 1]), 0, out)).to.throw(InvalidArgumentError, /ascending.*1 after 3/);
      expect(() => decodeSlot(c, topkBytes(2, [2, 2], [1, 1]), 0, out)).to.throw(InvalidArgumentError, /ascending/);
      expect(() => decodeSlot(c, topkBytes(2, [0, 2], [1, NaN]), 0, out)).to.throw(InvalidArgumentError, /value 2 .*NaN/);
      expect(() => decodeSlot(c, topkBytes(1, [0], [Infinity]), 0, out)).to.throw(InvalidArgumentError, /Infinity/);
    });

    it('int8 decoding refuses a NaN or infinite scale, and a scale that overflows float32', () => {
      const v = randomValues(600, 100);
      for (const [scale, message] of [
        [NaN, /block of values 256…511.*scale NaN/],
        [Infinity, /scale Infinity/],
        [3e38, /value \d+ of a slot decodes to -?Infinity.*overflows/],
      ] as const) {
        const bytes = Buffer.from(encodeSlot(INT8, v));
        bytes.writeFloatLE(scale, 4 + INT8_BLOCK); // the second block's scale
        expect(() => decodeSlot(INT8, bytes, 0, new Float32Array(600)), String(scale)).to.throw(InvalidArgumentError, message);
      }
    });

    it('fp16 and float32 decoding refuse NaN and ±Inf smuggled in the bytes', () => {
      const half = Buffer.from(encodeSlot(FP16, Float32Array.of(1, 2, 3)));
      half.writeUInt16LE(0x7c00, 2);
      expect(() => decodeSlot(FP16, half, 0, new Float32Array(3))).to.throw(InvalidArgumentError, /value 1 of a slot decodes to Infinity/);
      half.writeUInt16LE(0xfe01, 4);
      half.writeUInt16LE(0x3c00, 2);
      expect(() => decodeSlot(FP16, half, 0, new Float32Array(3))).to.throw(InvalidArgumentError, /value 2 of a slot decodes to NaN/);
      const full = Buffer.from(encodeSlot(NONE, Float32Array.of(1, 2, 3)));
      full.writeFloatLE(-Infinity, 8);
      expect(() => decodeSlot(NONE, full, 0, new Float32Array(3))).to.throw(InvalidArgumentError, /value 2 of a slot decodes to -Infinity/);
    });
  });

  describe('ErrorFeedback', () => {
    const D = 3000;
    const S = 7;
    const slots = Array.from({ length: S }, (_, s) => {
      const { start, end } = slotElements(s, D, S);
      return { start, length: end - start };
    });
    // Pushes alternate between two groups of slots (as pushes to two shards would), in the flat order within each.
    const groups = [slots.filter((_, s) => s % 2 === 0), slots.filter((_, s) => s % 2 === 1)];

    /** Runs `steps` pushes of random gradients; returns the running sums and the residual norm after each step. */
    function run(c: Compression, steps: number, seed: number) {
      const ef = new ErrorFeedback(D);
      const raw = new Float64Array(D);
      const sent = new Float64Array(D);
      const norms: number[] = [];
      const next = rng(seed);
      for (let t = 0; t < steps; t++) {
        for (const group of groups) {
          const n = group.reduce((a, s) => a + s.length, 0);
          const g = Float32Array.from({ length: n }, () => 2 * next() - 1);
          const out = new Float32Array(n);
          ef.encode(c, group, g, out).commit();
          let at = 0;
          for (const s of group) {
            for (let i = 0; i < s.length; i++) {
              raw[s.start + i]! += g[at + i]!;
              sent[s.start + i]! += out[at + i]!;
            }
            at += s.length;
          }
        }
        norms.push(ef.residualNorm1());
      }
      return { ef, raw, sent, norms };
    }

    /** Largest | (Σraw − Σsent) − residual | over the elements. */
    function drift(r: ReturnType<typeof run>): number {
      const residual = residualOf(r.ef);
      let worst = 0;
      for (let i = 0; i < D; i++) worst = Math.max(worst, Math.abs(r.raw[i]! - r.sent[i]! - residual[i]!));
      return worst;
    }

    it('top-k: what was sent plus the residual is what was pushed, and the residual stays bounded', () => {
      const r = run(topk(0.01), 200, 110);
      expect(drift(r)).to.be.at.most(1e-4);
      // Linear growth would double the norm between steps 100 and 200; it levels off instead.
      const [mid, end] = [r.norms[99]!, r.norms[199]!];
      expect(end / mid).to.be.below(1.35);
      // And it is a small part of all that was pushed (≈ 0.5 · D per step).
      expect(end).to.be.below(0.1 * 200 * 0.5 * D);
      let sentAnything = 0;
      for (let i = 0; i < D; i++) if (r.sent[i] !== 0) sentAnything++;
      expect(sentAnything, 'every element is sent at some point').to.be.above(0.9 * D);
    });

    it('int8 and fp16: the same accounting, with tiny residuals', () => {
      for (const [c, perElement] of [
        [INT8, 1 / 254],
        [FP16, 2 ** -11],
      ] as const) {
        const r = run(c, 50, 120);
        expect(drift(r), formatCompression(c)).to.be.at.most(1e-5);
        expect(Math.max(...r.norms) / D, formatCompression(c)).to.be.at.most(perElement);
      }
      const none = run(NONE, 5, 121);
      expect(none.ef.residualNorm1()).to.equal(0);
      expect(drift(none)).to.equal(0);
    });

    it('leaves the residual unchanged until committed, and counts a retried push once', () => {
      const ef = new ErrorFeedback(D);
      const c = topk(0.01);
      const g = randomValues(D, 130);
      const all = [{ start: 0, length: D }];
      ef.encode(c, all, g, new Float32Array(D)).commit();
      const before = residualOf(ef);
      const norm = ef.residualNorm1();

      const g2 = randomValues(D, 131);
      const first = new Float32Array(D);
      ef.encode(c, all, g2, first); // lost: never acknowledged
      expect(ef.residualNorm1()).to.equal(norm);
      expect(Array.from(residualOf(ef))).to.deep.equal(Array.from(before));

      const retry = new Float32Array(D);
      const commit = ef.encode(c, all, g2, retry).commit;
      expect(Array.from(retry)).to.deep.equal(Array.from(first)); // a retry sends the same thing
      commit();
      commit(); // a second call changes nothing
      const after = residualOf(ef);
      for (let i = 0; i < D; i++) expect(Math.abs(before[i]! + g2[i]! - retry[i]! - after[i]!)).to.be.at.most(1e-6);
    });

    it('touches only the slots of a push, and accepts sent = gradient', () => {
      const ef = new ErrorFeedback(100);
      const g = Float32Array.from({ length: 30 }, (_, i) => i + 1);
      ef.encode(topk(0.1), [{ start: 10, length: 20 }, { start: 50, length: 10 }], g, g).commit();
      const r = residualOf(ef);
      expect(Array.from(g)).to.deep.equal([...new Array(18).fill(0), 19, 20, ...new Array(9).fill(0), 30]);
      expect(Array.from(r.subarray(0, 10)).every((x) => x === 0)).to.equal(true);
      expect(r[10]).to.equal(1);
      expect(r[28]).to.equal(0);
      expect(r[50]).to.equal(21);
      expect(r[59]).to.equal(0);
      expect(Array.from(r.subarray(60)).every((x) => x === 0)).to.equal(true);
    });

    it('refuses slots outside the vector and buffers of the wrong length, and keeps the residual when encoding fails', () => {
      const ef = new ErrorFeedback(10);
      expect(() => ef.encode(INT8, [{ start: 5, length: 6 }], new Float32Array(6), new Float32Array(6)).commit).to.throw(InvalidArgumentError, /outside the 10 elements/);
      expect(() => ef.encode(INT8, [{ start: 0, length: 4 }], new Float32Array(5), new Float32Array(4)).commit).to.throw(InvalidArgumentError, /4 values.*gradient has 5/);
      ef.encode(FP16, [{ start: 0, length: 2 }], Float32Array.of(1e-5, 1), new Float32Array(2)).commit();
      const norm = ef.residualNorm1();
      expect(() => ef.encode(FP16, [{ start: 0, length: 2 }], Float32Array.of(1e6, 0), new Float32Array(2)).commit).to.throw(InvalidArgumentError, /int8 or none/);
      expect(ef.residualNorm1()).to.equal(norm);
    });
  });
});

describe('cluster/half', () => {
  it('rounds to the nearest float16, ties to even, for random float32 patterns', () => {
    const next = rng(140);
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    let failure: string | null = null;
    for (let t = 0; t < 200_000 && !failure; t++) {
      u[0] = (next() * 2 ** 32) >>> 0;
      const v = f[0]!;
      if (!Number.isFinite(v) || Math.abs(v) > FP16_MAX) continue;
      const h = toHalf(v);
      if (h !== halfFromFloatBits(u[0]!)) failure = `${v}: toHalf and halfFromFloatBits disagree`;
      const got = fromHalf(h);
      // The neighbours one step either side (same sign) are no closer; at a tie, h is even.
      for (const other of [h - 1, h + 1]) {
        if ((other & 0x7fff) > 0x7bff || (other & 0x8000) !== (h & 0x8000) || other < 0) continue;
        const d = Math.abs(fromHalf(other) - v) - Math.abs(got - v);
        if (d < 0 || (d === 0 && h & 1)) failure = `${v} → ${h.toString(16)}, but ${other.toString(16)} is ${d < 0 ? 'closer' : 'as close and even'}`;
      }
    }
    expect(failure).to.equal(null);
  });

  it('handles the edges: zero, subnormals, the largest half, overflow, NaN', () => {
    expect(toHalf(0)).to.equal(0);
    expect(toHalf(-0)).to.equal(0x8000);
    expect(toHalf(2 ** -24)).to.equal(1);
    expect(toHalf(2 ** -25)).to.equal(0); // a tie, to even
    expect(toHalf(3 * 2 ** -25)).to.equal(2);
    expect(toHalf(2 ** -14)).to.equal(0x0400);
    expect(toHalf(65504)).to.equal(0x7bff);
    expect(toHalf(65519)).to.equal(0x7bff);
    expect(toHalf(65520)).to.equal(0x7c00);
    expect(toHalf(-1e9)).to.equal(0xfc00);
    expect(toHalf(NaN) & 0x7e00).to.equal(0x7e00);
    expect(fromHalf(0x7bff)).to.equal(65504);
    expect(fromHalf(1)).to.equal(2 ** -24);
    expect(fromHalf(0xfc00)).to.equal(-Infinity);
    expect(fromHalf(0x7e00)).to.be.NaN;
  });
});
