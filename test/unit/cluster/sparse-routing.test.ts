import { expect } from 'chai';
import { ResourceExhaustedError } from '../../../cluster/errors.js';
import { type ShardMap } from '../../../cluster/shard-map.js';
import { rowSlot, tableHash } from '../../../cluster/sparse-keys.js';
import { type IdGroups, type SparseBatch, groupIds, routeIds, rowCount, scatterRows, splitBatch, sumRows } from '../../../cluster/sparse-routing.js';

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

const T = tableHash('items');
const SLOTS = 32;

/** 3 shards, slots dealt round-robin so every shard owns many non-adjacent slots. */
function map(): ShardMap {
  const ids = ['a', 'b', 'c'];
  return { epoch: 4, slots: SLOTS, owners: Array.from({ length: SLOTS }, (_, s) => ids[s % 3]!), addresses: { a: 'h:1', b: 'h:2', c: 'h:3' } };
}

/** n ids (halves) drawn from a pool of `distinct`, so many repeat; some have a high half. */
function randomIds(next: () => number, n: number, distinct: number): Uint32Array {
  const pool = Array.from({ length: distinct }, (_, i) => [next(), i % 2 === 0 ? 0 : next()] as const);
  const out = new Uint32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const [lo, hi] = pool[next() % distinct]!;
    out[2 * i] = lo;
    out[2 * i + 1] = hi;
  }
  return out;
}

/**
 * The invariants of a grouping of the caller's positions `expected`: each
 * expected position appears once; a row's id is the id at each of its
 * positions; rows are distinct; slots ascend and are each row's slot; a row's
 * positions keep their given order.
 */
function checkGroups(g: IdGroups, ids: Uint32Array, expected: readonly number[]): void {
  const rows = rowCount(g);
  expect(g.rowStart.length).to.equal(rows + 1);
  expect(g.rowStart[rows]).to.equal(g.positions.length);
  expect([...g.positions].sort((x, y) => x - y)).to.deep.equal([...expected].sort((x, y) => x - y));
  const order = new Map(expected.map((p, i) => [p, i]));
  const seen = new Set<string>();
  for (let r = 0; r < rows; r++) {
    const lo = g.ids[2 * r]!;
    const hi = g.ids[2 * r + 1]!;
    const key = `${lo}:${hi}`;
    expect(seen.has(key), `row ${key} twice`).to.equal(false);
    seen.add(key);
    expect(g.slots[r]).to.equal(rowSlot(T, lo, hi, SLOTS));
    if (r > 0) expect(g.slots[r]).to.be.at.least(g.slots[r - 1]!);
    expect(g.rowStart[r + 1]!).to.be.greaterThan(g.rowStart[r]!);
    let prev = -1;
    for (let k = g.rowStart[r]!; k < g.rowStart[r + 1]!; k++) {
      const p = g.positions[k]!;
      expect([ids[2 * p], ids[2 * p + 1]]).to.deep.equal([lo, hi]);
      expect(order.get(p)!).to.be.greaterThan(prev);
      prev = order.get(p)!;
    }
  }
}

