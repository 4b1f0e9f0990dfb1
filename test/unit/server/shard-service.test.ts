import { EventEmitter } from 'node:events';
import { status } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { evenAssignment } from '../../../cluster/shard-map.js';
import { type SlotRange, slotStart } from '../../../cluster/slots.js';
import { floatHeap } from '../../../server/float-heap.js';
import { Shard } from '../../../server/shard.js';
import { GradientPool } from '../../../server/gradient-pool.js';
import { shardImplementation } from '../../../server/shard-service.js';
import { randInt, rng } from '../../helpers/random.js';

/*
 * The push path of the Shard service (server/shard-service.ts) without a
 * network: the handler is driven with stand-in call objects that emit the
 * events grpc-js would, so pushes can interleave, fail at every stage and be
 * checked bit for bit. The gradient pool is the subject: buffers are reused
 * across pushes of different sizes, so a stale or shared buffer would show up
 * as a wrong value.
 */

const SLOTS = 16;
const ELEMENTS = 1000;
const LR = 0.37;
const MODEL: ModelSpec = {
  name: 'pool-model',
  seed: 5,
  tensors: [
    { name: 'w', shape: [25, 24], init: { kind: 'uniform', low: -1, high: 1 } },
    { name: 'b', shape: [400], init: { kind: 'constant', value: 0.25 } },
  ],
};
/** Shard a owns slots [0, 8). */
const OWNED = 8;

function newShard(): Shard {
  const config: ClusterConfig = { name: 'pool', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: LR }), consistency: 'async' };
  const shard = new Shard('a', config);
  shard.setMap({ epoch: 2, slots: SLOTS, owners: evenAssignment(['b', 'a'], SLOTS), addresses: { a: 'a:1', b: 'b:1' } });
  expect(shard.owned()).to.deep.equal([{ begin: 0, end: OWNED }]);
  return shard;
}

const start = (s: number) => slotStart(s, ELEMENTS, SLOTS);

/** The values of slots [0, OWNED), concatenated (they start at element 0). */
function values(shard: Shard): Float32Array {
  const out = new Float32Array(start(OWNED));
  for (let s = 0; s < OWNED; s++) out.set(shard.store.get(s)!.values, start(s));
  return out;
}

/** A pool that records what it lends, to check no two pushes share memory and every buffer comes back. */
class WatchedPool extends GradientPool {
  readonly out = new Set<Float32Array>();
  acquired = 0;
  released = 0;
  fromHeap = 0;

  override acquire(length: number): Float32Array {
    const view = super.acquire(length);
    expect(view.length).to.equal(length);
    for (const other of this.out) {
      const disjoint = other.buffer !== view.buffer || other.byteOffset + other.byteLength <= view.byteOffset || view.byteOffset + view.byteLength <= other.byteOffset;
      expect(disjoint, 'two pushes in flight were lent overlapping buffers').to.equal(true);
    }
    this.out.add(view);
    this.acquired++;
    if (floatHeap()?.holds(view)) this.fromHeap++;
    return view;
  }

  override release(view: Float32Array): void {
    expect(this.out.has(view), 'released a buffer that was not out (twice, or never lent)').to.equal(true);
    this.out.delete(view);
    this.released++;
    super.release(view);
  }
}

interface Outcome {
  err: (Partial<grpc.ServiceError> & { code: number; details: string }) | null;
  res?: { appliedSlots: number; duplicateSlots: number };
}

/** A stand-in for grpc-js's ServerReadableStream: the handler listens, the test emits. */
class FakeCall extends EventEmitter {
  outcome: Outcome | undefined;
  calls = 0;

  constructor(impl: grpc.UntypedServiceImplementation) {
    super();
    const push = impl['push'] as (call: unknown, cb: (err: Outcome['err'], res?: Outcome['res']) => void) => void;
    push(this, (err, res) => {
      this.calls++;
      this.outcome = { err, res };
    });
  }

  data(msg: object): this {
    this.emit('data', { header: null, offset: 0, values: Buffer.alloc(0), ...msg });
    return this;
  }

  end(): Outcome {
    this.emit('end');
    return this.settled();
  }

  settled(): Outcome {
    expect(this.calls, 'the handler answers exactly once').to.equal(1);
    return this.outcome!;
  }
}

/** `g`'s bytes at `lead` bytes into a fresh Buffer (a received field is never aligned). */
function wireBytes(g: Float32Array, lead: number): Buffer {
  const backing = Buffer.alloc(g.byteLength + lead + 3, 0xee);
  Buffer.from(g.buffer, g.byteOffset, g.byteLength).copy(backing, lead);
  return backing.subarray(lead, lead + g.byteLength);
}

