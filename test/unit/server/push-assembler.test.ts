import { expect } from 'chai';
import { thrown } from '../../helpers/expect-errors.js';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { slotLengths } from '../../../cluster/wire/codec-fields.js';
import { InvalidArgumentError, MovedError, StaleEpochError } from '../../../cluster/errors.js';
import { type Compression, encodeSlots } from '../../../cluster/wire/gradient-codec.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { evenAssignment } from '../../../cluster/shard-map.js';
import { type SlotRange, rangesLength } from '../../../cluster/slots.js';
import { GradientPool } from '../../../server/gradient-pool.js';
import { type AssembledPushHeader, type OffsetUnit, PushAssembler } from '../../../server/push-assembler.js';
import { Shard } from '../../../server/shard.js';

/*
 * Push assembly (server/push-assembler.ts) with no network: a 16-slot cluster
 * over a 1000-element model (slots of 62 or 63 elements), shards a and b
 * splitting the slots evenly at map epoch 3 (a owns 0-7). The pool counts
 * what it lends, to show a refused push allocates nothing and every buffer
 * comes back.
 */

const SLOTS = 16;
const ELEMENTS = 1000;
const EPOCH = 3;
const LR = 0.5;
const MODEL: ModelSpec = {
  name: 'unit-assembler',
  seed: 7,
  tensors: [
    { name: 'w', shape: [30, 20], init: { kind: 'constant', value: 1 } },
    { name: 'b', shape: [400], init: { kind: 'constant', value: 1 } },
  ],
};
const OWNED: SlotRange[] = [{ begin: 1, end: 3 }, { begin: 5, end: 8 }];
const LENGTH = rangesLength(OWNED, ELEMENTS, SLOTS);

class CountingPool extends GradientPool {
  acquired = 0;
  released = 0;
  override acquire(length: number): Float32Array {
    this.acquired++;
    return super.acquire(length);
  }
  override release(view: Float32Array): void {
    this.released++;
    super.release(view);
  }
}

function shardA(): Shard {
  const config: ClusterConfig = { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: LR }), consistency: 'async' };
  const shard = new Shard('a', config);
  shard.setMap({ epoch: EPOCH, slots: SLOTS, owners: evenAssignment(['b', 'a'], SLOTS), addresses: { a: '127.0.0.1:7001', b: '127.0.0.1:7002' } });
  return shard;
}

function header(over: Partial<AssembledPushHeader> = {}): AssembledPushHeader {
  return { epoch: EPOCH, ranges: OWNED, workerId: 'w', seq: 1, model: MODEL.name, compression: { kind: 'none' }, wireBytes: 0, ...over };
}

/** Values exactly representable in fp16, so every codec but int8/topk round-trips them bit for bit. */
function gradient(n = LENGTH): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = ((i % 17) - 8) / 4;
  return g;
}

const bytesOf = (g: Float32Array) => new Uint8Array(g.buffer, g.byteOffset, g.byteLength);

/** Elements of each owned slot, in push order. */
const SLOT_LENGTHS = slotLengths(OWNED, ELEMENTS, SLOTS);

/** How many of the owned slots, in push order, hold 1 − LR·g (the push applied); the rest must still hold 1. */
function appliedSlots(shard: Shard, g: Float32Array): number {
  let applied = 0;
  let untouched = 0;
  let off = 0;
  for (const r of OWNED) {
    for (let s = r.begin; s < r.end; s++) {
      const values = shard.store.get(s)!.values;
      if (values.every((x, i) => x === Math.fround(1 - LR * g[off + i]!))) {
        if (untouched > 0) expect.fail(`slot ${s} applied after a slot that was not: the applied slots are not a prefix`);
        applied++;
      } else if (values.every((x) => x === 1)) untouched++;
      else expect.fail(`slot ${s} is neither applied nor untouched`);
      off += values.length;
    }
  }
  return applied;
}

