import { expect } from 'chai';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { type ClusterStatus } from '../../cli/commands/status.js';
import { RedisServer } from '../helpers/redis-server.js';
import { run, start, waitFor, type Running } from '../helpers/cli.js';

/** A shard process registers a lease in Redis; `kill -9` it and the lease expires within TTL + one renewal. */
describe('functional: a killed shard is seen dead by its lease', function () {
  this.timeout(60_000);
  const TTL = 1_000;
  const RENEW = 250;
  let redis: RedisServer;
  let store: RedisMembershipStore;
  let shard: Running | undefined;

  before(async () => {
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: 'lease' });
  });
  after(async () => {
    shard?.kill();
    await store.close();
    await redis.dispose();
  });

  it('register → lease visible → kill -9 → dead within TTL + renewal, and `status` says so', async () => {
    const init = await run(['init', '--redis', redis.url, '--cluster', 'lease', '--model', 'logreg', '--shards', '1']);
    expect(init.code, init.stderr).to.equal(0);
    shard = start(['shard', '--redis', redis.url, '--cluster', 'lease', '--id', 'only', '--lease-ttl-ms', String(TTL), '--lease-renew-ms', String(RENEW)]);
    await waitFor('the shard to register and own every slot', async () => (await store.getMap())?.owners.every((o) => o === 'only'));
    const up = await run(['status', '--redis', redis.url, '--cluster', 'lease', '--json']);
    const before = JSON.parse(up.stdout) as ClusterStatus;
    expect(before.shards).to.have.length(1);
    expect(before.shards[0]).to.include({ id: 'only', state: 'alive', slots: 1024 });
    expect(before.epoch).to.equal(1);

    // Outlive one renewal so the lease was renewed at least once by the running process.
    await new Promise((r) => setTimeout(r, 2 * RENEW));
    shard.kill('SIGKILL');
    // Killed, it deregisters nothing: its member entry goes only when the lease's TTL runs out in Redis.
    expect((await store.members('shard')).map((m) => m.id), 'still listed right after the kill').to.deep.equal(['only']);
    await waitFor('the lease to expire', async () => (await store.members('shard')).length === 0, TTL + RENEW + 10_000, 20);

    const down = await run(['status', '--redis', redis.url, '--cluster', 'lease', '--json']);
    const after = JSON.parse(down.stdout) as ClusterStatus;
    expect(after.shards[0]).to.include({ id: 'only', state: 'dead', slots: 1024 });
    expect(after.orphaned_slots).to.equal(1024);
    const table = await run(['status', '--redis', redis.url, '--cluster', 'lease']);
    expect(table.stdout).to.match(/only\s+127\.0\.0\.1:\d+\s+dead\s+1024/);
  });

  it('`init` on an existing cluster is a clear error unless --force', async () => {
    const again = await run(['init', '--redis', redis.url, '--cluster', 'lease', '--model', 'logreg']);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/already exists; pass --force/);
    const forced = await run(['init', '--redis', redis.url, '--cluster', 'lease', '--model', 'mnist-mlp', '--force']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect((await store.getConfig())?.model.name).to.equal('mnist-mlp');
    expect(await store.getMap()).to.equal(null);
  });
});
