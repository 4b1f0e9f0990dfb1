import { expect } from 'chai';
import { MemoryMembershipStore } from '../../../cluster/membership/memory-store.js';
import { BlockPlan, type IndexBatch, claimedBatches } from '../../../worker/data/work-source.js';
import { WorkerClock } from '../../../worker/step-clock.js';

describe('worker/data/work-source: blocks claimed from the store', () => {
  it('cuts each claimed block into batches, flags the last of each block, and covers every example of every epoch once', async () => {
    const store = new MemoryMembershipStore();
    await store.register('worker', { id: 'w' }, 60_000);
    const plan = new BlockPlan(10, 2, 4, 1); // blocks of 4, 4, 2 per epoch
    const blocks: number[] = [];
    const got: IndexBatch[] = [];
    for await (const b of claimedBatches({ store, workerId: 'w', plan, batchSize: 3, onBlock: (e) => blocks.push(e.item) })) got.push({ ...b, indices: b.indices.slice() });
    expect(blocks).to.deep.equal([0, 1, 2, 3, 4, 5]);
    expect(got.map((b) => b.indices.length)).to.deep.equal([3, 1, 3, 1, 2, 3, 1, 3, 1, 2]);
    expect(got.map((b) => Boolean(b.lastOfBlock))).to.deep.equal([false, true, false, true, true, false, true, false, true, true]);
    for (const epoch of [0, 1]) {
      const seen = got.filter((b) => b.epoch === epoch).flatMap((b) => [...b.indices]);
      expect(seen.sort((a, b) => a - b)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
    expect(got.some((b) => b.resumed)).to.equal(false);
  });

  it('a worker that found nothing to claim says it is idle, then flags its first batch after as resumed', async () => {
    const store = new MemoryMembershipStore();
    await store.register('worker', { id: 'w' }, 60_000);
    await store.register('worker', { id: 'other' }, 60_000);
    const plan = new BlockPlan(4, 1, 4, 1); // one block in all
    expect(await store.claimWork('other', plan.plan, 0)).to.include({ kind: 'item', item: 0 });
    const idle: boolean[] = [];
    const got: IndexBatch[] = [];
    const run = (async () => {
      for await (const b of claimedBatches({ store, workerId: 'w', plan, batchSize: 2, idlePollMs: 10, claimGraceMs: 0, onIdle: (i) => idle.push(i) })) got.push(b);
    })();
    await new Promise((r) => setTimeout(r, 50));
    expect(idle, 'the only block is held by another').to.deep.equal([true]);
    expect(got).to.have.length(0);
    // The other worker dies holding it: w takes it over and comes back from idle.
    await store.deregister('worker', 'other');
    await run;
    expect(idle).to.deep.equal([true, false]);
    expect(got.map((b) => Boolean(b.resumed))).to.deep.equal([true, false]);
    expect(got.map((b) => Boolean(b.lastOfBlock))).to.deep.equal([false, true]);
  });

  it('WorkerClock: under ssp/bsp step k is the cluster clock at join plus k, and a rejoin moves it', async () => {
    let cluster = 5;
    const clock = new WorkerClock({ clocked: true, clusterClock: async () => cluster });
    await clock.join(0);
    expect(clock.at(0)).to.deep.equal({ clock: 5, join: true });
    expect(clock.at(3)).to.deep.equal({ clock: 8, join: false });
    cluster = 20;
    await clock.join(4);
    expect(clock.at(4)).to.deep.equal({ clock: 20, join: true });
    expect(clock.at(6)).to.deep.equal({ clock: 22, join: false });
    const async = new WorkerClock({});
    await async.join(0);
    expect(async.at(0)).to.equal(undefined);
  });
});