/** The values of `ranges` on `shard`, concatenated. */
function valuesOf(shard: Shard, ranges: readonly SlotRange[]): Float32Array {
  const out: number[] = [];
  for (const r of ranges) for (let s = r.begin; s < r.end; s++) out.push(...shard.store.get(s)!.values);
  return Float32Array.from(out);
}

describe('server/push-assembler', () => {
  describe('refuses before it allocates', () => {
    const cases: { name: string; over: Partial<AssembledPushHeader>; error: new (...a: never[]) => Error; message?: RegExp }[] = [
      { name: 'a stale epoch', over: { epoch: EPOCH - 1 }, error: StaleEpochError },
      { name: 'a slot another shard owns', over: { ranges: [{ begin: 7, end: 9 }] }, error: MovedError },
      { name: 'another model', over: { model: 'other' }, error: InvalidArgumentError, message: /unknown model "other"/ },
      { name: 'an announced length the slots do not hold', over: { length: LENGTH + 1 }, error: InvalidArgumentError, message: new RegExp(`push carries ${LENGTH + 1} values but slots of the request hold ${LENGTH}`) },
      { name: 'an encoded size the codec does not give', over: { compression: { kind: 'fp16' }, wireBytes: LENGTH * 2 + 1 }, error: InvalidArgumentError, message: /push announces \d+ encoded bytes, but its 5 slots take \d+ under its codec/ },
    ];
    for (const c of cases) {
      it(`${c.name} → ${c.error.name}`, () => {
        const pool = new CountingPool();
        const err = thrown(() => new PushAssembler(shardA(), pool, header(c.over), 'element'));
        expect(err).to.be.instanceOf(c.error);
        if (c.message) expect(err.message).to.match(c.message);
        expect(pool.acquired).to.equal(0);
      });
    }
  });

  describe('float32 at element offsets (gRPC)', () => {
    it('applies each slot as soon as its last value is in; takes its window only with the first values', () => {
      const pool = new CountingPool();
      const shard = shardA();
      const p = new PushAssembler(shard, pool, header(), 'element');
      expect(pool.acquired, 'a header alone takes no memory').to.equal(0);
      p.write(Buffer.alloc(0), 0);
      expect(pool.acquired, "nor the empty values gRPC's first message carries beside it").to.equal(0);
      const g = gradient();
      const first = SLOT_LENGTHS[0]!;
      p.write(bytesOf(g.subarray(0, first - 1)), 0);
      expect(appliedSlots(shard, g), 'one value short of the first slot').to.equal(0);
      p.write(bytesOf(g.subarray(first - 1, first + 1)), first - 1);
      expect(appliedSlots(shard, g), 'the first slot complete').to.equal(1);
      p.write(bytesOf(g.subarray(first + 1)), first + 1);
      expect(appliedSlots(shard, g), 'every slot, before the push is closed').to.equal(SLOT_LENGTHS.length);
      expect(p.apply()).to.deep.equal({ epoch: EPOCH, appliedSlots: 5, duplicateSlots: 0, wireBytes: LENGTH * 4 });
      expect(pool.acquired).to.equal(1);
      p.release();
      p.release();
      expect(pool.released, 'release is idempotent').to.equal(1);
    });

    const misuses: { name: string; run: (p: PushAssembler, g: Float32Array) => void; message: RegExp }[] = [
      { name: 'a chunk out of order', run: (p, g) => p.write(bytesOf(g.subarray(10, 20)), 10), message: /push chunk at offset 10 arrived where offset 0 was expected; send chunks in order/ },
      { name: 'a chunk of part of a float', run: (p, g) => p.write(bytesOf(g).subarray(0, 6), 0), message: /push chunk at offset 0 has 6 bytes, not a whole number of float32 values/ },
      { name: 'more values than the slots hold', run: (p) => p.write(bytesOf(gradient(LENGTH + 1)), 0), message: new RegExp(`push carries more than the ${LENGTH} values its slots hold`) },
      { name: 'a short push', run: (p, g) => (p.write(bytesOf(g.subarray(0, 5)), 0), p.apply()), message: new RegExp(`push carries 5 values but its slots hold ${LENGTH}`) },
    ];
    for (const m of misuses) {
      it(`refuses ${m.name}`, () => {
        const p = new PushAssembler(shardA(), new CountingPool(), header(), 'element');
        const err = thrown(() => m.run(p, gradient()));
        expect(err).to.be.instanceOf(InvalidArgumentError);
        expect(err.message).to.match(m.message);
        p.release();
      });
    }
  });

  describe('float32 at byte offsets (bulk)', () => {
    it('takes pieces that split a value, and applies a slot once its last byte is in', () => {
      const shard = shardA();
      const p = new PushAssembler(shard, new CountingPool(), header({ length: LENGTH }), 'byte');
      const g = gradient();
      const bytes = bytesOf(g);
      const firstEnd = SLOT_LENGTHS[0]! * 4;
      for (const [a, b] of [[0, 3], [3, firstEnd - 1]] as const) p.write(bytes.subarray(a, b), a);
      expect(appliedSlots(shard, g), 'one byte short of the first slot').to.equal(0);
      p.write(bytes.subarray(firstEnd - 1, firstEnd + 2), firstEnd - 1);
      expect(appliedSlots(shard, g), 'the first slot complete').to.equal(1);
      p.write(bytes.subarray(firstEnd + 2), firstEnd + 2);
      expect(p.apply()).to.deep.equal({ epoch: EPOCH, appliedSlots: 5, duplicateSlots: 0, wireBytes: LENGTH * 4 });
      p.release();
    });

    it('refuses a short push', () => {
      const p = new PushAssembler(shardA(), new CountingPool(), header(), 'byte');
      p.write(bytesOf(gradient()).subarray(0, 7), 0);
      expect(() => p.apply()).to.throw(InvalidArgumentError, new RegExp(`push carries 7 bytes but its slots hold ${LENGTH * 4}`));
      p.release();
    });
  });

  describe('encoded gradients', () => {
    for (const unit of ['element', 'byte'] as OffsetUnit[]) {
      it(`decodes fp16 written at byte offsets whatever the float32 unit (${unit})`, () => {
        const compression: Compression = { kind: 'fp16' };
        const g = gradient();
        const encoded = encodeSlots(compression, g, slotLengths(OWNED, ELEMENTS, SLOTS));
        const shard = shardA();
        const p = new PushAssembler(shard, new CountingPool(), header({ compression, wireBytes: encoded.byteLength }), unit);
        p.write(encoded.subarray(0, 5), 0);
        p.write(encoded.subarray(5), 5);
        expect(appliedSlots(shard, g), 'decoded only once the last byte is in').to.equal(0);
        expect(p.apply()).to.include({ appliedSlots: 5, wireBytes: encoded.byteLength });
        expect(appliedSlots(shard, g)).to.equal(SLOT_LENGTHS.length);
        p.release();
      });
    }

    it('refuses encoded bytes out of order, and a truncated gradient', () => {
      const compression: Compression = { kind: 'int8' };
      const encoded = encodeSlots(compression, gradient(), slotLengths(OWNED, ELEMENTS, SLOTS));
      const p = new PushAssembler(shardA(), new CountingPool(), header({ compression, wireBytes: encoded.byteLength }), 'element');
      expect(() => p.write(encoded.subarray(4, 8), 4)).to.throw(InvalidArgumentError, /push bytes at offset 4 arrived where offset 0 was expected/);
      p.write(encoded.subarray(0, 8), 0);
      expect(() => p.apply()).to.throw(InvalidArgumentError, new RegExp(`push carries 8 of the ${encoded.byteLength} encoded bytes it announced`));
      p.release();
    });
  });

  describe('apply', () => {
    it('applies the assembled gradient once, and a retry of the same (worker, seq) is a duplicate', () => {
      const shard = shardA();
      const pool = new CountingPool();
      const g = gradient();
      const send = () => {
        const p = new PushAssembler(shard, pool, header(), 'element');
        try {
          p.write(bytesOf(g), 0);
          return p.apply();
        } finally {
          p.release();
        }
      };
      expect(send()).to.deep.equal({ epoch: EPOCH, appliedSlots: 5, duplicateSlots: 0, wireBytes: LENGTH * 4 });
      expect([...valuesOf(shard, OWNED)]).to.deep.equal([...g].map((x) => Math.fround(1 - LR * x)));
      expect(send()).to.deep.equal({ epoch: EPOCH, appliedSlots: 0, duplicateSlots: 5, wireBytes: LENGTH * 4 });
      expect([pool.acquired, pool.released]).to.deep.equal([2, 2]);
    });

    it('applies nothing when the push is short', () => {
      const shard = shardA();
      const p = new PushAssembler(shard, new CountingPool(), header(), 'element');
      p.write(bytesOf(gradient(10)), 0);
      expect(() => p.apply()).to.throw(InvalidArgumentError, /push carries 10 values/);
      p.release();
      expect(shard.pushesApplied).to.equal(0);
      expect([...valuesOf(shard, OWNED)].every((x) => x === 1)).to.equal(true);
    });

    it('a non-finite value refuses its slot and the rest; the slots before it stay applied, and a retry applies the rest once', () => {
      const shard = shardA();
      const pool = new CountingPool();
      const g = gradient();
      const bad = g.slice();
      bad[LENGTH - 2] = Number.POSITIVE_INFINITY;
      const p = new PushAssembler(shard, pool, header(), 'element');
      const err = thrown(() => p.write(bytesOf(bad), 0));
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect(err.message).to.match(new RegExp(`non-finite value \\(Infinity\\) at element ${LENGTH - 2} \\(slot 7\\); 4 slots before it were applied, none from slot 7 on`));
      p.release();
      expect(appliedSlots(shard, g)).to.equal(4);
      expect(shard.store.get(7)!.values.every((x) => x === 1), 'the refused slot unchanged').to.equal(true);
      const retry = new PushAssembler(shard, pool, header(), 'element');
      retry.write(bytesOf(g), 0);
      expect(retry.apply()).to.deep.equal({ epoch: EPOCH, appliedSlots: 1, duplicateSlots: 4, wireBytes: LENGTH * 4 });
      retry.release();
      expect(appliedSlots(shard, g)).to.equal(5);
      expect([...valuesOf(shard, OWNED)]).to.deep.equal([...g].map((x) => Math.fround(1 - LR * x)));
      expect([pool.acquired, pool.released]).to.deep.equal([2, 2]);
    });

    it('a slot moved away while the push arrives refuses the rest of the push', () => {
      const shard = shardA();
      const g = gradient();
      const p = new PushAssembler(shard, new CountingPool(), header(), 'element');
      p.write(bytesOf(g.subarray(0, SLOT_LENGTHS[0]!)), 0);
      shard.setMap({ epoch: EPOCH + 1, slots: SLOTS, owners: evenAssignment(['b', 'a'], SLOTS), addresses: { a: '127.0.0.1:7001', b: '127.0.0.1:7002' } });
      expect(thrown(() => p.write(bytesOf(g.subarray(SLOT_LENGTHS[0]!)), SLOT_LENGTHS[0]!))).to.be.instanceOf(StaleEpochError);
      p.release();
      expect(appliedSlots(shard, g)).to.equal(1);
    });

    it('is done once released', () => {
      const p = new PushAssembler(shardA(), new CountingPool(), header(), 'element');
      p.release();
      expect(() => p.write(bytesOf(gradient(1)), 0)).to.throw(InvalidArgumentError, /already settled/);
    });
  });
});
