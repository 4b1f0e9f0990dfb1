import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { idHalves, idOf, initialRow, murmur3, rowHash, rowSlot, rowUniformAt, slotOfId, tableHash, validateSparseTables } from '../../../cluster/sparse-keys.js';
import { bytesToF32, bytesToIdHalves, fromIdHalves, idBytes, toIdHalves } from '../../../cluster/wire/sparse-values.js';

const MAX = 0xffffffffffffffffn;

/** mulberry32: a tiny seeded generator, so every failure reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Pearson's χ² of `counts` against a uniform expectation. */
function chiSquare(counts: Uint32Array, total: number): number {
  const e = total / counts.length;
  let x = 0;
  for (const o of counts) x += ((o - e) * (o - e)) / e;
  return x;
}

/**
 * χ² with S−1 degrees of freedom has mean S−1 and standard deviation √(2(S−1));
 * a good hash lands within a few deviations. Six is a bound no fair hash
 * crosses by chance (p < 1e-6) and a biased one crosses at once.
 */
function chiBound(slots: number): number {
  return slots - 1 + 6 * Math.sqrt(2 * (slots - 1));
}

describe('cluster/sparse-keys', () => {
  describe('murmur3', () => {
    // Reference vectors of murmur3_x86_32 (SMHasher's verification set).
    const vectors: [number[] | string, number, number][] = [
      [[], 0, 0],
      [[], 1, 0x514e28b7],
      [[], 0xffffffff, 0x81f16f39],
      [[0xff, 0xff, 0xff, 0xff], 0, 0x76293b50],
      [[0x21, 0x43, 0x65, 0x87], 0, 0xf55b516b],
      [[0x21, 0x43, 0x65, 0x87], 0x5082edee, 0x2362f9de],
      [[0x21, 0x43, 0x65], 0, 0x7e4a8634],
      [[0x21, 0x43], 0, 0xa0f7b07a],
      [[0x21], 0, 0x72661cf4],
      [[0, 0, 0, 0], 0, 0x2362f9de],
      ['Hello, world!', 1234, 0xfaf6cdb3],
      ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
    ];
    for (const [input, seed, want] of vectors) {
      it(`murmur3(${JSON.stringify(input)}, 0x${seed.toString(16)}) = 0x${want.toString(16)}`, () => {
        const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : Uint8Array.from(input);
        expect(murmur3(bytes, seed)).to.equal(want);
      });
    }

    it('rowHash is murmur3 of the id\'s 8 little-endian bytes seeded by the table hash', () => {
      const next = rng(1);
      const t = tableHash('items');
      for (let i = 0; i < 1000; i++) {
        const lo = next();
        const hi = i % 3 === 0 ? 0 : next();
        const bytes = new Uint8Array(new Uint32Array([lo, hi]).buffer);
        expect(rowHash(t, lo, hi)).to.equal(murmur3(bytes, t));
      }
    });
  });

  describe('slot of a row', () => {
    const SLOTS = 1024;
    const N = 100_000;
    const spread = (idAt: (i: number) => [number, number], table = 'items') => {
      const t = tableHash(table);
      const counts = new Uint32Array(SLOTS);
      for (let i = 0; i < N; i++) {
        const [lo, hi] = idAt(i);
        counts[rowSlot(t, lo, hi, SLOTS)]!++;
      }
      return counts;
    };

    it('spreads sequential ids evenly over the slots (χ² bound)', () => {
      expect(chiSquare(spread((i) => [i, 0]), N)).to.be.below(chiBound(SLOTS));
    });

    it('spreads ids that differ only in their high half evenly', () => {
      expect(chiSquare(spread((i) => [0, i]), N)).to.be.below(chiBound(SLOTS));
    });

    it('spreads random 64-bit ids evenly, and strided ids too', () => {
      const next = rng(2);
      expect(chiSquare(spread(() => [next(), next()]), N)).to.be.below(chiBound(SLOTS));
      expect(chiSquare(spread((i) => [i * 1024, 7]), N)).to.be.below(chiBound(SLOTS));
    });

    it('is deterministic and in range, for any slot count', () => {
      for (const slots of [1, 7, 16, 1000, 65536]) {
        for (const id of [0n, 1n, 2n ** 32n, 2n ** 53n + 1n, MAX]) {
          const s = slotOfId('items', id, slots);
          expect(s).to.equal(slotOfId('items', id, slots));
          expect(Number.isInteger(s) && s >= 0 && s < slots).to.equal(true);
        }
      }
    });

    it('depends on the table: the same ids land elsewhere in another table', () => {
      let same = 0;
      for (let i = 0n; i < 10_000n; i++) if (slotOfId('users', i, SLOTS) === slotOfId('items', i, SLOTS)) same++;
      // By chance 1/S of them: about 10.
      expect(same).to.be.below(40);
    });

    it('tells ids apart beyond 2^53 (no float rounding)', () => {
      const a = 2n ** 53n;
      const slotsA = [a, a + 1n, a + 2n, a + 3n].map((id) => slotOfId('items', id, 1 << 16));
      expect(new Set(slotsA).size).to.be.greaterThan(1);
      expect(slotOfId('items', MAX, 1 << 16)).to.not.equal(slotOfId('items', MAX - 1n, 1 << 16));
    });
  });

  describe('ids', () => {
    const ids = [0n, 1n, 0xffffffffn, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, MAX - 1n, MAX];

    it('halves round-trip exactly over the whole 64-bit range, including 0 and 2^64−1', () => {
      expect(idHalves(0n)).to.deep.equal([0, 0]);
      expect(idHalves(MAX)).to.deep.equal([0xffffffff, 0xffffffff]);
      for (const id of ids) {
        const [lo, hi] = idHalves(id);
        expect(idOf(lo, hi)).to.equal(id);
      }
    });

    it('bigint[] and BigUint64Array give the same halves, and the bytes are little-endian uint64', () => {
      const a = toIdHalves(ids);
      const b = toIdHalves(BigUint64Array.from(ids));
      expect(Array.from(a)).to.deep.equal(Array.from(b));
      const bytes = idBytes(a);
      expect(bytes.length).to.equal(8 * ids.length);
      for (let i = 0; i < ids.length; i++) expect(bytes.readBigUInt64LE(8 * i)).to.equal(ids[i]);
      // Received bytes are rarely aligned: decode from an odd offset.
      const odd = Buffer.alloc(bytes.length + 1);
      bytes.copy(odd, 1);
      expect(Array.from(fromIdHalves(bytesToIdHalves(odd.subarray(1))))).to.deep.equal(ids);
    });

    it('refuses ids outside [0, 2^64) and bytes that are not whole uint64 / float32', () => {
      expect(() => toIdHalves([-1n])).to.throw(InvalidArgumentError, /not an unsigned 64-bit/);
      expect(() => toIdHalves([MAX + 1n])).to.throw(InvalidArgumentError, /not an unsigned 64-bit/);
      expect(() => toIdHalves([1 as unknown as bigint])).to.throw(InvalidArgumentError);
      expect(() => bytesToIdHalves(new Uint8Array(12))).to.throw(InvalidArgumentError, /not a whole number of little-endian uint64/);
      expect(() => bytesToF32(new Uint8Array(6), 'gradients')).to.throw(InvalidArgumentError, /not a whole number of little-endian float32/);
    });
  });

  describe('first values of a row', () => {
    const t = tableHash('items');

    it('is deterministic per (seed, table, id, column), uniform within bounds', () => {
      const dim = 16;
      const a = new Float32Array(1000 * dim);
      const b = new Float32Array(1000 * dim);
      for (let i = 0; i < 1000; i++) {
        initialRow({ kind: 'uniform', low: -0.5, high: 0.5 }, dim, 7, t, i, i % 5, a, i * dim);
        initialRow({ kind: 'uniform', low: -0.5, high: 0.5 }, dim, 7, t, i, i % 5, b, i * dim);
      }
      expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).to.equal(true);
      let sum = 0;
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of a) {
        sum += v;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      expect(lo).to.be.at.least(-0.5);
      expect(hi).to.be.below(0.5);
      expect(Math.abs(sum / a.length)).to.be.below(0.01);
      expect(new Set(a).size).to.be.greaterThan(0.99 * a.length);
    });

    it('differs by seed, table, id half and column', () => {
      const base = rowUniformAt(7, t, 5, 9, 3);
      expect(rowUniformAt(8, t, 5, 9, 3)).to.not.equal(base);
      expect(rowUniformAt(7, tableHash('users'), 5, 9, 3)).to.not.equal(base);
      expect(rowUniformAt(7, t, 6, 9, 3)).to.not.equal(base);
      expect(rowUniformAt(7, t, 5, 10, 3)).to.not.equal(base);
      expect(rowUniformAt(7, t, 5, 9, 4)).to.not.equal(base);
    });

    it('zeros, constant and glorot-uniform', () => {
      const out = new Float32Array(8).fill(9);
      initialRow({ kind: 'zeros' }, 4, 1, t, 1, 0, out, 2);
      expect(Array.from(out)).to.deep.equal([9, 9, 0, 0, 0, 0, 9, 9]);
      initialRow({ kind: 'constant', value: 0.25 }, 4, 1, t, 1, 0, out, 0);
      expect(Array.from(out.subarray(0, 4))).to.deep.equal([0.25, 0.25, 0.25, 0.25]);
      initialRow({ kind: 'glorot-uniform', fanIn: 3, fanOut: 3 }, 8, 1, t, 1, 0, out, 0);
      for (const v of out) expect(Math.abs(v)).to.be.at.most(1);
    });
  });

  describe('validateSparseTables', () => {
    const spec = (sparse: ModelSpec['sparse']): ModelSpec => ({ name: 'm', seed: 1, tensors: [{ name: 'w', shape: [1], init: { kind: 'zeros' } }], sparse });
    it('accepts none, and well-formed tables', () => {
      validateSparseTables(spec(undefined));
      validateSparseTables(spec([{ name: 'a', dim: 16, init: { kind: 'uniform', low: -1, high: 1 } }]));
    });
    it('refuses duplicates, bad dims and bad initializers with clear messages', () => {
      expect(() => validateSparseTables(spec([{ name: 'a', dim: 4, init: { kind: 'zeros' } }, { name: 'a', dim: 4, init: { kind: 'zeros' } }]))).to.throw(/twice/);
      expect(() => validateSparseTables(spec([{ name: 'a', dim: 0, init: { kind: 'zeros' } }]))).to.throw(/dim 0/);
      expect(() => validateSparseTables(spec([{ name: 'a', dim: 2.5, init: { kind: 'zeros' } }]))).to.throw(/dim 2.5/);
      expect(() => validateSparseTables(spec([{ name: '', dim: 4, init: { kind: 'zeros' } }]))).to.throw(/no name/);
      expect(() => validateSparseTables(spec([{ name: 'a', dim: 4, init: { kind: 'uniform', low: 1, high: -1 } }]))).to.throw(/low ≤ high/);
      expect(() => validateSparseTables(spec([{ name: 'a', dim: 4, init: { kind: 'normal' } as never }]))).to.throw(/unknown initializer/);
    });
  });
});
