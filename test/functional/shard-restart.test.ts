import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { checkpointPath } from '../../server/checkpoint.js';
import { ShardServer } from '../../server/shard-server.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

const D = 10_000;

/**
 * A planned restart of a shard, as an operator does one (SIGTERM: the shard
 * answers what it has, writes its checkpoint, leaves; then starts again on
 * the same address from that file): a client's push sent while the shard is
 * down keeps retrying (for up to retryForMs, 30 s by default) and is applied
 * once the shard is back, found within about a second; nothing is lost or
 * applied twice. Before, the client gave up after five retries (≈ 1.5 s), and
 * a worker exited during a 5-second restart.
 */
forEachTransport('functional: a shard restarted while a client pushes', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster;
  let restarted: ShardServer | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-restart-'));
  after(async () => {
    await restarted?.close(100);
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a push sent while the shard is down for 3 s is applied once it is back, exactly once', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(D), slots: 16, optimizer: { name: 'sgd', learningRate: 1 }, transport, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0' });
    const start = await client.pull();
    const one = new Float32Array(D).fill(1);
    await client.push(one);

    const shard = cluster.shards[0]!;
    const place = { id: shard.shard.id, listen: shard.address, bulkPort: Number(shard.bulkAddress.split(':').pop()) };
    await shard.close(0);
    const pushed = client.push(one);
    await new Promise((r) => setTimeout(r, 3_000));
    restarted = await ShardServer.start({ ...place, store: cluster.store, restore: checkpointPath(dir, place.id), checkpoints: { directory: dir, everyMs: 0 } });
    const back = performance.now();
    const ack = await pushed;
    const noticedMs = performance.now() - back;
    expect(ack.appliedSlots, 'applied on the shard that came back').to.equal(16);
    expect(noticedMs, 'found again within a few seconds (the retry backoff is at most 1 s)').to.be.below(5_000);

    const values = await client.pull();
    for (let i = 0; i < D; i++) expect(values[i], `element ${i}`).to.equal(Math.fround(Math.fround(start[i]! - 1) - 1));
  });
});
