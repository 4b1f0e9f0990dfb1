import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { ShardServer } from '../../server/shard-server.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { flatModel } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/cli.js';
import { forEachTransport } from '../helpers/transports.js';

/**
 * Redis restarts empty under a serving cluster: the shards put the
 * configuration back and rebuild the map from what they hold, at a higher
 * epoch; no slot and no value is lost, and clients carry on.
 */
forEachTransport('functional: Redis restarted empty', function (transport) {
  this.timeout(60_000);
  let redis: RedisServer;
  const stores: RedisMembershipStore[] = [];
  const shards: ShardServer[] = [];
  let client: TesseraClient | undefined;
  const newStore = () => {
    const s = new RedisMembershipStore({ url: redis.url, cluster: 'rebuild', commandTimeoutMs: 500, reconnectMaxDelayMs: 200 });
    stores.push(s);
    return s;
  };

  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await client?.close();
    for (const s of shards) await s.close(100);
    for (const s of stores) await s.close();
    await redis.dispose();
  });

  it('the map is rebuilt from the shards with a higher epoch, every slot and value kept', async () => {
    const config: ClusterConfig = { name: 'rebuild', slots: 64, model: flatModel(10_000), optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }), consistency: 'async', initialShards: 2 };
    await newStore().createCluster(config);
    for (const id of ['a', 'b']) shards.push(await ShardServer.start({ id, listen: '127.0.0.1:0', store: newStore(), lease: { ttlMs: 1_000, renewMs: 200 }, mapPollMs: 300 }));
    const observer = newStore();
    const before = await waitFor('the first map', () => observer.getMap().then((m) => m ?? undefined));
    expect(before.epoch).to.equal(1);

    client = await TesseraClient.connect({ store: newStore(), workerId: 'w', transport });
    await client.push(new Float32Array(client.elements).fill(0.5));
    const trained = await client.pull();

    await redis.restart();
    expect(await observer.getConfig().catch(() => null)).to.equal(null);

    const after = await waitFor('the rebuilt map', async () => {
      const m = await observer.getMap();
      return m && m.epoch > before.epoch ? m : undefined;
    });
    expect(after.epoch).to.equal(2);
    expect(after.owners).to.deep.equal(before.owners);
    expect(after.addresses).to.deep.equal(before.addresses);
    expect((await observer.getConfig())?.model).to.deep.equal(config.model);
    await waitFor('both shards to serve the new epoch', () => shards.every((s) => s.shard.epoch === 2));

    // The client still holds epoch 1: it is refused as stale, re-reads, and reads the same values.
    const again = await client.pull();
    expect(client.epoch).to.equal(2);
    expect(Buffer.from(again.buffer).equals(Buffer.from(trained.buffer))).to.equal(true);
    const stats = await client.push(new Float32Array(client.elements).fill(0.5));
    expect(stats.appliedSlots).to.equal(64);
  });
});

/**
 * Redis and one shard go down together (Redis back empty, the shard back from
 * its checkpoint): the shard claims the slots of its checkpoint at the
 * checkpoint's map epoch, the live shard claims its own, and the map is
 * rebuilt from both, every value kept. Before, the map was never rebuilt
 * (epoch 0, every client refused "no shard map yet").
 */
describe('functional: Redis and a shard lost together', function () {
  this.timeout(60_000);
  let redis: RedisServer;
  const stores: RedisMembershipStore[] = [];
  const shards: ShardServer[] = [];
  let client: TesseraClient | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-redis-shard-'));
  const newStore = () => {
    const s = new RedisMembershipStore({ url: redis.url, cluster: 'both', commandTimeoutMs: 500, reconnectMaxDelayMs: 200 });
    stores.push(s);
    return s;
  };

  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await client?.close();
    for (const s of shards) await s.close(100);
    for (const s of stores) await s.close();
    await redis.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the map is rebuilt from the live shard and the restored one; no value is lost', async () => {
    const config: ClusterConfig = { name: 'both', slots: 64, model: flatModel(10_000), optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }), consistency: 'async', initialShards: 2 };
    await newStore().createCluster(config);
    const lease = { ttlMs: 1_000, renewMs: 200 };
    for (const id of ['a', 'b']) shards.push(await ShardServer.start({ id, listen: '127.0.0.1:0', store: newStore(), lease, mapPollMs: 300, checkpoints: { directory: dir, everyMs: 0 } }));
    const observer = newStore();
    const before = await waitFor('the first map', () => observer.getMap().then((m) => m ?? undefined));
    client = await TesseraClient.connect({ store: newStore(), workerId: 'w' });
    await client.push(new Float32Array(client.elements).fill(0.5));
    const trained = await client.pull();

    // Shard b stops (writing its checkpoint), and Redis comes back empty while it is away.
    const b = shards.pop()!;
    const place = { id: b.shard.id, listen: b.address, bulkPort: Number(b.bulkAddress.split(':').pop()) };
    await b.close(0);
    await redis.restart();
    shards.push(await ShardServer.start({ ...place, store: newStore(), lease, mapPollMs: 300, checkpoints: { directory: dir, everyMs: 0 }, resume: true }));

    const after = await waitFor('the rebuilt map', async () => {
      const m = await observer.getMap().catch(() => null);
      return m && m.epoch > before.epoch ? m : undefined;
    });
    expect(after.owners, 'each slot with the shard that holds it').to.deep.equal(before.owners);
    await waitFor('both shards to serve the new epoch', () => shards.every((s) => s.shard.epoch === after.epoch));
    expect(shards.every((s) => s.shard.lost.size === 0), 'nothing lost').to.equal(true);
    const again = await client.pull();
    expect(Buffer.from(again.buffer).equals(Buffer.from(trained.buffer)), 'every value as trained').to.equal(true);
  });
});
