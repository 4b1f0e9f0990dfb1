import { expect } from 'chai';
import { type NodePool } from '../../client/node-pool.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

/**
 * A shard publishes its bulk transport's address with its lease, the map
 * carries it, and a client reaches the bulk port from the map alone — no
 * Describe round trip per shard — falling back to asking the shard once a
 * bulk channel from the map has failed.
 */
describe('functional: bulk addresses in the shard map', function () {
  this.timeout(30_000);
  let cluster: TestCluster;
  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(5_000), slots: 32 });
  });
  after(async () => {
    await cluster.close();
  });

  it('the map names every shard’s bulk port, and a client uses it without asking the shards', async () => {
    const map = (await cluster.store.getMap())!;
    for (const s of cluster.shards) expect(map.bulk?.[s.shard.id], s.shard.id).to.equal(s.bulkAddress);
    const client = await cluster.client({ workerId: 'w' });
    const nodes = client.nodes as NodePool;
    let asked = 0;
    const describe = nodes.describe.bind(nodes);
    nodes.describe = (address: string) => {
      asked++;
      return describe(address);
    };
    await client.push(new Float32Array(client.elements).fill(0.5));
    await client.pull();
    expect(asked, 'Describe calls').to.equal(0);
  });

  it('a closed client opens no connection again: a request still recovering fails instead', async () => {
    const client = await cluster.client({ workerId: 'closing' });
    await client.pull();
    await client.close();
    const err = await client.pull().then(() => null, (e: Error) => e);
    expect(err?.message).to.match(/the client is closed/);
  });
});