describe('server/shard-service: the push buffer pool', () => {
  const header = (ranges: SlotRange[], seq: number, over: object = {}) => ({ epoch: 2, ranges, workerId: 'w', seq, codec: 'CODEC_FLOAT32', model: '', ...over });

  /** Sorted, disjoint ranges inside [0, OWNED). */
  function randomRanges(next: () => number): SlotRange[] {
    const out: SlotRange[] = [];
    let s = randInt(next, 0, OWNED - 1);
    while (s < OWNED) {
      const end = randInt(next, s + 1, Math.min(OWNED, s + 5));
      out.push({ begin: s, end });
      s = end + randInt(next, 0, 3);
      if (next() < 0.4) break;
    }
    return out;
  }

  function lengthOf(ranges: SlotRange[]): number {
    return ranges.reduce((n, r) => n + start(r.end) - start(r.begin), 0);
  }

  function gradient(next: () => number, n: number, poison = false): Float32Array {
    const g = new Float32Array(n);
    for (let i = 0; i < n; i++) g[i] = poison ? 1e6 + i : 2 * next() - 1;
    return g;
  }

  /** Sends `g` in 1–4 chunks cut at random elements, each at a random byte offset. */
  function sendChunks(call: FakeCall, hdr: object, g: Float32Array, next: () => number): void {
    const cuts = new Set([0, g.length]);
    const pieces = randInt(next, 0, 3);
    for (let i = 0; i < pieces; i++) cuts.add(randInt(next, 0, g.length));
    const bounds = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < bounds.length || i === 0; i++) {
      const [a, b] = [bounds[i]!, bounds[i + 1] ?? bounds[i]!];
      call.data({ header: i === 0 ? hdr : null, offset: a, values: wireBytes(g.subarray(a, b), randInt(next, 0, 7)) });
    }
  }

  /**
   * sgd as the shard stores it (w − η·g in float64, rounded once to float32),
   * for the slots of a push (in its order) whose values end in (from, to]:
   * what the shard applies once values [0, to) of the push are in, the slots
   * ending by `from` having been applied before. A slot is applied whole once
   * its last value arrives, never in part (docs/wire-protocol.md, "Push").
   */
  function applySgd(expected: Float32Array, ranges: SlotRange[], g: Float32Array, from = 0, to = g.length): void {
    let j = 0;
    for (const r of ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const end = j + start(s + 1) - start(s);
        if (end > from && end <= to) for (let e = start(s), i = j; e < start(s + 1); e++, i++) expected[e] = expected[e]! - LR * g[i]!;
        j = end;
      }
    }
  }

  function expectValues(shard: Shard, expected: Float32Array, what: string): void {
    const got = values(shard);
    const a = Buffer.from(got.buffer);
    const b = Buffer.from(expected.buffer);
    if (a.equals(b)) return;
    let i = 0;
    while (got[i] === expected[i]) i++;
    expect.fail(`${what}: element ${i} is ${got[i]}, sgd gives ${expected[i]}`);
  }

  it('many pushes of different sizes, interleaved with refused ones: values always exactly sgd’s, a refused push applying exactly its whole slots before the refusal', () => {
    const shard = newShard();
    // A small idle budget, so buffers are also dropped (and freed to the heap) on the way.
    const pool = new WatchedPool(16 << 10);
    const impl = shardImplementation(shard, () => ({}), pool);
    const expected = values(shard);
    const next = rng(2024);
    let seq = 0;
    const refusals: Record<string, number> = {};
    const refused = (kind: string, o: Outcome, match: RegExp) => {
      expect(o.err, `${kind}: refused`).to.not.equal(null);
      expect(o.err!.code, `${kind}: ${o.err!.details}`).to.equal(status.INVALID_ARGUMENT);
      expect(o.err!.details, kind).to.match(match);
      refusals[kind] = (refusals[kind] ?? 0) + 1;
    };

    for (let round = 0; round < 300; round++) {
      const ranges = randomRanges(next);
      const n = lengthOf(ranges);
      const kind = randInt(next, 0, 9);
      const call = new FakeCall(impl);
      const what = `round ${round}, ${n} values`;
      if (kind <= 3) {
        const g = gradient(next, n);
        sendChunks(call, header(ranges, ++seq), g, next);
        const o = call.end();
        expect(o.err, `${what}: ${o.err?.details}`).to.equal(null);
        expect(o.res!.appliedSlots).to.equal(ranges.reduce((k, r) => k + r.end - r.begin, 0));
        applySgd(expected, ranges, g);
      } else if (kind === 4) {
        // Too few values: refused at the end; the slots whose values all came were applied as they came.
        const g = gradient(next, n, true).subarray(0, randInt(next, 0, n - 1));
        sendChunks(call, header(ranges, ++seq), g, next);
        refused('too few', call.end(), /carries \d+ values but its slots hold/);
        applySgd(expected, ranges, g);
      } else if (kind === 5) {
        // Too many: refused on the chunk that overflows, every slot having been applied; later chunks are ignored.
        const g = gradient(next, n + randInt(next, 1, 50), true);
        call.data({ header: header(ranges, ++seq), offset: 0, values: wireBytes(g.subarray(0, n), 1) });
        call.data({ offset: n, values: wireBytes(g.subarray(n), 3) });
        call.data({ offset: g.length, values: wireBytes(g.subarray(0, 4), 2) });
        refused('too many', call.end(), /more than the \d+ values/);
        applySgd(expected, ranges, g.subarray(0, n));
      } else if (kind === 6) {
        // Whole, but with a NaN or ±Inf somewhere: its slot and those after it are refused, those before applied.
        const g = gradient(next, n, true);
        const bad = randInt(next, 0, n - 1);
        g[bad] = [NaN, Infinity, -Infinity][randInt(next, 0, 2)]!;
        sendChunks(call, header(ranges, ++seq), g, next);
        refused('non-finite', call.end(), /non-finite value/);
        applySgd(expected, ranges, g, 0, bad);
      } else if (kind === 7) {
        // A chunk out of order, or one whose bytes are not whole floats.
        const g = gradient(next, n, true);
        call.data({ header: header(ranges, ++seq), offset: 0, values: wireBytes(g.subarray(0, n >> 1), 0) });
        if (next() < 0.5) call.data({ offset: (n >> 1) + 1, values: wireBytes(g.subarray(n >> 1), 1) });
        else call.data({ offset: n >> 1, values: wireBytes(g, 1).subarray(0, 4 * (n - (n >> 1)) - 1) });
        refused('bad chunk', call.end(), /send chunks in order|not a whole number of float32/);
        applySgd(expected, ranges, g, 0, n >> 1);
      } else if (kind === 8) {
        // The call breaks half way (client cancelled, or a transport error): never answered by the handler, nothing more applied.
        const g = gradient(next, n, true);
        call.data({ header: header(ranges, ++seq), offset: 0, values: wireBytes(g.subarray(0, n >> 1), 2) });
        call.emit(next() < 0.5 ? 'cancelled' : 'error', new Error('gone'));
        call.data({ offset: n >> 1, values: wireBytes(g.subarray(n >> 1), 2) });
        call.emit('end');
        expect(call.calls, `${what}: a broken call gets no answer from the handler`).to.equal(0);
        applySgd(expected, ranges, g, 0, n >> 1);
        refusals['broken'] = (refusals['broken'] ?? 0) + 1;
      } else {
        // A second header, or a push for a slot this shard does not own (refused before any buffer is taken).
        const g = gradient(next, n, true);
        if (next() < 0.5) {
          call.data({ header: header(ranges, ++seq), offset: 0, values: wireBytes(g.subarray(0, 1), 0) });
          call.data({ header: header(ranges, seq), offset: 1, values: wireBytes(g.subarray(1), 0) });
          refused('second header', call.end(), /header on its first message only/);
          applySgd(expected, ranges, g, 0, 1);
        } else {
          call.data({ header: header([{ begin: 7, end: 9 }], ++seq), offset: 0, values: wireBytes(g, 0) });
          const o = call.end();
          expect(o.err?.code, 'moved').to.equal(status.FAILED_PRECONDITION);
        }
      }
      expectValues(shard, expected, what);
      expect(pool.out.size, `${what}: every buffer is back in the pool`).to.equal(0);
    }
    expect(Object.keys(refusals).sort(), 'every kind of refusal happened').to.deep.equal(['bad chunk', 'broken', 'non-finite', 'second header', 'too few', 'too many']);
    expect(pool.acquired, 'buffers lent').to.be.above(200);
    expect(pool.released).to.equal(pool.acquired);
    expect(pool.fromHeap, 'buffers come from the float heap (so the SIMD kernels read them)').to.equal(floatHeap() ? pool.acquired : 0);
  });

  it('pushes in flight at once get buffers of their own, even after a refused push left stale data behind', () => {
    const shard = newShard();
    const pool = new WatchedPool();
    const impl = shardImplementation(shard, () => ({}), pool);
    const expected = values(shard);
    const next = rng(7);
    const all: SlotRange[] = [{ begin: 0, end: OWNED }];
    const n = lengthOf(all);
    // A refused whole-shard push leaves a pooled buffer full of poison (and its whole slots applied).
    const poison = new FakeCall(impl);
    const poisoned = gradient(next, n - 10, true);
    poison.data({ header: header(all, 1), offset: 0, values: wireBytes(poisoned, 1) });
    expect(poison.end().err?.code).to.equal(status.INVALID_ARGUMENT);
    applySgd(expected, all, poisoned);
    for (let round = 0; round < 20; round++) {
      const ranges = [randomRanges(next), randomRanges(next), all];
      const gs = ranges.map((r) => gradient(next, lengthOf(r)));
      const calls = ranges.map(() => new FakeCall(impl));
      // Every push sends its first half, then every push its second half, then all end, in a shuffled order.
      // Each slot is applied as its last value arrives, so in that order (float sums depend on it).
      gs.forEach((g, k) => calls[k]!.data({ header: header(ranges[k]!, 100 + 3 * round + k, { workerId: `w${k}` }), offset: 0, values: wireBytes(g.subarray(0, g.length >> 1), k) }));
      gs.forEach((g, k) => applySgd(expected, ranges[k]!, g, 0, g.length >> 1));
      expect(pool.out.size, 'three buffers out at once').to.equal(3);
      gs.forEach((g, k) => calls[k]!.data({ offset: g.length >> 1, values: wireBytes(g.subarray(g.length >> 1), k + 1) }));
      gs.forEach((g, k) => applySgd(expected, ranges[k]!, g, g.length >> 1));
      for (const k of round % 2 ? [2, 0, 1] : [1, 2, 0]) {
        const o = calls[k]!.end();
        expect(o.err, o.err?.details).to.equal(null);
      }
      expectValues(shard, expected, `round ${round}`);
    }
    expect(pool.out.size).to.equal(0);
  });

  describe('GradientPool', () => {
    const span = (a: Float32Array) => [a.buffer, a.byteOffset] as const;

    it('reuses an idle buffer for a push that fits, the smallest that fits', () => {
      const pool = new GradientPool();
      const [a, b, c] = [1000, 500, 100].map((n) => pool.acquire(n));
      expect([a!.length, b!.length, c!.length]).to.deep.equal([1000, 500, 100]);
      if (floatHeap()) for (const x of [a, b, c]) expect(floatHeap()!.holds(x!), 'from the float heap').to.equal(true);
      const spans = [a, b, c].map((x) => span(x!));
      for (const x of [c, a, b]) pool.release(x!);
      const d = pool.acquire(400);
      expect(d.length).to.equal(400);
      expect(span(d), 'the 500-float buffer').to.deep.equal(spans[1]);
      const e = pool.acquire(100);
      expect(span(e), 'the 100-float buffer').to.deep.equal(spans[2]);
      const f = pool.acquire(600);
      expect(span(f), 'the 1000-float buffer').to.deep.equal(spans[0]);
      const g = pool.acquire(10);
      for (const x of [d, e, f]) expect(span(g), 'none idle: a new buffer').to.not.deep.equal(span(x));
    });

    it('a buffer released twice, or a foreign one, is not handed out twice', () => {
      const pool = new GradientPool();
      const a = pool.acquire(256);
      pool.release(a);
      pool.release(a);
      pool.release(new Float32Array(256));
      const b = pool.acquire(256);
      const c = pool.acquire(256);
      const overlap = b.buffer === c.buffer && b.byteOffset < c.byteOffset + c.byteLength && c.byteOffset < b.byteOffset + b.byteLength;
      expect(overlap, 'two lent buffers share memory').to.equal(false);
      expect(b.buffer === a.buffer && b.byteOffset === a.byteOffset, 'the released buffer is reused once').to.equal(true);
    });

    it('keeps at most its budget of idle bytes, dropping the smallest buffers first', () => {
      const pool = new GradientPool(3000);
      const [big, mid, small] = [600, 200, 100].map((n) => pool.acquire(n)); // 2400, 800, 400 bytes
      const spans = [big, mid, small].map((x) => span(x!));
      pool.release(small!);
      pool.release(mid!);
      pool.release(big!); // 3600 bytes idle, over budget: the 100 goes, then (3200 > 3000) the 200
      const x = pool.acquire(150);
      expect(span(x), 'the 200-float buffer was dropped: 150 floats take the 600-float one').to.deep.equal(spans[0]);
    });
  });
});
