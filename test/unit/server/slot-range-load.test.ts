import { expect } from 'chai';
import fc from 'fast-check';
import { type SlotRange, normalizeRanges, slotStart } from '../../../cluster/slots.js';
import { MAX_SLOT_RANGES, slotRangeLabel, slotRangeWidth, splitOverSlotRanges } from '../../../server/slot-range-load.js';

/** What splitOverSlotRanges visits, as [range index, bytes] pairs. */
function split(ranges: SlotRange[], bytes: number, elements: number, slots: number): [number, number][] {
  const out: [number, number][] = [];
  splitOverSlotRanges(ranges, bytes, elements, slots, slotRangeWidth(slots), (i, b) => out.push([i, b]));
  return out;
}

describe('server/slot-range-load: requests split over counted slot ranges', () => {
  it('cuts any slot count into at most 64 ranges, labelled by first and last slot', () => {
    expect(slotRangeWidth(1024)).to.equal(16);
    expect(slotRangeWidth(16)).to.equal(1);
    expect(slotRangeWidth(16384)).to.equal(256);
    expect(slotRangeWidth(1000)).to.equal(16);
    for (const slots of [1, 7, 64, 65, 1000, 1024, 16384]) expect(Math.ceil(slots / slotRangeWidth(slots))).to.be.at.most(MAX_SLOT_RANGES);
    expect(slotRangeLabel(0, 16, 1024)).to.equal('0-15');
    expect(slotRangeLabel(63, 16, 1024)).to.equal('1008-1023');
    expect(slotRangeLabel(62, 16, 1000)).to.equal('992-999');
    expect(slotRangeLabel(5, 1, 16)).to.equal('5');
  });

  it('gives each range it touches a share by its values, once, and the shares sum to the bytes', () => {
    // 4 values a slot: [0, 16) and [100, 130) of 1024 slots touch ranges 0, 6, 7 and 8.
    expect(split([{ begin: 0, end: 16 }, { begin: 100, end: 130 }], 46 * 16, 4096, 1024)).to.deep.equal([
      [0, 256],
      [6, 12 * 16],
      [7, 16 * 16],
      [8, 2 * 16],
    ]);
    // Two ranges of a request inside one counted range: one visit.
    expect(split([{ begin: 0, end: 2 }, { begin: 5, end: 7 }], 100, 4096, 1024)).to.deep.equal([[0, 100]]);
  });

  it('for any checked ranges, model size and byte count: shares are whole, never negative, in range order, and sum exactly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 0, max: 1 << 20 }), fc.array(fc.tuple(fc.nat(4999), fc.nat(4999)), { minLength: 1, maxLength: 8 }), fc.nat(2 ** 33), (slots, elements, pairs, bytes) => {
        const ranges = normalizeRanges(pairs.map(([a, b]) => ({ begin: Math.min(a, b) % slots, end: (Math.max(a, b) % slots) + 1 })).filter((r) => r.end > r.begin));
        if (ranges.length === 0) return;
        const values = ranges.reduce((n, r) => n + slotStart(r.end, elements, slots) - slotStart(r.begin, elements, slots), 0);
        const visits = split(ranges, values > 0 ? bytes : 0, elements, slots);
        const indices = visits.map(([i]) => i);
        expect(indices).to.deep.equal([...new Set(indices)].sort((a, b) => a - b));
        for (const [, b] of visits) expect(Number.isInteger(b) && b >= 0).to.equal(true);
        expect(visits.reduce((n, [, b]) => n + b, 0)).to.equal(values > 0 ? bytes : 0);
      }),
    );
  });
});
