import { expect } from 'chai';
import { TesseraClient } from '../../client/tessera-client.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { slotCounts } from '../../cluster/shard-map.js';
import { type Running, run, start, waitFor } from '../helpers/cli.js';
import { RedisServer } from '../helpers/redis-server.js';

/**
 * The operator's rebalance, as separate processes over a real Redis: a third
 * `tessera shard` joins a trained cluster and gets nothing; `tessera
 * rebalance` moves it its share, live; `--drain` empties it again; the
 * weights are the same throughout, bit for bit.
 */
describe('e2e: tessera rebalance', function () {
  this.timeout(120_000);
  let redis: RedisServer;
  let store: RedisMembershipStore;
  const shards: Running[] = [];
  const at = (args: string[]) => [...args, '--redis', redis.url, '--cluster', 'rb'];

  before(async () => {
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: 'rb' });
  });
  after(async () => {
    for (const s of shards) s.kill('SIGKILL');
    await store.close();
    await redis.dispose();
  });

  const pullAll = async () => {
    const client = await TesseraClient.connect({ store, workerId: 'reader' });
    try {
      return Buffer.from((await client.pull()).buffer);
    } finally {
      await client.close();
    }
  };
  const counts = async () => Object.fromEntries([...slotCounts((await store.getMap())!)].filter(([, n]) => n > 0));

  it('spreads the slots over a new shard, then drains it, moving the values with them', async () => {
    expect((await run(at(['init', '--model', 'logreg', '--shards', '2', '--slots', '64']))).code).to.equal(0);
    for (const id of ['shard-0', 'shard-1']) shards.push(start(at(['shard', '--id', id])));
    await waitFor('2 shards serving', async () => (await store.members('shard')).filter((m) => m.state === 'serving').length === 2, 30_000);
    const worker = await run(at(['worker', '--id', 'w0', '--epochs', '1', '--json']));
    expect(worker.code, worker.stderr).to.equal(0);
    const trained = await pullAll();

    shards.push(start(at(['shard', '--id', 'shard-2'])));
    await waitFor('the third shard registered', async () => (await store.members('shard')).length === 3, 30_000);
    const plan = await run(at(['rebalance', '--dry-run']));
    expect(plan.code, plan.stderr).to.equal(0);
    expect(plan.stdout).to.match(/→ shard-2: \d+ slots/);
    expect(await counts(), 'a dry run moves nothing').to.deep.equal({ 'shard-0': 32, 'shard-1': 32 });
    // By load: each shard's traffic before and after the plan (the new shard carries none yet).
    const byLoad = await run(at(['rebalance', '--by', 'load', '--margin', '0.2', '--dry-run']));
    expect(byLoad.code, byLoad.stderr).to.equal(0);
    expect(byLoad.stdout).to.match(/shard-0: [\d.]+ [kM]?B\/s → [\d.]+ [kM]?B\/s \(mean [\d.]+ [kM]?B\/s, margin 20 %\)/);
    expect(byLoad.stdout).to.match(/shard-2: 0 B\/s → /);
    expect(await counts(), 'a dry run moves nothing').to.deep.equal({ 'shard-0': 32, 'shard-1': 32 });

    const moved = await run(at(['rebalance']));
    expect(moved.code, moved.stderr).to.equal(0);
    expect(moved.stdout).to.match(/shard-\d → shard-2: \d+ slots .*map epoch \d+/);
    expect(await counts()).to.deep.equal({ 'shard-0': 22, 'shard-1': 21, 'shard-2': 21 });
    expect((await pullAll()).equals(trained), 'the same weights, now on three shards').to.equal(true);

    const drained = await run(at(['rebalance', '--drain', 'shard-2']));
    expect(drained.code, drained.stderr).to.equal(0);
    expect(await counts()).to.deep.equal({ 'shard-0': 32, 'shard-1': 32 });
    expect((await pullAll()).equals(trained), 'and back on two').to.equal(true);
    const again = await run(at(['rebalance', '--drain', 'shard-2']));
    expect(again.stdout).to.match(/already spread evenly/);
    // A typo in --drain is refused, naming the shards there are, and moves nothing.
    const typo = await run(at(['rebalance', '--drain', 'shard-22']));
    expect(typo.code).to.equal(1);
    expect(typo.stderr).to.match(/no shard shard-22 in this cluster; its shards are shard-0, shard-1, shard-2/);
    expect(await counts()).to.deep.equal({ 'shard-0': 32, 'shard-1': 32 });
  });
});
