import { expect } from 'chai';
import { thrown } from '../../helpers/expect-errors.js';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { InvalidArgumentError, MovedError, NotReadyError, StaleEpochError, type TesseraError } from '../../../cluster/errors.js';
import { type ModelSpec, initialValues } from '../../../cluster/model-spec.js';
import { type OptimizerConfig, optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { type ShardMap, evenAssignment } from '../../../cluster/shard-map.js';
import { type SlotRange, rangesLength, slotStart } from '../../../cluster/slots.js';
import { DEDUP_WINDOW } from '../../../server/push-dedup.js';
import { Shard, firstNonFinite } from '../../../server/shard.js';

/*
 * A Shard's logic with no network: a 16-slot cluster over a 1000-element model
 * (not a multiple of 16, so slots hold 62 or 63 elements), two shards a and b
 * splitting the slots evenly at map epoch 3. The tests drive shard a.
 */

const SLOTS = 16;
const ELEMENTS = 1000;
const EPOCH = 3;
const MODEL: ModelSpec = {
  name: 'unit-model',
  seed: 11,
  tensors: [
    { name: 'w1', shape: [30, 20], init: { kind: 'uniform', low: -1, high: 1 } },
    { name: 'b1', shape: [400], init: { kind: 'constant', value: 0.5 } },
  ],
};
const A_OWNS: SlotRange = { begin: 0, end: 8 };

function config(optimizer: Partial<OptimizerConfig> & { name: OptimizerConfig['name'] } = { name: 'sgd', learningRate: 0.5 }): ClusterConfig {
  return { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults(optimizer), consistency: 'async' };
}

function map(epoch = EPOCH): ShardMap {
  return { epoch, slots: SLOTS, owners: evenAssignment(['b', 'a'], SLOTS), addresses: { a: '127.0.0.1:7001', b: '127.0.0.1:7002' } };
}

function shardA(optimizer?: Partial<OptimizerConfig> & { name: OptimizerConfig['name'] }): Shard {
  const shard = new Shard('a', config(optimizer));
  expect(shard.setMap(map())).to.equal(true);
  return shard;
}

/** Elements of `ranges`, concatenated. */
function lengthOf(ranges: readonly SlotRange[]): number {
  return rangesLength(ranges, ELEMENTS, SLOTS);
}

/** The model's first values of `ranges`, concatenated. */
function initial(ranges: readonly SlotRange[]): Float32Array {
  const out = new Float32Array(lengthOf(ranges));
  let at = 0;
  for (const r of ranges) {
    const start = slotStart(r.begin, ELEMENTS, SLOTS);
    const piece = out.subarray(at, at + slotStart(r.end, ELEMENTS, SLOTS) - start);
    initialValues(MODEL, start, piece);
    at += piece.length;
  }
  return out;
}

/** Values of `ranges` read back through pullChunks. */
function pulled(shard: Shard, ranges: readonly SlotRange[], maxBytes = 1 << 20): Float32Array {
  const parts: Buffer[] = [];
  for (const c of shard.pullChunks(ranges, maxBytes)) parts.push(Buffer.from(c.bytes));
  const all = Buffer.concat(parts);
  const out = new Float32Array(all.byteLength / 4);
  Buffer.from(out.buffer).set(all);
  return out;
}

/** Every byte the shard holds for a slot: values and optimizer state, slot by slot. */
function snapshot(shard: Shard): Buffer {
  const parts: Buffer[] = [];
  for (let s = 0; s < SLOTS; s++) {
    const slot = shard.store.get(s);
    if (!slot) continue;
    parts.push(Buffer.from(`slot ${s} step ${slot.step};`));
    for (const a of [slot.values, slot.s1, slot.s2]) if (a) parts.push(Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)));
  }
  return Buffer.concat(parts);
}

/** Every byte the shard holds for slot `s`: its values and optimizer state. */
function snapshotOf(shard: Shard, s: number): Buffer {
  const slot = shard.store.get(s)!;
  return Buffer.concat([Buffer.from(`step ${slot.step};`), ...[slot.values, slot.s1, slot.s2].filter((a) => a !== null).map((a) => Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)))]);
}

