import { expect } from 'chai';
import { rebalanceCluster } from '../../client/rebalance.js';
import { SparseClient } from '../../client/sparse-client.js';
import { type LoadPlan } from '../../cluster/rebalance-plan.js';
import { slotOfId } from '../../cluster/sparse-keys.js';
import { rng } from '../helpers/random.js';
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
/** A Zipf draw over ranks 0..n-1 with exponent s (inverse CDF over precomputed weights). */
function zipf(n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf[k - 1] = sum += 1 / k ** s;
  return () => {
    const u = random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

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

  it('ctr-like: Zipf-distributed sparse ids whose hot rows sit on one shard; after --by load both are within 20 % of the mean, every row intact', async () => {
    const DIM = 16;
    const TABLE = 'items';
    const model = { name: 'ctr-like', seed: 5, tensors: [{ name: 'w', shape: [256], init: { kind: 'zeros' as const } }], sparse: [{ name: TABLE, dim: DIM, init: { kind: 'uniform' as const, low: -0.1, high: 0.1 } }] };
    const sparseCluster = await startCluster({ shards: 2, model, slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 } });
    try {
      const client = await sparseCluster.client({ workerId: 'ctr' });
      const rows = new SparseClient(client);
      // 2,000 ids ranked by popularity; the 40 most popular are ids whose slots shard-0 owns, the rest fall where they hash.
      const map = (await sparseCluster.store.getMap())!;
      const onShard0: bigint[] = [];
      const rest: bigint[] = [];
      for (let id = 1n; onShard0.length < 40 || rest.length < 1_960; id++) {
        if (onShard0.length < 40 && map.owners[slotOfId(TABLE, id, SLOTS)] === 'shard-0') onShard0.push(id);
        else if (rest.length < 1_960) rest.push(id);
      }
      const ranked = [...onShard0, ...rest];
      const draw = zipf(ranked.length, 1.3, rng(11));
      const seen = new Set<bigint>();
      for (let b = 0; b < 60; b++) {
        const ids = [...new Set(Array.from({ length: 256 }, () => ranked[draw()]!))];
        for (const id of ids) seen.add(id);
        await rows.push(TABLE, BigUint64Array.from(ids), new Float32Array(ids.length * DIM).fill(1));
      }
      // The leases carry each slot's traffic once a map poll (1 s) and a renewal (3 s) have passed.
      await new Promise((r) => setTimeout(r, 4_500));
      const before = await rows.pull(TABLE, BigUint64Array.from(seen), { readOnly: true });

      let plan: LoadPlan | undefined;
      const moves = await rebalanceCluster(sparseCluster.store, { by: 'load', margin: 0.2, onLoadPlan: (p) => (plan = p) });
      const ratio = (loads: Record<string, number>) => Math.max(...Object.values(loads)) / plan!.mean;
      expect(plan!.before['shard-0']!, 'shard-0 holds the hot rows').to.be.greaterThan(plan!.before['shard-1']!);
      expect(ratio(plan!.before), 'outside the margin before').to.be.greaterThan(1.2);
      expect(ratio(plan!.after), 'within the margin after').to.be.at.most(1.2);
      expect(moves.length).to.be.greaterThan(0);
      expect(moves.every((m) => m.from === 'shard-0'), 'the moves take load off shard-0').to.equal(true);
      const after = await rows.pull(TABLE, BigUint64Array.from(seen), { readOnly: true });
      expect(Buffer.from(after.buffer).equals(Buffer.from(before.buffer)), 'every row as it was, wherever its slot is now').to.equal(true);
      rows.close();
    } finally {
      await sparseCluster.close();
    }
  });
});
