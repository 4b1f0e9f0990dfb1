import { expect } from 'chai';
import { rebalanceCluster } from '../../client/rebalance.js';
import { SparseClient } from '../../client/sparse-client.js';
import { MigrationError } from '../../cluster/errors.js';
import { type ModelSpec, initialValues } from '../../cluster/model-spec.js';
import { slotCounts } from '../../cluster/shard-map.js';
import { ShardServer } from '../../server/shard-server.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

const D = 8192;
const MODEL: ModelSpec = { ...flatModel(D, 'moving'), sparse: [{ name: 'emb', dim: 4, init: { kind: 'zeros' } }] };
const IDS = BigUint64Array.from({ length: 600 }, (_, i) => BigInt(i) * 104729n);

/**
 * Slots move between live shards while a worker pushes without pause: under
 * sgd with learning rate 1 every push of −1 adds exactly 1 to every value and
 * every row it touches, so after the moves each value must have moved by the
 * number of pushes acknowledged — none lost, none applied twice — whichever
 * shard holds it now.
 */
forEachTransport('functional: live slot migration', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  const extra: ShardServer[] = [];
  after(async () => {
    for (const s of extra) await s.close(0);
    await cluster?.close();
  });

  it('a third shard joins and takes its share while a worker pushes; then it is drained again; every push applied once', async () => {
    cluster = await startCluster({ shards: 2, model: MODEL, optimizer: { name: 'sgd', learningRate: 1 }, slots: 64, transport });
    const client = await cluster.client({ workerId: 'w0', retryDelayMs: 20, maxRetries: 20 });
    const sparse = new SparseClient(client);
    const minusOne = new Float32Array(D).fill(-1);
    const minusOneRows = new Float32Array(IDS.length * 4).fill(-1);
    let dense = 0;
    let rows = 0;
    let stop = false;
    const pusher = (async () => {
      while (!stop) {
        await client.push(minusOne);
        dense++;
        await sparse.push('emb', IDS, minusOneRows);
        rows++;
      }
    })();
    const expectValues = async () => {
      const start = new Float32Array(D);
      initialValues(MODEL, 0, start);
      const now = await client.pull();
      for (let i = 0; i < D; i++) {
        let want = start[i]!;
        for (let k = 0; k < dense; k++) want = Math.fround(want + 1);
        if (now[i] !== want) expect.fail(`element ${i}: ${now[i]} after ${dense} pushes, want ${want}`);
      }
      const pulled = await sparse.pull('emb', IDS, { readOnly: true });
      expect(pulled.every((v) => v === rows), `every row moved by the ${rows} row pushes`).to.equal(true);
    };

    await new Promise((r) => setTimeout(r, 100));
    extra.push(await ShardServer.start({ id: 'shard-2', listen: '127.0.0.1:0', store: cluster.store }));
    const moves = await rebalanceCluster(cluster.store, { perMove: 8 });
    expect(moves.length, 'moves of at most 8 slots').to.be.at.least(3);
    let map = (await cluster.store.getMap())!;
    expect(Object.fromEntries(slotCounts(map))).to.deep.equal({ 'shard-0': 22, 'shard-1': 21, 'shard-2': 21 });
    expect(await rebalanceCluster(cluster.store), 'already even').to.deep.equal([]);
    await new Promise((r) => setTimeout(r, 100));

    await rebalanceCluster(cluster.store, { drain: ['shard-2'] });
    map = (await cluster.store.getMap())!;
    expect(Object.fromEntries(slotCounts(map))).to.deep.equal({ 'shard-0': 32, 'shard-1': 32 });
    expect(extra[0]!.shard.store.heldElements(), 'the drained shard let go of the slots').to.equal(0);
    stop = true;
    await pusher;
    expect(dense, 'the worker kept pushing').to.be.greaterThan(10);
    await expectValues();
  });

  it('a move whose target cannot be reached is undone: the map is unchanged and the source serves on', async () => {
    const c = await startCluster({ shards: 2, model: flatModel(2048), optimizer: { name: 'sgd', learningRate: 1 }, slots: 16, transport });
    try {
      const client = await c.client({ workerId: 'w-undo' });
      await client.push(new Float32Array(2048).fill(-1));
      const before = await client.pull();
      const map = (await c.store.getMap())!;
      const source = c.shards[0]!;
      const err = await source.moveSlots([0, 1, 2], 'nowhere', '127.0.0.1:1').catch((e: unknown) => e);
      expect(err, 'the target was unreachable').to.be.instanceOf(Error);
      expect((await c.store.getMap())!.epoch).to.equal(map.epoch);
      expect(source.shard.frozen.size, 'nothing left frozen').to.equal(0);
      expect(source.shard.migration, 'no log left recording').to.equal(null);
      await client.push(new Float32Array(2048).fill(-1));
      const after = await client.pull();
      expect(after.every((v, i) => v === Math.fround(before[i]! + 1)), 'the slots serve on, here').to.equal(true);
    } finally {
      await c.close();
    }
  });
});

/** No dense values travel here: it runs once. */
describe('functional: live slot migration under bsp', function () {
  this.timeout(60_000);
  const extra: ShardServer[] = [];
  after(async () => {
    for (const s of extra) await s.close(0);
  });

  it('is refused under bsp, naming why; nothing moves', async () => {
    const bsp = await startCluster({ shards: 2, model: flatModel(1024), consistency: 'bsp', slots: 16 });
    try {
      extra.push(await ShardServer.start({ id: 'shard-9', listen: '127.0.0.1:0', store: bsp.store }));
      const before = (await bsp.store.getMap())!;
      const err = await rebalanceCluster(bsp.store).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(MigrationError);
      expect((err as Error).message).to.match(/cannot move under bsp/);
      expect((await bsp.store.getMap())!.epoch).to.equal(before.epoch);
    } finally {
      await bsp.close();
    }
  });
});