function gradient(n: number, seed = 1): Float32Array {
  const g = new Float32Array(n);
  // Multiples of 1/64: sums and products by 0.5 stay exact in float32.
  for (let i = 0; i < n; i++) g[i] = (((i * 37 + seed * 11) % 129) - 64) / 64;
  return g;
}

/** sgd with η = 0.5 applied `times` times, in float32 storage as the shard keeps it. */
function sgd(values: Float32Array, g: Float32Array, times = 1): Float32Array {
  const out = Float32Array.from(values);
  for (let k = 0; k < times; k++) for (let i = 0; i < out.length; i++) out[i] = out[i]! - 0.5 * g[i]!;
  return out;
}

function expectBytes(got: Float32Array, want: Float32Array, what: string): void {
  const a = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  const b = Buffer.from(want.buffer, want.byteOffset, want.byteLength);
  expect(a.equals(b), `${what}: bit-identical`).to.equal(true);
}

describe('server/shard', () => {
  describe('the map', () => {
    it('creates the slots it owns with the model’s first values, and no others', () => {
      const shard = shardA();
      expect(shard.epoch).to.equal(EPOCH);
      expect(shard.owned()).to.deep.equal([A_OWNS]);
      for (let s = 0; s < SLOTS; s++) expect(shard.store.get(s) !== undefined, `slot ${s} held`).to.equal(s < 8);
      expect(shard.store.heldElements()).to.equal(lengthOf([A_OWNS]));
      expectBytes(pulled(shard, [A_OWNS]), initial([A_OWNS]), 'first values');
    });

    it('ignores an older or equal map, refuses one with another slot count', () => {
      const shard = shardA();
      expect(shard.setMap(map(EPOCH - 1))).to.equal(false);
      expect(shard.setMap(map(EPOCH))).to.equal(false);
      expect(shard.epoch).to.equal(EPOCH);
      expect(() => shard.setMap({ ...map(EPOCH + 1), slots: 8, owners: evenAssignment(['a', 'b'], 8) })).to.throw(InvalidArgumentError, /8 slots but the cluster has 16/);
      expect(shard.epoch).to.equal(EPOCH);
      expect(shard.setMap(map(EPOCH + 1))).to.equal(true);
      expect(shard.epoch).to.equal(EPOCH + 1);
    });

    it('answers NotReady before it has a map', () => {
      const shard = new Shard('a', config());
      expect(shard.epoch).to.equal(0);
      expect(shard.owned()).to.deep.equal([]);
      expect(thrown(() => shard.check(1, [A_OWNS]))).to.be.instanceOf(NotReadyError);
      expect(thrown(() => shard.push({ epoch: 1, ranges: [A_OWNS], workerId: 'w', seq: 1 }, gradient(lengthOf([A_OWNS]))))).to.be.instanceOf(NotReadyError);
      expect(shard.store.heldElements()).to.equal(0);
    });
  });

  describe('pushes apply once per (worker, seq) per slot', () => {
    it('applies a push, and a retry with the same seq is a duplicate that changes nothing', () => {
      const shard = shardA();
      const g = gradient(lengthOf([A_OWNS]));
      const first = shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w1', seq: 1 }, g);
      expect(first).to.deep.equal({ epoch: EPOCH, appliedSlots: 8, duplicateSlots: 0 });
      const after = sgd(initial([A_OWNS]), g);
      expectBytes(pulled(shard, [A_OWNS]), after, 'after one push');
      const before = snapshot(shard);
      const retry = shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w1', seq: 1 }, g);
      expect(retry).to.deep.equal({ epoch: EPOCH, appliedSlots: 0, duplicateSlots: 8 });
      expect(snapshot(shard).equals(before), 'a duplicate changes no byte').to.equal(true);
      expect(shard.pushesApplied).to.equal(1);
    });

    it('applies the same seq from another worker, and the next seq from the same worker', () => {
      const shard = shardA();
      const g = gradient(lengthOf([A_OWNS]));
      expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w1', seq: 7 }, g).appliedSlots).to.equal(8);
      expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w2', seq: 7 }, g).appliedSlots).to.equal(8);
      expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w1', seq: 8 }, g).appliedSlots).to.equal(8);
      expectBytes(pulled(shard, [A_OWNS]), sgd(initial([A_OWNS]), g, 3), 'three pushes');
      expect(shard.pushesApplied).to.equal(3);
    });

    it('decides per slot: a push overlapping an applied one applies only to the new slots', () => {
      const shard = shardA();
      const left = [{ begin: 0, end: 3 }];
      shard.push({ epoch: EPOCH, ranges: left, workerId: 'w', seq: 5 }, gradient(lengthOf(left)));
      const g = gradient(lengthOf([A_OWNS]), 2);
      const res = shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 5 }, g);
      expect(res).to.deep.equal({ epoch: EPOCH, appliedSlots: 5, duplicateSlots: 3 });
      // Slots 0-2 hold the first gradient once; slots 3-7 the second one once.
      const n3 = lengthOf(left);
      expectBytes(pulled(shard, left), sgd(initial(left), gradient(n3)), 'slots 0-2');
      const right = [{ begin: 3, end: 8 }];
      expectBytes(pulled(shard, right), sgd(initial(right), g.subarray(n3)), 'slots 3-7');
    });

    it('reads each slot’s gradient from its place in a push of several runs', () => {
      const shard = shardA();
      const ranges = [
        { begin: 1, end: 3 },
        { begin: 5, end: 6 },
        { begin: 7, end: 8 },
      ];
      const g = gradient(lengthOf(ranges), 3);
      expect(shard.push({ epoch: EPOCH, ranges, workerId: 'w', seq: 1 }, g).appliedSlots).to.equal(4);
      expectBytes(pulled(shard, ranges), sgd(initial(ranges), g), 'pushed slots');
      const untouched = [
        { begin: 0, end: 1 },
        { begin: 3, end: 5 },
        { begin: 6, end: 7 },
      ];
      expectBytes(pulled(shard, untouched), initial(untouched), 'other slots');
    });

    it('applies out-of-order seqs within the window, each once', () => {
      const shard = shardA();
      const g = gradient(lengthOf([A_OWNS]));
      let applied = 0;
      for (const seq of [10, 3, 7, 11, 1, 9]) {
        expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq }, g).appliedSlots, `seq ${seq}`).to.equal(8);
        applied++;
      }
      for (const seq of [3, 10, 1]) expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq }, g).duplicateSlots, `retry of seq ${seq}`).to.equal(8);
      expectBytes(pulled(shard, [A_OWNS]), sgd(initial([A_OWNS]), g, applied), `${applied} pushes applied once each`);
    });

    it('treats a seq older than the window as already applied', () => {
      const shard = shardA();
      const g = gradient(lengthOf([A_OWNS]));
      const high = DEDUP_WINDOW + 100;
      shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: high }, g);
      const before = snapshot(shard);
      expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: high - DEDUP_WINDOW }, g).duplicateSlots).to.equal(8);
      expect(snapshot(shard).equals(before)).to.equal(true);
      expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: high - DEDUP_WINDOW + 1 }, g).appliedSlots).to.equal(8);
    });

    it('keeps optimizer state with the slot: momentum applies twice for two seqs, once for a retry', () => {
      const shard = shardA({ name: 'momentum', learningRate: 0.25, momentum: 0.5 });
      const r = [{ begin: 2, end: 3 }];
      const g = gradient(lengthOf(r));
      shard.push({ epoch: EPOCH, ranges: r, workerId: 'w', seq: 1 }, g);
      shard.push({ epoch: EPOCH, ranges: r, workerId: 'w', seq: 1 }, g);
      shard.push({ epoch: EPOCH, ranges: r, workerId: 'w', seq: 2 }, g);
      // v1 = g, w1 = w0 − ηg; v2 = 0.5g + g = 1.5g, w2 = w1 − 1.5ηg (all exact in float32 here).
      const want = Float32Array.from(initial(r));
      for (let i = 0; i < want.length; i++) want[i] = Math.fround(Math.fround(want[i]! - 0.25 * g[i]!) - 0.25 * 1.5 * g[i]!);
      expectBytes(pulled(shard, r), want, 'momentum after two distinct pushes');
      expect(shard.store.get(2)!.step).to.equal(2);
    });
  });

  describe('a rejected push leaves every byte as it was', () => {
    const n = lengthOf([A_OWNS]);
    const withValue = (i: number, v: number) => {
      const g = gradient(n);
      g[i] = v;
      return g;
    };
    const cases: {
      name: string;
      header: Partial<Parameters<Shard['push']>[0]>;
      gradient?: Float32Array;
      error: new (...args: never[]) => TesseraError;
      message: RegExp;
      check?: (err: TesseraError) => void;
    }[] = [
      { name: 'one value short', header: {}, gradient: gradient(n - 1), error: InvalidArgumentError, message: new RegExp(`carries ${n - 1} values but slots \\[0, 8\\) hold ${n}`) },
      { name: 'one value too many', header: {}, gradient: gradient(n + 1), error: InvalidArgumentError, message: new RegExp(`carries ${n + 1} values`) },
      { name: 'no values', header: {}, gradient: new Float32Array(0), error: InvalidArgumentError, message: /carries 0 values/ },
      { name: 'NaN in the first element', header: {}, gradient: withValue(0, Number.NaN), error: InvalidArgumentError, message: /non-finite value \(NaN\) at element 0 \(slot 0\); 0 slots before it were applied/ },
      { name: '-Inf in the first slot', header: {}, gradient: withValue(17, Number.NEGATIVE_INFINITY), error: InvalidArgumentError, message: /\(-Infinity\) at element 17 \(slot 0\)/ },
      { name: 'an unknown model name', header: { model: 'other-model' }, error: InvalidArgumentError, message: /unknown model "other-model".*"unit-model"/ },
      {
        name: 'a slot it does not own',
        header: { ranges: [{ begin: 6, end: 10 }] },
        error: MovedError,
        message: /slot 8 is owned by shard b at 127\.0\.0\.1:7002/,
        check: (err) => {
          const moved = err as MovedError;
          expect([moved.slot, moved.owner, moved.ownerAddress, moved.epoch]).to.deep.equal([8, 'b', '127.0.0.1:7002', EPOCH]);
          expect(moved.context()).to.deep.equal({ slot: '8', epoch: String(EPOCH), owner: 'b', 'owner-address': '127.0.0.1:7002' });
          expect(moved.retryable).to.equal(true);
        },
      },
      {
        name: 'a stale epoch',
        header: { epoch: EPOCH - 1 },
        error: StaleEpochError,
        message: /epoch 2 but the shard is at epoch 3/,
        check: (err) => expect([(err as StaleEpochError).requestEpoch, (err as StaleEpochError).epoch]).to.deep.equal([EPOCH - 1, EPOCH]),
      },
      { name: 'an epoch ahead of the shard', header: { epoch: EPOCH + 1 }, error: NotReadyError, message: /at map epoch 3, behind the caller's 4/ },
      { name: 'a range past the last slot', header: { ranges: [{ begin: 0, end: SLOTS + 1 }] }, error: InvalidArgumentError, message: /exceeds the 16 slots/ },
      { name: 'a range starting past the last slot', header: { ranges: [{ begin: 20, end: 21 }] }, error: InvalidArgumentError, message: /exceeds the 16 slots/ },
      { name: 'an empty range', header: { ranges: [{ begin: 3, end: 3 }] }, error: InvalidArgumentError, message: /empty/ },
      { name: 'no ranges', header: { ranges: [] }, error: InvalidArgumentError, message: /no slot ranges/ },
      { name: 'overlapping ranges', header: { ranges: [{ begin: 0, end: 4 }, { begin: 2, end: 8 }] }, error: InvalidArgumentError, message: /overlap/ },
      { name: 'an empty worker id', header: { workerId: '' }, error: InvalidArgumentError, message: /no worker_id/ },
      { name: 'a negative seq', header: { seq: -1 }, error: InvalidArgumentError, message: /seq must be a non-negative integer/ },
      { name: 'a fractional seq', header: { seq: 1.5 }, error: InvalidArgumentError, message: /seq must be a non-negative integer/ },
      { name: 'an unsafe seq', header: { seq: 2 ** 53 }, error: InvalidArgumentError, message: /seq must be a non-negative integer/ },
    ];

    for (const c of cases) {
      it(`${c.name} → ${c.error.name}`, () => {
        const shard = shardA({ name: 'adam' });
        // Some history first, so state and dedup are not at their starting values.
        shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 1 }, gradient(n, 5));
        const before = snapshot(shard);
        const held = shard.store.heldElements();
        const header = { epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 2, ...c.header };
        const err = thrown(() => shard.push(header, c.gradient ?? gradient(n)));
        expect(err).to.be.instanceOf(c.error);
        expect(err.message).to.match(c.message);
        c.check?.(err);
        expect(snapshot(shard).equals(before), 'values and optimizer state bit-identical').to.equal(true);
        expect(shard.store.heldElements(), 'no slot created').to.equal(held);
        expect(shard.pushesApplied).to.equal(1);
        // Nothing was recorded as applied: the same (worker, seq) done right applies to every slot.
        expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 2 }, gradient(n)).appliedSlots).to.equal(8);
      });
    }

    it('checks pulls the same way (check), without touching anything', () => {
      const shard = shardA();
      const before = snapshot(shard);
      expect(thrown(() => shard.check(EPOCH, [{ begin: 7, end: 9 }]))).to.be.instanceOf(MovedError);
      expect(thrown(() => shard.check(EPOCH - 1, [A_OWNS]))).to.be.instanceOf(StaleEpochError);
      expect(thrown(() => shard.check(EPOCH + 1, [A_OWNS]))).to.be.instanceOf(NotReadyError);
      expect(thrown(() => shard.check(EPOCH, [A_OWNS], 'nope'))).to.be.instanceOf(InvalidArgumentError);
      expect(() => shard.check(EPOCH, [A_OWNS], 'unit-model')).to.not.throw();
      expect(() => shard.check(EPOCH, [A_OWNS], '')).to.not.throw();
      expect(snapshot(shard).equals(before)).to.equal(true);
    });
  });

  describe('a non-finite value refuses its slot and every later one; the slots before it stay applied', () => {
    const n = lengthOf([A_OWNS]);
    // Slots of 62 or 63 elements: element 250 is the first of slot 4.
    const cases = [
      { at: 249, value: Number.NaN, slot: 3 },
      { at: 250, value: Number.NaN, slot: 4 },
      { at: n - 1, value: Number.POSITIVE_INFINITY, slot: 7 },
    ];
    for (const c of cases) {
      it(`${c.value} at element ${c.at}: slots 0–${c.slot - 1} applied, ${c.slot}–7 untouched; the retry applies the rest once`, () => {
        const shard = shardA({ name: 'adam' });
        shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 1 }, gradient(n, 5));
        const before = [...Array(8).keys()].map((s) => Buffer.from(snapshotOf(shard, s)));
        const good = gradient(n);
        const bad = Float32Array.from(good);
        bad[c.at] = c.value;
        const err = thrown(() => shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 2 }, bad));
        expect(err).to.be.instanceOf(InvalidArgumentError);
        expect(err.message).to.match(new RegExp(`\\(${c.value}\\) at element ${c.at} \\(slot ${c.slot}\\); ${c.slot} slots before it were applied, none from slot ${c.slot} on`));
        for (let s = 0; s < 8; s++) expect(snapshotOf(shard, s).equals(before[s]!), `slot ${s} ${s < c.slot ? 'changed' : 'bit-identical'}`).to.equal(s >= c.slot);
        expect(shard.pushesApplied, 'a push that applied a slot counts').to.equal(2);
        // The applied slots recorded (worker, seq): the retry applies only the others.
        expect(shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 2 }, good)).to.include({ appliedSlots: 8 - c.slot, duplicateSlots: c.slot });
        // Same bytes as one good push applied whole to a twin shard.
        const twin = shardA({ name: 'adam' });
        twin.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 1 }, gradient(n, 5));
        twin.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 2 }, good);
        expect(snapshot(shard).equals(snapshot(twin)), 'as if the push had been applied once, whole').to.equal(true);
      });
    }
  });

  describe('firstNonFinite', () => {
    it('finds the first NaN or ±Inf, and accepts finite extremes', () => {
      expect(firstNonFinite(new Float32Array([1, -0, 3.4e38, -3.4e38, 1e-45]))).to.equal(-1);
      expect(firstNonFinite(new Float32Array(0))).to.equal(-1);
      expect(firstNonFinite(new Float32Array([0, Number.NaN, Number.POSITIVE_INFINITY]))).to.equal(1);
      expect(firstNonFinite(new Float32Array([0, 1, Number.NEGATIVE_INFINITY]))).to.equal(2);
      // Values whose sum overflows float64 are still finite each.
      expect(firstNonFinite(new Float32Array(100).fill(3.4e38))).to.equal(-1);
    });
  });

  describe('pullChunks', () => {
    const requests: SlotRange[][] = [[A_OWNS], [{ begin: 0, end: 1 }], [{ begin: 1, end: 3 }, { begin: 5, end: 8 }]];
    for (const maxBytes of [0, 3, 4, 7, 100, 252, 256, 1000, 4096, 1 << 20]) {
      it(`maxBytes ${maxBytes}: chunks of at most max(4, ⌊maxBytes/4⌋·4) bytes, in order, whose concatenation is the values`, () => {
        const shard = shardA();
        // Values that differ from the first ones, so a chunk from the wrong place shows.
        shard.push({ epoch: EPOCH, ranges: [A_OWNS], workerId: 'w', seq: 1 }, gradient(lengthOf([A_OWNS]), 9));
        const full = sgd(initial([A_OWNS]), gradient(lengthOf([A_OWNS]), 9));
        const maxElems = Math.max(1, Math.floor(maxBytes / 4));
        for (const ranges of requests) {
          const chunks = [...shard.pullChunks(ranges, maxBytes)];
          const total = lengthOf(ranges);
          let at = 0;
          for (const [i, c] of chunks.entries()) {
            expect(c.offset, `chunk ${i} offset`).to.equal(at);
            expect(c.bytes.byteLength % 4).to.equal(0);
            expect(c.bytes.byteLength, `chunk ${i} size`).to.be.at.most(maxElems * 4);
            if (i < chunks.length - 1) expect(c.bytes.byteLength, `chunk ${i} is full`).to.equal(maxElems * 4);
            else expect(c.bytes.byteLength, 'last chunk is not empty').to.be.above(0);
            at += c.bytes.byteLength / 4;
          }
          expect(at).to.equal(total);
          expect(chunks.length).to.equal(Math.ceil(total / maxElems));
          // Expected: the slots' values, concatenated in request order.
          const want = new Float32Array(total);
          let w = 0;
          for (const r of ranges) {
            const a = slotStart(r.begin, ELEMENTS, SLOTS);
            const b = slotStart(r.end, ELEMENTS, SLOTS);
            want.set(full.subarray(a, b), w);
            w += b - a;
          }
          const got = Buffer.concat(chunks.map((c) => c.bytes));
          expect(got.equals(Buffer.from(want.buffer)), `values of ${JSON.stringify(ranges)}`).to.equal(true);
        }
      });
    }

    it('yields one empty chunk for slots that hold no elements', () => {
      const tiny: ClusterConfig = { ...config(), model: { name: 'tiny', seed: 1, tensors: [{ name: 't', shape: [3], init: { kind: 'zeros' } }] } };
      const shard = new Shard('a', tiny);
      shard.setMap(map());
      // 3 elements over 16 slots: slots 0-4 are empty.
      const chunks = [...shard.pullChunks([{ begin: 0, end: 5 }], 1024)];
      expect(chunks.map((c) => [c.offset, c.bytes.byteLength])).to.deep.equal([[0, 0]]);
      expect(shard.lengthOf([{ begin: 0, end: 5 }])).to.equal(0);
    });

    it('does not change the values', () => {
      const shard = shardA();
      const before = snapshot(shard);
      for (const _ of shard.pullChunks([A_OWNS], 64)) void _;
      expect(snapshot(shard).equals(before)).to.equal(true);
    });
  });
});
