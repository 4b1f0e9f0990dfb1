import { expect } from 'chai';
import { ShardUnavailableError } from '../../cluster/errors.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

/** A shard that is gone surfaces as a typed, retryable error within bounded time, never a hang. */
describe('functional: a dead shard', function () {
  this.timeout(30_000);
  let cluster: TestCluster;
  after(async () => cluster.close());

  it('pull and push fail with ShardUnavailableError after the retries, naming the address', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(8192), slots: 16 });
    const client = await cluster.client({ maxRetries: 2, retryDelayMs: 20, deadlineMs: 2_000 });
    await client.pull();
    const gone = cluster.shards[1]!;
    await gone.close(0);

    const started = Date.now();
    const err = await client.pull().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ShardUnavailableError);
    expect((err as ShardUnavailableError).retryable).to.equal(true);
    expect((err as ShardUnavailableError).address).to.equal(gone.address);
    expect((err as Error).message).to.contain(gone.address);
    // Two retries with 20 and 40 ms of backoff: well within one deadline.
    expect(Date.now() - started).to.be.below(2_000);

    const pushErr = await client.push(new Float32Array(client.elements)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(pushErr).to.be.instanceOf(ShardUnavailableError);
  });
});
