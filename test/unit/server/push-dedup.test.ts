import { expect } from 'chai';
import { DEDUP_WINDOW, PushDedup } from '../../../server/push-dedup.js';

describe('server/push-dedup', () => {
  it('remembers a (worker, seq) once it is added, and nothing else', () => {
    const d = new PushDedup();
    expect(d.has('w1', 0)).to.equal(false);
    expect(d.has('w1', 1)).to.equal(false);
    d.add('w1', 1);
    expect(d.has('w1', 1)).to.equal(true);
    expect(d.has('w1', 2)).to.equal(false);
    expect(d.has('w1', 0)).to.equal(false);
    d.add('w1', 0);
    expect(d.has('w1', 0)).to.equal(true);
  });

  it('keeps workers apart: the same seq from another worker is new', () => {
    const d = new PushDedup();
    d.add('w1', 5);
    expect(d.has('w2', 5)).to.equal(false);
    expect(d.has('', 5)).to.equal(false);
    d.add('w2', 5);
    expect(d.has('w2', 5)).to.equal(true);
    // Worker ids are compared whole, not by prefix.
    expect(d.has('w', 5)).to.equal(false);
    expect(d.has('w11', 5)).to.equal(false);
  });

  it('accepts out-of-order seqs within the window, each once', () => {
    const d = new PushDedup(100);
    for (const seq of [50, 10, 49, 30, 51, 1]) {
      expect(d.has('w', seq), `seq ${seq} before it is added`).to.equal(false);
      d.add('w', seq);
      expect(d.has('w', seq), `seq ${seq} after it is added`).to.equal(true);
    }
    for (const seq of [2, 9, 11, 29, 31, 48, 52]) expect(d.has('w', seq), `seq ${seq} was never added`).to.equal(false);
  });

  it('counts anything older than the window below the highest seq as applied', () => {
    const d = new PushDedup(8);
    d.add('w', 100);
    // (92, 100] is the window: older seqs are assumed applied, newer ones are not.
    expect(d.has('w', 92)).to.equal(true);
    expect(d.has('w', 0)).to.equal(true);
    expect(d.has('w', 93)).to.equal(false);
    expect(d.has('w', 99)).to.equal(false);
    expect(d.has('w', 101)).to.equal(false);
    // Only per worker.
    expect(d.has('v', 0)).to.equal(false);
  });

  it('remembers every seq of a long in-order run, through pruning', () => {
    const d = new PushDedup(16);
    for (let seq = 0; seq < 1000; seq++) {
      expect(d.has('w', seq), `seq ${seq} is new`).to.equal(false);
      d.add('w', seq);
    }
    let forgotten = -1;
    for (let seq = 0; seq < 1000; seq++) if (!d.has('w', seq)) forgotten = seq;
    expect(forgotten, `seq ${forgotten} was forgotten`).to.equal(-1);
    expect(d.has('w', 1000)).to.equal(false);
  });

  it('remembers out-of-order seqs inside the window across pruning, and stays bounded in memory', () => {
    const window = 32;
    const d = new PushDedup(window);
    // Interleave: a fast stream of seqs and some late ones arriving within the window.
    const added = new Set<number>();
    for (let seq = 0; seq < 2000; seq += 2) {
      d.add('w', seq);
      added.add(seq);
      const late = seq - 21; // odd, within the window below `seq`
      if (late > 0) {
        expect(d.has('w', late), `late seq ${late}`).to.equal(false);
        d.add('w', late);
        added.add(late);
      }
    }
    for (let seq = 0; seq < 1998; seq++) {
      // Every seq either added or below the window counts as applied; the rest do not.
      const expected = added.has(seq) || seq <= 1998 - window;
      expect(d.has('w', seq), `seq ${seq}`).to.equal(expected);
    }
    // What is remembered is a fixed-size bitmap of the window, however many seqs went by.
    const bits = (d as unknown as { workers: Map<string, { bits: Uint32Array }> }).workers.get('w')!.bits;
    expect(bits.byteLength).to.equal(window / 8);
  });

  it('handles sequence numbers as large as a millisecond clock', () => {
    const d = new PushDedup();
    const now = 1_760_000_000_000;
    d.add('w', now);
    expect(d.has('w', now)).to.equal(true);
    expect(d.has('w', now + 1)).to.equal(false);
    expect(d.has('w', now - 1)).to.equal(false);
    expect(d.has('w', now - DEDUP_WINDOW)).to.equal(true);
    expect(d.has('w', Number.MAX_SAFE_INTEGER)).to.equal(false);
  });

  it('has a default window of 4096', () => {
    expect(DEDUP_WINDOW).to.equal(4096);
    const d = new PushDedup();
    d.add('w', 10_000);
    expect(d.has('w', 10_000 - 4096)).to.equal(true);
    expect(d.has('w', 10_000 - 4095)).to.equal(false);
  });
});

describe('server/push-dedup: cost', () => {
  it('a worker pushing 20,000 times to 1024 slots stays within a few MB', () => {
    const slots = Array.from({ length: 1024 }, () => new PushDedup());
    const before = process.memoryUsage().heapUsed;
    for (let seq = 0; seq < 20_000; seq++) for (const d of slots) if (!d.has('w', seq)) d.add('w', seq);
    const grown = process.memoryUsage().heapUsed - before;
    expect(grown).to.be.below(16 << 20);
    for (const d of slots) expect(d.has('w', 19_999)).to.equal(true);
  });
});
