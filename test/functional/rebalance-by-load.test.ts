import { expect } from 'chai';
import { rebalanceCluster } from '../../client/rebalance.js';
import { type LoadPlan } from '../../cluster/rebalance-plan.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

const D = 64 * 1024;
const SLOTS = 64;

/**
 * Load-aware rebalancing on a real cluster: one shard holds the hot slots (a
 * skewed workload, as Zipf-distributed ids make), the shards measure the
 * traffic of each slot and publish it with their leases, and `rebalance --by
 * load` moves the fewest slots that bring every shard within the margin of
 * the mean; every value is still there afterwards.
 */
describe('functional: rebalance by load', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  after(async () => cluster.close());

  it('a shard holding the hot slots gives some away until both are within 20 % of the mean; no value is lost', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 } });
    const client = await cluster.client({ workerId: 'w0' });
    const start = await client.pull();
    // Skewed traffic: slot s of shard-0 (0-31) gets pushes in proportion to 1/(s+1); shard-1's slots one push each.
    const g = new Float32Array(D).fill(1);
    const pushes = new Array<number>(SLOTS);
    for (let s = 0; s < SLOTS; s++) pushes[s] = s < 32 ? Math.round(32 / (s + 1)) : 1;
    for (let s = 0; s < SLOTS; s++) {
      for (let k = 0; k < pushes[s]!; k++) await client.pushRanges([{ begin: s, end: s + 1 }], g.subarray(0, D / SLOTS));
    }
    // The leases carry each slot's traffic once a map poll (1 s) and a renewal (3 s) have passed since the last push.
    await new Promise((r) => setTimeout(r, 4_500));
    const leases = await cluster.store.members('shard');
    expect(leases.every((m) => (m.load ?? []).length > 0), 'each lease carries its slots’ load').to.equal(true);

    let plan: LoadPlan | undefined;
    const moves = await rebalanceCluster(cluster.store, { by: 'load', margin: 0.2, onLoadPlan: (p) => (plan = p) });
    expect(plan, 'the plan with its loads').to.not.equal(undefined);
    const before = Math.max(...Object.values(plan!.before)) / plan!.mean;
    const after = Math.max(...Object.values(plan!.after)) / plan!.mean;
    expect(before, 'skewed before').to.be.greaterThan(1.3);
    expect(after, 'within the margin after').to.be.at.most(1.2);
    expect(moves.length).to.be.greaterThan(0);
    expect(moves.every((m) => m.from === 'shard-0' && m.to === 'shard-1')).to.equal(true);
    const map = (await cluster.store.getMap())!;
    for (const m of moves) for (const s of m.slots) expect(map.owners[s]).to.equal('shard-1');

    // Every value as the pushes made it, wherever its slot is now.
    const values = await client.pull();
    const slotLength = D / SLOTS;
    for (let i = 0; i < D; i += 97) {
      let want = start[i]!;
      for (let k = 0; k < pushes[Math.floor(i / slotLength)]!; k++) want = Math.fround(want - 1);
      expect(values[i], `element ${i}`).to.equal(want);
    }
  });
});
