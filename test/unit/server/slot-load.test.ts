import { expect } from 'chai';
import { LOAD_HALF_LIFE_MS, SlotLoad } from '../../../server/slot-load.js';

describe('unit: the traffic each slot carries', () => {
  it('a steady rate reads back as that rate; it halves each half-life once traffic stops', () => {
    let now = 0;
    const load = new SlotLoad(4, () => now);
    // 1,000 bytes a second on slot 2 for ten half-lives.
    for (let t = 0; t < 10 * LOAD_HALF_LIFE_MS; t += 1_000) {
      now = t;
      load.begin();
      load.add(2, 1_000);
    }
    const steady = load.rates();
    expect(steady.map((r) => r.slot)).to.deep.equal([2]);
    expect(steady[0]!.bytesPerSec).to.be.within(990, 1_010);
    now += LOAD_HALF_LIFE_MS;
    expect(load.rates()[0]!.bytesPerSec).to.be.within(495, 505);
  });
});
