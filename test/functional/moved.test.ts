import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { MovedError, TooManyRedirectionsError } from '../../cluster/errors.js';
import { evenAssignment } from '../../cluster/shard-map.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { rawClient, rawPull } from '../helpers/raw-shard.js';
import { forEachTransport } from '../helpers/transports.js';

/** A store whose map changes are never announced: its readers learn of them only by re-reading. */
class SilentStore extends MemoryMembershipStore {
  override watchMap(): () => void {
    return () => undefined;
  }
}

describe('functional: redirects for slots a shard does not own (the shard, the map)', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster.close());

  it('a shard answers a typed redirect naming slot, epoch and owner', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(4096), slots: 16 });
    const [a, b] = cluster.shards;
    const raw = rawClient(a!.address);
    const res = await rawPull(raw, { epoch: 1, ranges: [{ begin: 12, end: 13 }], workerId: 'w' });
    raw.close();
    expect(res.ok).to.equal(false);
    if (res.ok) return;
    expect(res.error.code).to.equal(status.FAILED_PRECONDITION);
    const md = res.error.metadata;
    expect(md.get('tessera-error')).to.deep.equal(['moved']);
    expect(md.get('tessera-slot')).to.deep.equal(['12']);
    expect(md.get('tessera-epoch')).to.deep.equal(['1']);
    expect(md.get('tessera-owner')).to.deep.equal([b!.shard.id]);
    expect(md.get('tessera-owner-address')).to.deep.equal([b!.address]);
  });

  it('a client re-reads the map on a timer even when no announcement reaches it', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(4096), slots: 16 });
    const quiet = new SilentStore();
    await quiet.createCluster(cluster.config);
    const map = (await cluster.store.getMap())!;
    await quiet.casMap(0, map);
    const client = await TesseraClient.connect({ store: quiet, workerId: 'timer', mapRefreshMs: 50 });
    await quiet.casMap(1, { ...map, epoch: 2 });
    await new Promise((r) => setTimeout(r, 300));
    expect(client.epoch).to.equal(2);
    await client.close();
  });
});

/** A client whose map is wrong follows the shards' redirects, whichever transport carries its values. */
forEachTransport('functional: redirects for slots a shard does not own', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster.close());

  it('a client whose cached map is stale follows the redirect and succeeds', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(4096), slots: 16, optimizer: { name: 'sgd', learningRate: 1 }, transport });
    const client = await cluster.client();
    const before = await client.pull();
    // Swap the owners behind the client's back: epoch 2 gives shard-0's slots to shard-1 and vice versa.
    const map = (await cluster.store.getMap())!;
    const swapped = { ...map, epoch: 2, owners: evenAssignment(['shard-1', 'shard-0'], 16).map((o) => (o === 'shard-0' ? 'shard-1' : 'shard-0')) };
    // The client must not learn of it by the watch: it reads a store that never announces.
    const quiet = new SilentStore();
    await quiet.createCluster(cluster.config);
    await quiet.casMap(0, map);
    const stale = await TesseraClient.connect({ store: quiet, workerId: 'stale', transport });
    await quiet.casMap(1, swapped);
    await cluster.store.casMap(1, swapped);
    for (const s of cluster.shards) await s.refresh();
    // The map gave each shard slots without a move: the new owners hold no values for them, so they
    // are lost until declared so on purpose (as `tessera reset-slots` does); they then start from initial values.
    for (const s of cluster.shards) s.resetLost([]);
    // Slots keep their data on the shard that held them (no migration here): the new owners
    // start from the same deterministic initial values, so the pull must equal the old one.
    expect(stale.epoch).to.equal(1);
    const pulled = await stale.pull();
    expect(stale.epoch).to.equal(2);
    expect(Buffer.from(pulled.buffer).equals(Buffer.from(before.buffer))).to.equal(true);
    const stats = await stale.push(new Float32Array(pulled.length).fill(1));
    expect(stats.appliedSlots).to.equal(16);
    await stale.close();
  });

  it('a client gives up after maxRedirections with a typed error that names the option', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(4096), slots: 16, transport });
    // A store whose map never gets fresher than the shards': every request is redirected.
    const liar = new MemoryMembershipStore();
    await liar.createCluster(cluster.config);
    const map = (await cluster.store.getMap())!;
    const wrong = { ...map, owners: map.owners.map((o) => (o === 'shard-0' ? 'shard-1' : 'shard-0')) };
    await liar.casMap(0, wrong);
    const client = await TesseraClient.connect({ store: liar, workerId: 'w', maxRedirections: 3, transport });
    const err = await client.pull().then(
      () => null,
      (e: unknown) => e,
    );
    await client.close();
    expect(err).to.be.instanceOf(TooManyRedirectionsError);
    expect((err as TooManyRedirectionsError).last).to.be.instanceOf(MovedError);
    expect((err as Error).message).to.match(/maxRedirections/);
  });
});
