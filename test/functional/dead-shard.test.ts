import { expect } from 'chai';
import { ShardUnavailableError } from '../../cluster/errors.js';
import { rebalanceCluster } from '../../client/rebalance.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

/**
 * A shard that is gone surfaces as a typed, retryable error once the client's
 * retries are spent, never a hang: the failure is the refused connection, not
 * a deadline run out.
 */
forEachTransport('functional: a dead shard', function (transport) {
  this.timeout(30_000);
  let cluster: TestCluster;
  after(async () => cluster.close());

  it('pull and push fail with ShardUnavailableError after the retries, naming the address', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(8192), slots: 16, transport });
    // No timed map refresh (the test ends long before the hour), so every re-read of the map below is a retry's.
    const client = await cluster.client({ maxRetries: 2, retryDelayMs: 20, deadlineMs: 2_000, mapRefreshMs: 3_600_000 });
    await client.pull();
    const gone = cluster.shards[1]!;
    await gone.close(0);
    let retries = 0;
    const refreshMap = client.refreshMap.bind(client);
    client.refreshMap = () => {
      retries++;
      return refreshMap();
    };

    const err = await client.pull().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ShardUnavailableError);
    expect((err as ShardUnavailableError).retryable).to.equal(true);
    expect((err as ShardUnavailableError).address).to.equal(gone.address);
    expect((err as Error).message).to.contain(gone.address);
    // It gave up after exactly maxRetries retries, each failing on the refused
    // connection; a client that waited for an answer instead would fail with
    // the deadline's "Deadline exceeded" (or hang until mocha's timeout).
    expect(retries, 'retries before giving up').to.equal(2);
    expect((err as Error).message).to.match(/ECONNREFUSED|No connection established/);
    expect((err as Error).message).to.not.match(/deadline/i);

    retries = 0;
    const pushErr = await client.push(new Float32Array(client.elements)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(pushErr).to.be.instanceOf(ShardUnavailableError);
    expect(retries, 'push retries before giving up').to.equal(2);
    expect((pushErr as Error).message).to.not.match(/deadline/i);
  });
});

/**
 * A rebalance with a dead shard holding slots: the moves from it cannot be
 * made (a move is made by the shard holding the slots), so the plan is
 * refused before any move, dry run or not, naming the shard and the way out.
 * Before, the dry run printed a plan that could not run, and the real run
 * failed on its first move with raw gRPC text.
 */
describe('functional: rebalancing with a dead shard', function () {
  this.timeout(30_000);
  let cluster: TestCluster;
  after(async () => cluster.close());

  it('is refused up front, dry run or not, saying which shard and what to do', async () => {
    cluster = await startCluster({ shards: 3, model: flatModel(4096), slots: 30 });
    const before = await cluster.store.getMap();
    await cluster.shards[2]!.close(0);
    for (const dryRun of [true, false]) {
      const err = await rebalanceCluster(cluster.store, { drain: ['shard-0'], dryRun }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, `dry run: ${dryRun}`).to.be.instanceOf(ShardUnavailableError);
      expect((err as Error).message).to.match(/shard shard-2 \(10 slots\) holds no live lease: a move is made by the shard that holds the slots, so none of its slots can move until it is back .* Start it again, from its checkpoint \(--resume\), then rebalance/);
    }
    expect(await cluster.store.getMap(), 'nothing moved').to.deep.equal(before);
  });
});
