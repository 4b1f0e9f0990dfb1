import { expect } from 'chai';
import {
  DEFAULT_SLOTS,
  type SlotRange,
  checkRanges,
  formatRanges,
  normalizeRanges,
  rangeElements,
  rangesLength,
  slotElements,
  slotStart,
} from '../../../cluster/slots.js';
import { rng, randInt } from '../../helpers/random.js';

/** ⌊s·D/S⌋ in exact integer arithmetic: the definition the float code must match. */
function exactStart(s: number, d: number, slots: number): number {
  return Number((BigInt(s) * BigInt(d)) / BigInt(slots));
}

/**
 * Checks slot boundaries for (D, S): exact, starting at 0, ending at D, sizes
 * ⌊D/S⌋ or ⌈D/S⌉. Plain comparisons in the loop, one assertion at the end:
 * it runs over hundreds of thousands of slots.
 */
function checkBoundaries(d: number, slots: number, which: Iterable<number>): void {
  const lo = Math.floor(d / slots);
  const hi = Math.ceil(d / slots);
  expect(slotStart(0, d, slots), `start of slot 0 (D=${d}, S=${slots})`).to.equal(0);
  expect(slotStart(slots, d, slots), `end of slot S-1 (D=${d}, S=${slots})`).to.equal(d);
  let failure: string | null = null;
  for (const s of which) {
    const { start, end } = slotElements(s, d, slots);
    const [x, y] = [exactStart(s, d, slots), exactStart(s + 1, d, slots)];
    if (start !== x || end !== y || end - start < lo || end - start > hi) {
      failure = `slot ${s} (D=${d}, S=${slots}) holds [${start}, ${end}), expected [${x}, ${y}) of size ${lo} or ${hi}`;
      break;
    }
  }
  expect(failure).to.equal(null);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

describe('cluster/slots', () => {
  it('has 1024 slots by default', () => {
    expect(DEFAULT_SLOTS).to.equal(1024);
  });

  describe('slot boundaries', () => {
    const elementCounts = [1, 2, 3, 5, 7, 10, 100, 999, 1000, 1023, 1024, 1025, 4097, 10_007];
    const slotCounts = [1, 2, 3, 7, 16, 1000, 1024, 4096];

    it('cover every element exactly once, in order, for many (D, S) including D < S and D not divisible by S', () => {
      for (const d of elementCounts) {
        for (const slots of slotCounts) {
          const hits = new Uint8Array(d);
          let next = 0; // where the next slot must start
          let gap: string | null = null;
          for (let s = 0; s < slots && !gap; s++) {
            const { start, end } = slotElements(s, d, slots);
            if (start !== next || end < start) gap = `slot ${s} holds [${start}, ${end}) but slot ${s - 1} ended at ${next} (D=${d}, S=${slots})`;
            for (let i = start; i < end; i++) hits[i]!++;
            next = end;
          }
          expect(gap).to.equal(null);
          expect(next, `the last slot ends at D=${d} (S=${slots})`).to.equal(d);
          const wrong = hits.findIndex((h) => h !== 1);
          expect(wrong, `element ${wrong} covered ${hits[wrong]} times (D=${d}, S=${slots})`).to.equal(-1);
          checkBoundaries(d, slots, range(slots));
        }
      }
    });

    it('leaves slots empty when D < S, and never gives a slot two more elements than another', () => {
      // D=3 over 8 slots: ⌊s·3/8⌋ = 0,0,0,1,1,1,2,2,3 → sizes 0,0,1,0,0,1,0,1.
      expect(range(9).map((s) => slotStart(s, 3, 8))).to.deep.equal([0, 0, 0, 1, 1, 1, 2, 2, 3]);
      const sizes = range(8).map((s) => {
        const { start, end } = slotElements(s, 3, 8);
        return end - start;
      });
      expect(sizes).to.deep.equal([0, 0, 1, 0, 0, 1, 0, 1]);
      expect(rangesLength([{ begin: 0, end: 8 }], 3, 8)).to.equal(3);
    });

    it('maps D = 0 to empty slots (a model needs D ≥ 1, but the arithmetic stays defined)', () => {
      for (const slots of [1, 7, 1024]) {
        for (let s = 0; s <= slots; s++) expect(slotStart(s, 0, slots)).to.equal(0);
        expect(rangesLength([{ begin: 0, end: slots }], 0, slots)).to.equal(0);
      }
    });

    it('splits 10 elements over 4 slots as 2,3,2,3', () => {
      expect(range(5).map((s) => slotStart(s, 10, 4))).to.deep.equal([0, 2, 5, 7, 10]);
    });

    it('is exact for large D (16M, 2^31 + 7, 2^32 − 1, 2^40 + 3), checking only boundaries', () => {
      for (const d of [16 * 1024 * 1024, 16 * 1024 * 1024 + 1, 2 ** 31 + 7, 2 ** 32 - 1, 2 ** 40 + 3]) {
        for (const slots of [1, 3, 1000, 1024, 65_536]) {
          // Exactness is documented for D·S < 2^53 only.
          if (d * slots >= 2 ** 53) continue;
          checkBoundaries(d, slots, range(slots));
          expect(rangesLength([{ begin: 0, end: slots }], d, slots)).to.equal(d);
        }
      }
    });

    it('matches exact integer arithmetic for random (D, S) from a seeded generator', () => {
      const next = rng(0x5107);
      for (let trial = 0; trial < 300; trial++) {
        const slots = trial % 3 === 0 ? randInt(next, 1, 64) : randInt(next, 1, 65_536);
        const d = trial % 2 === 0 ? randInt(next, 0, 5 * slots) : randInt(next, 0, 2 ** 32);
        const sample = [0, slots - 1, ...range(64).map(() => randInt(next, 0, slots - 1))];
        checkBoundaries(d, slots, sample);
      }
    });
  });

  describe('rangeElements and rangesLength', () => {
    it('agree with the slots they span, for random ranges', () => {
      const next = rng(42);
      for (let trial = 0; trial < 500; trial++) {
        const slots = randInt(next, 1, 2048);
        const d = randInt(next, 0, 100_000);
        const a = randInt(next, 0, slots);
        const b = randInt(next, 0, slots);
        const r = { begin: Math.min(a, b), end: Math.max(a, b) };
        const { start, end } = rangeElements(r, d, slots);
        expect(start).to.equal(exactStart(r.begin, d, slots));
        expect(end).to.equal(exactStart(r.end, d, slots));
        if (r.end > r.begin) {
          expect(start).to.equal(slotElements(r.begin, d, slots).start);
          expect(end).to.equal(slotElements(r.end - 1, d, slots).end);
        }
        expect(rangesLength([r], d, slots)).to.equal(end - start);
      }
    });

    it('sums the lengths of several runs, and the whole key space holds D', () => {
      const d = 10_007;
      const slots = 1024;
      const runs: SlotRange[] = [
        { begin: 0, end: 10 },
        { begin: 100, end: 101 },
        { begin: 500, end: 1024 },
      ];
      const expected = runs.reduce((n, r) => n + (exactStart(r.end, d, slots) - exactStart(r.begin, d, slots)), 0);
      expect(rangesLength(runs, d, slots)).to.equal(expected);
      expect(rangesLength([], d, slots)).to.equal(0);
      // Splitting the key space anywhere keeps the total.
      for (const cut of [1, 2, 511, 512, 1023]) {
        expect(rangesLength([{ begin: 0, end: cut }, { begin: cut, end: slots }], d, slots)).to.equal(d);
      }
    });
  });

  describe('normalizeRanges', () => {
    it('sorts, merges touching and overlapping runs, and drops empty ones', () => {
      expect(normalizeRanges([{ begin: 0, end: 3 }, { begin: 3, end: 5 }])).to.deep.equal([{ begin: 0, end: 5 }]);
      expect(
        normalizeRanges([
          { begin: 10, end: 12 },
          { begin: 0, end: 2 },
          { begin: 1, end: 4 },
          { begin: 7, end: 7 },
          { begin: 9, end: 8 },
          { begin: 11, end: 20 },
          { begin: 5, end: 6 },
        ]),
      ).to.deep.equal([
        { begin: 0, end: 4 },
        { begin: 5, end: 6 },
        { begin: 10, end: 20 },
      ]);
      expect(normalizeRanges([{ begin: 0, end: 10 }, { begin: 2, end: 3 }])).to.deep.equal([{ begin: 0, end: 10 }]);
      expect(normalizeRanges([])).to.deep.equal([]);
      expect(normalizeRanges([{ begin: 4, end: 4 }])).to.deep.equal([]);
    });

    it('does not modify its input', () => {
      const input = [
        { begin: 3, end: 5 },
        { begin: 0, end: 3 },
      ];
      const copy = structuredClone(input);
      const out = normalizeRanges(input);
      expect(input).to.deep.equal(copy);
      out[0]!.end = 99;
      expect(input).to.deep.equal(copy);
    });

    it('keeps the set of slots, and its output is valid, disjoint, non-touching and idempotent (random)', () => {
      const next = rng(7);
      for (let trial = 0; trial < 300; trial++) {
        const slots = randInt(next, 1, 200);
        const input = range(randInt(next, 0, 12)).map(() => {
          const a = randInt(next, 0, slots);
          const b = randInt(next, 0, slots);
          return { begin: Math.min(a, b), end: Math.max(a, b) };
        });
        const covered = new Set<number>();
        for (const r of input) for (let s = r.begin; s < r.end; s++) covered.add(s);
        const out = normalizeRanges(input);
        const outCovered = new Set<number>();
        for (const r of out) for (let s = r.begin; s < r.end; s++) outCovered.add(s);
        expect([...outCovered].sort((x, y) => x - y)).to.deep.equal([...covered].sort((x, y) => x - y));
        if (out.length > 0) expect(checkRanges(out, slots)).to.equal(null);
        for (let i = 1; i < out.length; i++) expect(out[i]!.begin, 'merged runs do not touch').to.be.above(out[i - 1]!.end);
        expect(normalizeRanges(out)).to.deep.equal(out);
      }
    });
  });

  describe('checkRanges', () => {
    it('accepts ordered, disjoint, in-range runs (touching is fine)', () => {
      expect(checkRanges([{ begin: 0, end: 1024 }], 1024)).to.equal(null);
      expect(checkRanges([{ begin: 0, end: 1 }], 1)).to.equal(null);
      expect(checkRanges([{ begin: 0, end: 3 }, { begin: 3, end: 5 }, { begin: 9, end: 10 }], 10)).to.equal(null);
    });

    const cases: { name: string; ranges: SlotRange[]; slots: number; reason: RegExp }[] = [
      { name: 'no ranges', ranges: [], slots: 8, reason: /no slot ranges/ },
      { name: 'a fractional begin', ranges: [{ begin: 1.5, end: 3 }], slots: 8, reason: /not integral/ },
      { name: 'a fractional end', ranges: [{ begin: 1, end: 2.25 }], slots: 8, reason: /not integral/ },
      { name: 'a NaN bound', ranges: [{ begin: Number.NaN, end: 2 }], slots: 8, reason: /not integral/ },
      { name: 'an infinite end', ranges: [{ begin: 0, end: Number.POSITIVE_INFINITY }], slots: 8, reason: /not integral/ },
      { name: 'an empty run', ranges: [{ begin: 3, end: 3 }], slots: 8, reason: /empty/ },
      { name: 'a reversed run', ranges: [{ begin: 5, end: 2 }], slots: 8, reason: /empty/ },
      { name: 'an empty run after a good one', ranges: [{ begin: 0, end: 2 }, { begin: 4, end: 4 }], slots: 8, reason: /empty/ },
      { name: 'an end past the last slot', ranges: [{ begin: 0, end: 9 }], slots: 8, reason: /exceeds the 8 slots/ },
      { name: 'a begin past the last slot', ranges: [{ begin: 8, end: 9 }], slots: 8, reason: /exceeds the 8 slots/ },
      { name: 'overlapping runs', ranges: [{ begin: 0, end: 4 }, { begin: 3, end: 6 }], slots: 8, reason: /overlap or are out of order/ },
      { name: 'runs out of order', ranges: [{ begin: 4, end: 6 }, { begin: 0, end: 2 }], slots: 8, reason: /overlap or are out of order/ },
      { name: 'the same run twice', ranges: [{ begin: 1, end: 2 }, { begin: 1, end: 2 }], slots: 8, reason: /overlap or are out of order/ },
      // Not reachable over the wire (uint32), but a caller in-process could pass it.
      { name: 'a negative begin', ranges: [{ begin: -1, end: 2 }], slots: 8, reason: /\[-1, 2\)/ },
    ];
    for (const c of cases) {
      it(`rejects ${c.name}, naming the reason`, () => {
        const reason = checkRanges(c.ranges, c.slots);
        expect(reason).to.be.a('string');
        expect(reason).to.match(c.reason);
      });
    }
  });

  it('formats ranges for people', () => {
    expect(formatRanges([{ begin: 0, end: 512 }, { begin: 768, end: 1024 }])).to.equal('0-511,768-1023');
    expect(formatRanges([{ begin: 5, end: 6 }])).to.equal('5');
    expect(formatRanges([])).to.equal('');
  });
});
