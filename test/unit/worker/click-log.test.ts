import { expect } from 'chai';
import { CLICK_LOG_DEFAULTS, type ClickData, clickLog, clickSlice } from '../../../worker/data/click-log.js';
import { auc } from '../../../worker/metrics/auc.js';
import { expectInvalid } from '../../helpers/expect-errors.js';

const SMALL = { seed: 5, train: 3_000, test: 2_000 };

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
}
const field = (id: bigint): number => Number(id >> 32n);
const value = (id: bigint): number => Number(id & 0xffffffffn);

function expectSameData(a: ClickData, b: ClickData): void {
  expect(a.count).to.equal(b.count);
  expect(a.fields).to.equal(b.fields);
  expect(Buffer.from(a.ids.buffer, a.ids.byteOffset, a.ids.byteLength).equals(Buffer.from(b.ids.buffer, b.ids.byteOffset, b.ids.byteLength))).to.equal(true);
  expect([...a.y]).to.deep.equal([...b.y]);
  expect([...a.truth]).to.deep.equal([...b.truth]);
}

describe('worker/data: synthetic click log', function () {
  this.timeout(30_000);

  it('has the shapes its options ask for, defaults filled in', () => {
    const log = clickLog(SMALL);
    expect(log.options).to.deep.equal({ ...CLICK_LOG_DEFAULTS, ...SMALL });
    for (const [data, count] of [
      [log.train, SMALL.train],
      [log.test, SMALL.test],
    ] as const) {
      expect(data.count).to.equal(count);
      expect(data.fields).to.equal(CLICK_LOG_DEFAULTS.fields);
      expect(data.ids).to.be.instanceOf(BigUint64Array);
      expect(data.ids.length).to.equal(count * CLICK_LOG_DEFAULTS.fields);
      expect(data.y.length).to.equal(count);
      expect(data.truth.length).to.equal(count);
      expect(data.y.every((l) => l === 0 || l === 1)).to.equal(true);
      expect(data.truth.every((p) => p > 0 && p < 1)).to.equal(true);
    }
  });

  it('encodes the field in the high 32 bits of each id and the value, below vocab, in the low 32', () => {
    const log = clickLog({ ...SMALL, fields: 5, vocab: 37 });
    const { ids, fields, count } = log.train;
    for (let i = 0; i < count; i++) {
      for (let f = 0; f < fields; f++) {
        const id = ids[i * fields + f]!;
        expect(field(id)).to.equal(f);
        expect(value(id)).to.be.below(37);
        expect(id).to.equal((BigInt(f) << 32n) | BigInt(value(id)));
      }
    }
  });

  it('draws values with Zipf popularity: value 0 the most frequent of each field', () => {
    const { train } = clickLog(SMALL);
    for (let f = 0; f < train.fields; f++) {
      const counts = new Map<number, number>();
      for (let i = 0; i < train.count; i++) {
        const v = value(train.ids[i * train.fields + f]!);
        counts.set(v, (counts.get(v) ?? 0) + 1);
      }
      const top = [...counts].sort((a, b) => b[1] - a[1])[0]!;
      expect(top[0]).to.equal(0);
      // P(0) = 1 / H(1000, 1.1) ≈ 0.18.
      expect(top[1] / train.count).to.be.within(0.14, 0.22);
    }
  });

  it('is deterministic per seed: the same options give the same log, and a longer split extends a shorter one', () => {
    const a = clickLog(SMALL);
    expect(clickLog({ ...SMALL })).to.equal(a); // cached per options
    // Options that differ only in `train` share the ground truth and the split streams,
    // so the test split is the same and the shorter training split a prefix of the longer.
    const b = clickLog({ ...SMALL, train: SMALL.train + 500 });
    expect(b).to.not.equal(a);
    expectSameData(b.test, a.test);
    expectSameData(clickSlice(b.train, 0, SMALL.train), a.train);
    expect(b.referenceAuc).to.equal(a.referenceAuc);
  });

  it('differs from one seed to the next', () => {
    const a = clickLog(SMALL);
    const b = clickLog({ ...SMALL, seed: SMALL.seed + 1 });
    let sameIds = 0;
    for (let i = 0; i < a.train.ids.length; i++) if (a.train.ids[i] === b.train.ids[i]) sameIds++;
    // Ids collide often (Zipf), but far from always.
    expect(sameIds / a.train.ids.length).to.be.below(0.3);
    expect([...a.test.truth.subarray(0, 100)]).to.not.deep.equal([...b.test.truth.subarray(0, 100)]);
  });

  it('clicks at about the target rate, with labels drawn from the true probabilities', () => {
    const { train, test } = clickLog();
    for (const data of [train, test]) {
      expect(mean(data.y)).to.be.within(0.2, 0.3);
      expect(mean(data.y)).to.be.closeTo(mean(data.truth), 0.015);
    }
  });

  it('has a reference AUC, the truth against the test labels, between 0.75 and 0.82 for several seeds', () => {
    const log = clickLog();
    expect(log.referenceAuc).to.equal(auc(log.test.truth, log.test.y));
    for (const seed of [CLICK_LOG_DEFAULTS.seed, 1, 2, 3]) {
      const { referenceAuc, test } = clickLog({ seed, train: 1_000 });
      expect(referenceAuc, `seed ${seed}`).to.be.within(0.75, 0.82);
      expect(mean(test.y), `seed ${seed}`).to.be.within(0.2, 0.3);
    }
  });

  it('slices into views over the same arrays', () => {
    const { train } = clickLog(SMALL);
    const s = clickSlice(train, 100, 250);
    expect(s.count).to.equal(150);
    expect(s.fields).to.equal(train.fields);
    expect(s.ids.buffer).to.equal(train.ids.buffer);
    expect(s.y.buffer).to.equal(train.y.buffer);
    expect(s.truth.buffer).to.equal(train.truth.buffer);
    expect(s.ids[0]).to.equal(train.ids[100 * train.fields]);
    expect(s.ids.length).to.equal(150 * train.fields);
    expect(s.y[149]).to.equal(train.y[249]);
    expect(s.truth[0]).to.equal(train.truth[100]);
    expect(clickSlice(train, 7, 7).count).to.equal(0);
    expectInvalid(() => clickSlice(train, 10, 5), /slice \[10, 5\)/);
    expectInvalid(() => clickSlice(train, 0, train.count + 1), /slice/);
    expectInvalid(() => clickSlice(train, 0.5, 2), /slice/);
  });

  it('rejects options out of range', () => {
    expectInvalid(() => clickLog({ fields: 0 }), /fields/);
    expectInvalid(() => clickLog({ vocab: 1.5 }), /vocab/);
    expectInvalid(() => clickLog({ zipf: -1 }), /zipf/);
    expectInvalid(() => clickLog({ train: -1 }), /train/);
    expectInvalid(() => clickLog({ seed: -3 }), /seed/);
  });

  it('works with one field (no pairs) and a uniform vocabulary', () => {
    const log = clickLog({ seed: 9, fields: 1, vocab: 20, zipf: 0, train: 2_000, test: 2_000 });
    expect(log.train.ids.length).to.equal(2_000);
    expect(mean(log.train.y)).to.be.within(0.2, 0.3);
    expect(log.referenceAuc).to.be.above(0.6);
  });
});