describe('cluster/sparse-routing', () => {
  it('groups ids into distinct rows by slot, every position accounted for', () => {
    const next = rng(3);
    for (let trial = 0; trial < 8; trial++) {
      const n = 1 + (next() % 300);
      const ids = randomIds(next, n, 1 + (next() % 100));
      checkGroups(groupIds(ids, T, SLOTS), ids, Array.from({ length: n }, (_, i) => i));
    }
  });

  it('orders a slot\'s rows by first appearance', () => {
    // Ids 0..999: find two in one slot, give them in both orders.
    const bySlot = new Map<number, number[]>();
    for (let i = 0; i < 1000; i++) bySlot.set(rowSlot(T, i, 0, SLOTS), [...(bySlot.get(rowSlot(T, i, 0, SLOTS)) ?? []), i]);
    const [x, y] = [...bySlot.values()].find((v) => v.length >= 2)!;
    for (const pair of [[x!, y!], [y!, x!]]) {
      const g = groupIds(new Uint32Array([pair[0]!, 0, pair[1]!, 0, pair[0]!, 0]), T, SLOTS);
      expect(Array.from(g.ids)).to.deep.equal([pair[0], 0, pair[1], 0]);
      expect(Array.from(g.positions)).to.deep.equal([0, 2, 1]);
    }
  });

  it('routes every row to the shard that owns its slot, with the caller\'s positions', () => {
    const next = rng(4);
    const m = map();
    for (let trial = 0; trial < 8; trial++) {
      const n = 1 + (next() % 400);
      const ids = randomIds(next, n, 1 + (next() % 200));
      const batches = routeIds(ids, T, m);
      const all: number[] = [];
      for (const b of batches) {
        expect(b.address).to.equal(m.addresses[b.shardId]);
        for (const s of b.slots) expect(m.owners[s]).to.equal(b.shardId);
        checkGroups(b, ids, [...b.positions].sort((x, y) => x - y));
        all.push(...b.positions);
      }
      expect(new Set(batches.map((b) => b.shardId)).size).to.equal(batches.length);
      expect(all.sort((x, y) => x - y)).to.deep.equal(Array.from({ length: n }, (_, i) => i));
    }
  });

  it('re-routes a subset of positions (a failed batch) keeping each row\'s order', () => {
    const next = rng(5);
    const ids = randomIds(next, 500, 60);
    const [first] = routeIds(ids, T, map());
    const again = routeIds(ids, T, { ...map(), owners: new Array<string>(SLOTS).fill('b'), epoch: 5 }, first!.positions);
    expect(again).to.have.length(1);
    checkGroups(again[0]!, ids, Array.from(first!.positions));
    expect(Array.from(again[0]!.ids)).to.deep.equal(Array.from(first!.ids));
  });

  it('splits a batch into parts within the limit; a push\'s parts hold whole slots', () => {
    const next = rng(6);
    const ids = randomIds(next, 2000, 900);
    const batch: SparseBatch = { ...groupIds(ids, T, SLOTS), shardId: 'a', address: 'h:1' };
    const rows = rowCount(batch);
    for (const wholeSlots of [false, true]) {
      const parts = splitBatch(batch, 72, 72 * 100, wholeSlots);
      expect(parts.length).to.be.greaterThan(rows / 100 - 1);
      const ids2: number[] = [];
      const positions: number[] = [];
      for (let i = 0; i < parts.length; i++) {
        const p = parts[i]!;
        expect(rowCount(p)).to.be.at.most(100).and.at.least(1);
        checkGroups(p, ids, Array.from(p.positions));
        ids2.push(...p.ids);
        positions.push(...p.positions);
        if (wholeSlots && i > 0) expect(p.slots[0]).to.not.equal(parts[i - 1]!.slots[rowCount(parts[i - 1]!) - 1]);
      }
      expect(ids2).to.deep.equal(Array.from(batch.ids));
      expect(positions).to.deep.equal(Array.from(batch.positions));
    }
    expect(splitBatch(batch, 72, 72 * rows, true)).to.deep.equal([batch]);
  });

  it('refuses to split one slot (push) or one row over the limit', () => {
    const ids = new Uint32Array(2 * 50);
    // 50 ids of one slot.
    let n = 0;
    for (let i = 0; n < 50; i++) if (rowSlot(T, i, 0, SLOTS) === 3) ids[2 * n++] = i;
    const batch: SparseBatch = { ...groupIds(ids, T, SLOTS), shardId: 'a', address: 'h:1' };
    expect(() => splitBatch(batch, 8, 8 * 10, true)).to.throw(ResourceExhaustedError, /slot 3 alone/);
    expect(splitBatch(batch, 8, 8 * 10, false)).to.have.length(5);
    expect(() => splitBatch(batch, 100, 99, false)).to.throw(ResourceExhaustedError, /one sparse row/);
  });

  it('sums a repeated id\'s gradients in float64, in order, rounded once; scatters rows back', () => {
    const dim = 3;
    // id 7 at positions 0, 2, 3; id 9 at 1.
    const ids = new Uint32Array([7, 0, 9, 0, 7, 0, 7, 0]);
    const g = groupIds(ids, T, SLOTS);
    const grads = new Float32Array([1e8, 1, 0.1, /**/ 5, 6, 7, /**/ 1, 2, 0.2, /**/ -1e8, 3, 0.3]);
    const sums = sumRows(g, grads, dim);
    const r7 = g.ids[0] === 7 ? 0 : 1;
    const r9 = 1 - r7;
    // In float32 step by step 1e8 + 1 would lose the 1; float64 keeps it.
    expect(Array.from(sums.subarray(r7 * dim, r7 * dim + dim))).to.deep.equal([1, 6, Math.fround(Math.fround(0.1) + Math.fround(0.2) + Math.fround(0.3))]);
    expect(Array.from(sums.subarray(r9 * dim, r9 * dim + dim))).to.deep.equal([5, 6, 7]);
    const out = new Float32Array(4 * dim);
    scatterRows(g, sums, dim, out);
    for (const p of [0, 2, 3]) expect(Array.from(out.subarray(p * dim, p * dim + dim))).to.deep.equal(Array.from(sums.subarray(r7 * dim, r7 * dim + dim)));
    expect(Array.from(out.subarray(dim, 2 * dim))).to.deep.equal([5, 6, 7]);
  });
});
