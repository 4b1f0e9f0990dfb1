import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { type ShardBatch, allSlots, route } from '../../../cluster/routing.js';
import { type ShardMap, evenAssignment, ownedRanges, slotCounts, validateMap } from '../../../cluster/shard-map.js';
import { type SlotRange, normalizeRanges, rangesLength, slotStart } from '../../../cluster/slots.js';
import { rng, randInt } from '../../helpers/random.js';

const ADDRESSES: Record<string, string> = { a: '10.0.0.1:7000', b: '10.0.0.2:7000', c: '10.0.0.3:7000' };

function mapOf(owners: string[], epoch = 1): ShardMap {
  const addresses = Object.fromEntries(Object.entries(ADDRESSES).filter(([id]) => owners.includes(id)));
  return { epoch, slots: owners.length, owners, addresses };
}

/** Slot s's elements, from the definition ⌊s·D/S⌋. */
function start(s: number, d: number, slots: number): number {
  return Math.floor((s * d) / slots);
}

/**
 * The invariants every routing must keep, checked against the request:
 * each routed piece is owned by its batch's shard, lies inside one requested
 * run, and its offset is where its elements sit in the caller's concatenation;
 * pieces tile the caller's vector without gap or overlap; lengths add up.
 */
function checkRouting(ranges: readonly SlotRange[], map: ShardMap, d: number, batches: ShardBatch[]): void {
  // Where each requested slot's elements sit in the caller's vector.
  const callerOffset = new Map<number, number>();
  let total = 0;
  for (const r of ranges) {
    for (let s = r.begin; s < r.end; s++) {
      callerOffset.set(s, total);
      total += start(s + 1, d, map.slots) - start(s, d, map.slots);
    }
  }
  expect(batches.reduce((n, b) => n + b.length, 0), 'batch lengths sum to the request').to.equal(total);
  expect(new Set(batches.map((b) => b.shardId)).size, 'one batch per shard').to.equal(batches.length);
  const pieces: { begin: number; end: number; offset: number; length: number }[] = [];
  for (const b of batches) {
    expect(b.address).to.equal(map.addresses[b.shardId]);
    expect(b.ranges.reduce((n, r) => n + r.length, 0), `batch ${b.shardId}'s length`).to.equal(b.length);
    for (let i = 1; i < b.ranges.length; i++) expect(b.ranges[i]!.offset, 'a batch lists its runs in request order').to.be.at.least(b.ranges[i - 1]!.offset);
    for (const r of b.ranges) {
      expect(r.end, 'a routed run is not empty').to.be.above(r.begin);
      for (let s = r.begin; s < r.end; s++) expect(map.owners[s], `slot ${s} routed to ${b.shardId}`).to.equal(b.shardId);
      expect(ranges.some((q) => q.begin <= r.begin && r.end <= q.end), `[${r.begin}, ${r.end}) lies inside one requested run`).to.equal(true);
      expect(r.offset, `offset of [${r.begin}, ${r.end})`).to.equal(callerOffset.get(r.begin));
      expect(r.length, `length of [${r.begin}, ${r.end})`).to.equal(start(r.end, d, map.slots) - start(r.begin, d, map.slots));
      pieces.push(r);
    }
  }
  // Together the pieces cover each requested slot once.
  const routedSlots = pieces.flatMap((p) => Array.from({ length: p.end - p.begin }, (_, i) => p.begin + i)).sort((x, y) => x - y);
  expect(routedSlots).to.deep.equal([...callerOffset.keys()].sort((x, y) => x - y));
  // And tile the caller's vector in order.
  pieces.sort((x, y) => x.offset - y.offset || x.begin - y.begin);
  let at = 0;
  for (const p of pieces) {
    expect(p.offset, `piece [${p.begin}, ${p.end}) starts where the previous ended`).to.equal(at);
    at += p.length;
  }
  expect(at).to.equal(total);
}

