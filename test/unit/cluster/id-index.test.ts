import { expect } from 'chai';
import { IdIndex } from '../../../cluster/id-index.js';

describe('cluster/id-index', () => {
  it('finds what it added, across growth, telling ids apart by either half', () => {
    const index = new IdIndex();
    const n = 20_000;
    // Ids that share a low half, ids that share a high half, and the extremes.
    const key = (i: number): [number, number] => (i % 2 === 0 ? [i, 0xffffffff] : [0xffffffff, i]);
    let wrong = 0;
    for (let i = 0; i < n; i++) if (index.getOrAdd(...key(i), i) !== -1) wrong++;
    expect(index.size).to.equal(n);
    for (let i = 0; i < n; i++) if (index.get(...key(i)) !== i) wrong++;
    expect(wrong).to.equal(0);
    expect(index.getOrAdd(...key(17), 99)).to.equal(17);
    expect(index.get(0xffffffff, 0xffffffff)).to.equal(-1);
    expect(index.getOrAdd(0xffffffff, 0xffffffff, 5)).to.equal(-1);
    expect(index.get(-1, -1)).to.equal(5);
    expect(index.get(1, 1)).to.equal(-1);
    expect(index.size).to.equal(n + 1);
  });
});
