import { expect } from 'chai';
import { TesseraClient } from '../../../client/tessera-client.js';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { InvalidArgumentError, NotReadyError, ShardUnavailableError, TooManyRedirectionsError } from '../../../cluster/errors.js';
import { MemoryMembershipStore } from '../../../cluster/membership/memory-store.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { type ShardMap, evenAssignment } from '../../../cluster/shard-map.js';
import { seededFloats } from '../../helpers/random.js';
import { MemoryShards } from '../../helpers/memory-transport.js';

const SLOTS = 16;
const ELEMENTS = 1000;

/**
 * The client's own logic over an in-memory transport (no network): routing
 * pieces to owners and back into the caller's vector, the one recovery path
 * (redirects within a budget, retries of unreachable shards, only the failed
 * part resent), and codecs with error feedback committed only once a push
 * is acknowledged.
 */
describe('client: TesseraClient over an in-memory transport', () => {
  let store: MemoryMembershipStore;
  let shards: MemoryShards;
  let client: TesseraClient;
  const map = (epoch: number, owners: string[]): ShardMap => ({ epoch, slots: SLOTS, owners, addresses: { a: 'mem:1', b: 'mem:2' } });

  beforeEach(async () => {
    store = new MemoryMembershipStore();
    const config: ClusterConfig = { name: 't', slots: SLOTS, model: { name: 'flat', seed: 1, tensors: [{ name: 'w', shape: [ELEMENTS], init: { kind: 'zeros' } }] }, optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async' };
    await store.createCluster(config);
    const first = map(1, evenAssignment(['a', 'b'], SLOTS));
    await store.casMap(0, first);
    shards = new MemoryShards(first, ELEMENTS);
  });
  afterEach(async () => {
    await client?.close();
    await store.close();
  });

  const connect = async (extra: object = {}) => (client = await TesseraClient.connect({ store, workerId: 'w', transports: shards, retryDelayMs: 1, ...extra }));

  it('routes a push to both owners and a pull back into place', async () => {
    await connect();
    const g = seededFloats(ELEMENTS, 3);
    const stats = await client.push(g);
    expect(stats.appliedSlots).to.equal(SLOTS);
    expect(stats.wireBytes).to.equal(ELEMENTS * 4);
    expect(shards.calls.filter((c) => c.kind === 'push').map((c) => c.address).sort()).to.deep.equal(['mem:1', 'mem:2']);
    const back = await client.pull();
    for (let i = 0; i < ELEMENTS; i++) expect(back[i]).to.equal(-g[i]!);
    const part = await client.pullRanges([{ begin: 3, end: 5 }, { begin: 9, end: 10 }]);
    expect(part.length).to.equal(Math.floor((5 * ELEMENTS) / SLOTS) - Math.floor((3 * ELEMENTS) / SLOTS) + Math.floor((10 * ELEMENTS) / SLOTS) - Math.floor((9 * ELEMENTS) / SLOTS));
  });

  it('follows a moved slot to its new owner and resends only the moved part', async () => {
    await connect();
    // Shard a gives slots 0–3 to b; the client's cached map still says a.
    const owners = evenAssignment(['a', 'b'], SLOTS);
    for (let s = 0; s < 4; s++) owners[s] = 'b';
    const moved = map(2, owners);
    shards.map = moved;
    await store.casMap(1, moved);
    const g = new Float32Array(ELEMENTS).fill(1);
    await client.push(g);
    const pushes = shards.calls.filter((c) => c.kind === 'push');
    expect(pushes.reduce((n, c) => n + c.slots!, 0), 'every slot applied once').to.equal(SLOTS);
    expect(Array.from(await client.pull()).every((v) => v === -1)).to.equal(true);
    expect(client.epoch).to.equal(2);
  });

  it('gives up after maxRedirections when the map keeps disagreeing', async () => {
    await connect({ maxRedirections: 3 });
    shards.map = map(9, new Array(SLOTS).fill('b')); // the shards say b owns everything; the store never says so
    const err = await client.push(new Float32Array(ELEMENTS)).then(() => null, (e: Error) => e);
    expect(err).to.be.instanceOf(TooManyRedirectionsError);
  });

  it('retries an unreachable shard with backoff, tells the pool, and applies the push once', async () => {
    await connect({ maxRetries: 3 });
    shards.faults.set('mem:2', [new ShardUnavailableError('down', 'mem:2'), new NotReadyError('starting')]);
    await client.push(new Float32Array(ELEMENTS).fill(2));
    expect(shards.calls.filter((c) => c.kind === 'failed').map((c) => c.address)).to.deep.equal(['mem:2', 'mem:2']);
    expect(shards.calls.filter((c) => c.kind === 'push' && c.address === 'mem:1')).to.have.length(1);
    expect(Array.from(await client.pull()).every((v) => v === -2)).to.equal(true);
  });

  it('gives the caller an error the policy does not recover from, and past maxRetries the last retryable one', async () => {
    await connect({ maxRetries: 1 });
    shards.faults.set('mem:1', [new InvalidArgumentError('bad')]);
    expect(await client.push(new Float32Array(ELEMENTS)).then(() => null, (e: Error) => e)).to.be.instanceOf(InvalidArgumentError);
    shards.faults.set('mem:1', [new ShardUnavailableError('down', 'mem:1'), new ShardUnavailableError('still down', 'mem:1')]);
    const err = await client.pull().then(() => null, (e: Error) => e);
    expect(err).to.be.instanceOf(ShardUnavailableError);
    expect(err!.message).to.equal('still down');
  });

  it('topk: what a push does not send is sent later, and a push that reached one shard only commits that shard’s slots', async () => {
    await connect({ compression: 'topk:0.1', maxRetries: 0 });
    const g = seededFloats(ELEMENTS, 5);
    await client.push(g);
    // mem:1 is down for the next push: mem:2 applies its part (and keeps the residual of what it did not get),
    // mem:1's slots keep their residual as it was, to be sent by the pushes after.
    shards.faults.set('mem:1', [new ShardUnavailableError('down', 'mem:1')]);
    const h = seededFloats(ELEMENTS, 6);
    expect(await client.push(h).then(() => null, (e: Error) => e)).to.be.instanceOf(ShardUnavailableError);
    for (let k = 0; k < 12; k++) await client.push(new Float32Array(ELEMENTS));
    const half = ELEMENTS / 2; // slots 0–7 on mem:1, 8–15 on mem:2
    for (let i = 0; i < ELEMENTS; i++) {
      // mem:1 never got h (its push failed; the caller was told), mem:2 got all of h: each value applied exactly once.
      const want = -g[i]! - (i >= half ? h[i]! : 0);
      expect(Math.abs(shards.values[i]! - want), `element ${i}`).to.be.below(1e-5);
    }
    expect(client.traffic().wire).to.be.below(client.traffic().raw / 3);
  });
});