describe('cluster/routing', () => {
  describe('route', () => {
    it('sends everything to the only shard, as one run', () => {
      const map = mapOf(Array<string>(8).fill('a'));
      const batches = route(allSlots(map), map, 100);
      expect(batches).to.deep.equal([{ shardId: 'a', address: ADDRESSES['a'], length: 100, ranges: [{ begin: 0, end: 8, offset: 0, length: 100 }] }]);
    });

    it('splits the key space between two even shards at the slot boundary', () => {
      const map = mapOf(evenAssignment(['b', 'a'], 8));
      // 101 elements over 8 slots: slot 4 starts at ⌊4·101/8⌋ = 50.
      const batches = route(allSlots(map), map, 101);
      expect(batches).to.deep.equal([
        { shardId: 'a', address: ADDRESSES['a'], length: 50, ranges: [{ begin: 0, end: 4, offset: 0, length: 50 }] },
        { shardId: 'b', address: ADDRESSES['b'], length: 51, ranges: [{ begin: 4, end: 8, offset: 50, length: 51 }] },
      ]);
    });

    it('gives each shard one run per stretch it owns when owners interleave', () => {
      // 10 elements over 4 slots: slot sizes 2,3,2,3.
      const map = mapOf(['a', 'b', 'a', 'b']);
      const batches = route(allSlots(map), map, 10);
      expect(batches).to.deep.equal([
        {
          shardId: 'a',
          address: ADDRESSES['a'],
          length: 4,
          ranges: [
            { begin: 0, end: 1, offset: 0, length: 2 },
            { begin: 2, end: 3, offset: 5, length: 2 },
          ],
        },
        {
          shardId: 'b',
          address: ADDRESSES['b'],
          length: 6,
          ranges: [
            { begin: 1, end: 2, offset: 2, length: 3 },
            { begin: 3, end: 4, offset: 7, length: 3 },
          ],
        },
      ]);
    });

    it("puts offsets in the caller's vector, not the model's, for a request of several runs", () => {
      // 16 slots of 10 elements; owners a a a a b b b b c c c c a a a a.
      const owners = [...'aaaabbbbccccaaaa'];
      const map = mapOf(owners);
      const request = [
        { begin: 2, end: 6 }, // a:2-3, b:4-5 → caller elements [0, 40)
        { begin: 7, end: 9 }, // b:7, c:8     → [40, 60)
        { begin: 11, end: 14 }, // c:11, a:12-13 → [60, 90)
      ];
      const batches = route(request, map, 160);
      expect(batches).to.deep.equal([
        {
          shardId: 'a',
          address: ADDRESSES['a'],
          length: 40,
          ranges: [
            { begin: 2, end: 4, offset: 0, length: 20 },
            { begin: 12, end: 14, offset: 70, length: 20 },
          ],
        },
        {
          shardId: 'b',
          address: ADDRESSES['b'],
          length: 30,
          ranges: [
            { begin: 4, end: 6, offset: 20, length: 20 },
            { begin: 7, end: 8, offset: 40, length: 10 },
          ],
        },
        {
          shardId: 'c',
          address: ADDRESSES['c'],
          length: 20,
          ranges: [
            { begin: 8, end: 9, offset: 50, length: 10 },
            { begin: 11, end: 12, offset: 60, length: 10 },
          ],
        },
      ]);
      checkRouting(request, map, 160, batches);
    });

    it('does not merge touching requested runs across the request boundary', () => {
      // The caller asked for two runs; each routed run stays inside one of them.
      const map = mapOf(Array<string>(4).fill('a'));
      const batches = route([{ begin: 0, end: 2 }, { begin: 2, end: 4 }], map, 40);
      expect(batches[0]!.ranges).to.deep.equal([
        { begin: 0, end: 2, offset: 0, length: 20 },
        { begin: 2, end: 4, offset: 20, length: 20 },
      ]);
    });

    it('routes empty slots (D < S) with zero-length runs and keeps the total', () => {
      const map = mapOf(['a', 'b', 'a', 'b', 'a', 'b', 'a', 'b']);
      const batches = route(allSlots(map), map, 3);
      checkRouting(allSlots(map), map, 3, batches);
      expect(batches.reduce((n, b) => n + b.length, 0)).to.equal(3);
    });

    it('keeps every invariant for random maps and requests (seeded)', () => {
      const next = rng(2024);
      for (let trial = 0; trial < 300; trial++) {
        const slots = randInt(next, 1, 300);
        const d = trial % 4 === 0 ? randInt(next, 0, slots) : randInt(next, slots, 50_000);
        const ids = ['a', 'b', 'c'].slice(0, randInt(next, 1, 3));
        // Runs of random length with random owners.
        const owners: string[] = [];
        while (owners.length < slots) {
          const id = ids[randInt(next, 0, ids.length - 1)]!;
          for (let k = randInt(next, 1, 20); k > 0 && owners.length < slots; k--) owners.push(id);
        }
        const map = mapOf(owners, randInt(next, 1, 100));
        let request = normalizeRanges(
          Array.from({ length: randInt(next, 1, 6) }, () => {
            const x = randInt(next, 0, slots);
            const y = randInt(next, 0, slots);
            return { begin: Math.min(x, y), end: Math.max(x, y) };
          }),
        );
        if (request.length === 0) request = allSlots(map);
        const batches = route(request, map, d);
        checkRouting(request, map, d, batches);
        expect(batches.reduce((n, b) => n + b.length, 0)).to.equal(rangesLength(request, d, slots));
      }
    });

    it('is pure: the same input gives the same batches and the map is untouched', () => {
      const map = mapOf([...'abcabcab']);
      const snapshot = structuredClone(map);
      const first = route(allSlots(map), map, 1000);
      const second = route(allSlots(map), map, 1000);
      expect(second).to.deep.equal(first);
      expect(map).to.deep.equal(snapshot);
    });
  });

  describe('evenAssignment', () => {
    it('owns every slot, in contiguous runs whose sizes differ by at most one', () => {
      for (const n of [1, 2, 3, 5, 7, 16, 100]) {
        for (const slots of [1, 2, 3, 10, 100, 1000, 1024, 4096]) {
          const ids = Array.from({ length: n }, (_, i) => `shard-${String(i).padStart(3, '0')}`);
          const owners = evenAssignment(ids, slots);
          expect(owners.length).to.equal(slots);
          let unowned = -1;
          for (let s = 0; s < slots; s++) if (!ids.includes(owners[s]!)) unowned = s;
          expect(unowned, `slot ${unowned} of ${slots} over ${n} shards is unowned`).to.equal(-1);
          const map: ShardMap = { epoch: 1, slots, owners, addresses: Object.fromEntries(ids.map((id) => [id, `h:${id}`])) };
          const sizes = ids.map((id) => {
            const runs = ownedRanges(map, id);
            expect(runs.length, `${id} owns one contiguous run`).to.be.at.most(1);
            return runs.reduce((k, r) => k + r.end - r.begin, 0);
          });
          expect(Math.max(...sizes) - Math.min(...sizes), `sizes ${sizes.join(',')}`).to.be.at.most(1);
          expect(sizes.reduce((a, b) => a + b, 0)).to.equal(slots);
          expect(() => validateMap(map)).to.not.throw();
        }
      }
    });

    it('does not depend on the order shard ids are given in, and leaves the input alone', () => {
      const ids = ['c', 'a', 'b'];
      const owners = evenAssignment(ids, 9);
      expect(owners).to.deep.equal([...'aaabbbccc']);
      expect(evenAssignment(['b', 'c', 'a'], 9)).to.deep.equal(owners);
      expect(ids).to.deep.equal(['c', 'a', 'b']);
    });

    it('leaves some shards without slots when there are more shards than slots', () => {
      const owners = evenAssignment(['a', 'b', 'c', 'd', 'e'], 2);
      expect(owners.length).to.equal(2);
      expect(new Set(owners).size).to.equal(2);
    });

    it('refuses zero shards', () => {
      expect(() => evenAssignment([], 16)).to.throw(InvalidArgumentError, /zero shards/);
    });
  });

  describe('validateMap', () => {
    const good = (): ShardMap => ({ epoch: 3, slots: 4, owners: ['a', 'a', 'b', 'b'], addresses: { a: 'h:1', b: 'h:2' } });

    it('accepts a map where every slot has an owner with an address', () => {
      expect(() => validateMap(good())).to.not.throw();
    });

    const bad: { name: string; edit: (m: ShardMap) => void; message: RegExp }[] = [
      { name: 'epoch 0', edit: (m) => (m.epoch = 0), message: /epoch must be a positive integer/ },
      { name: 'a negative epoch', edit: (m) => (m.epoch = -2), message: /epoch must be a positive integer/ },
      { name: 'a fractional epoch', edit: (m) => (m.epoch = 1.5), message: /epoch must be a positive integer/ },
      { name: 'a NaN epoch', edit: (m) => (m.epoch = Number.NaN), message: /epoch must be a positive integer/ },
      { name: 'zero slots', edit: (m) => ((m.slots = 0), (m.owners = [])), message: /at least one slot/ },
      { name: 'fractional slots', edit: (m) => (m.slots = 3.5), message: /at least one slot/ },
      { name: 'fewer owners than slots', edit: (m) => m.owners.pop(), message: /lists 3 owners for 4 slots/ },
      { name: 'more owners than slots', edit: (m) => m.owners.push('a'), message: /lists 5 owners for 4 slots/ },
      { name: 'a slot with an empty owner', edit: (m) => (m.owners[2] = ''), message: /slot 2 has no owner/ },
      { name: 'a hole in the owners', edit: (m) => delete m.owners[1], message: /slot 1 has no owner/ },
      { name: 'an owner without an address', edit: (m) => (m.owners[3] = 'z'), message: /slot 3 has no owner with an address/ },
      { name: 'an address removed', edit: (m) => delete m.addresses['a'], message: /slot 0 has no owner with an address/ },
    ];
    for (const c of bad) {
      it(`rejects ${c.name}`, () => {
        const m = good();
        c.edit(m);
        expect(() => validateMap(m)).to.throw(InvalidArgumentError, c.message);
      });
    }
  });

  describe('ownedRanges and slotCounts', () => {
    it('lists the runs a shard owns, in slot order', () => {
      const map = mapOf([...'aabbbacaab']);
      expect(ownedRanges(map, 'a')).to.deep.equal([
        { begin: 0, end: 2 },
        { begin: 5, end: 6 },
        { begin: 7, end: 9 },
      ]);
      expect(ownedRanges(map, 'b')).to.deep.equal([
        { begin: 2, end: 5 },
        { begin: 9, end: 10 },
      ]);
      expect(ownedRanges(map, 'c')).to.deep.equal([{ begin: 6, end: 7 }]);
      expect(ownedRanges(map, 'nobody')).to.deep.equal([]);
      expect(ownedRanges(mapOf([...'aaaa']), 'a')).to.deep.equal([{ begin: 0, end: 4 }]);
    });

    it('partitions the key space: the runs of all shards cover every slot once', () => {
      const next = rng(99);
      const owners = Array.from({ length: 257 }, () => 'abc'[randInt(next, 0, 2)]!);
      const map = mapOf(owners);
      const all = ['a', 'b', 'c'].flatMap((id) => ownedRanges(map, id));
      expect(normalizeRanges(all)).to.deep.equal([{ begin: 0, end: 257 }]);
      expect(all.reduce((n, r) => n + r.end - r.begin, 0)).to.equal(257);
      for (const id of ['a', 'b', 'c']) for (const r of ownedRanges(map, id)) for (let s = r.begin; s < r.end; s++) expect(owners[s]).to.equal(id);
    });

    it('counts slots per shard, including shards that own none', () => {
      const map: ShardMap = { epoch: 1, slots: 5, owners: [...'aabab'], addresses: { a: 'h:1', b: 'h:2', c: 'h:3' } };
      expect([...slotCounts(map).entries()].sort()).to.deep.equal([
        ['a', 3],
        ['b', 2],
        ['c', 0],
      ]);
    });
  });

  it('allSlots is the whole key space as one run', () => {
    expect(allSlots(mapOf([...'ab']))).to.deep.equal([{ begin: 0, end: 2 }]);
    // And its length is D under slotStart.
    expect(slotStart(2, 77, 2)).to.equal(77);
  });
});
