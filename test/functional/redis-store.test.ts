import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type Logger } from '../../cluster/log.js';
import { MembershipUnavailableError } from '../../cluster/membership/membership-errors.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { type RedisStoreOptionsInput } from '../../cluster/membership/redis-options.js';
import { RedisServer } from '../helpers/redis-server.js';
import { describeStoreContract, recordMaps, sleep, testConfig, testMap } from '../helpers/store-contract.js';

/** Short so the outage tests stay fast; the bound every call must keep. */
const COMMAND_TIMEOUT_MS = 800;

interface Captured {
  logger: Logger;
  lines: Record<'debug' | 'info' | 'warn' | 'error', string[]>;
}

function captureLog(): Captured {
  const lines: Captured['lines'] = { debug: [], info: [], warn: [], error: [] };
  return {
    lines,
    logger: { debug: (m) => lines.debug.push(m), info: (m) => lines.info.push(m), warn: (m) => lines.warn.push(m), error: (m) => lines.error.push(m) },
  };
}

/** Runs `call`, expecting a MembershipUnavailableError, and returns it. */
async function unavailable(call: () => Promise<unknown>): Promise<MembershipUnavailableError> {
  try {
    await call();
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(MembershipUnavailableError);
    return err as MembershipUnavailableError;
  }
  throw new Error('expected MembershipUnavailableError, but the call succeeded');
}

/**
 * A command timeout no test here reaches (longer than mocha's): a store with it
 * that fails at all failed on the connection it lost or could not open, not by
 * waiting the timeout out; one that waited instead fails the test by its timeout.
 */
const NEVER_MS = 600_000;

/** The message of a call that failed at once on a connection known to be down (RedisLink.unreachable). */
const FAILED_AT_ONCE = /is unavailable/;

/** Retries `call` until it succeeds (Redis coming back), for at most `ms`. */
async function eventually<T>(call: () => Promise<T>, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

describe('functional: Redis membership store', function () {
  this.timeout(15_000);
  let redis: RedisServer;
  let raw: Redis;
  const stores: RedisMembershipStore[] = [];
  let clusters = 0;

  /** A store on this test's cluster (or `cluster`), closed after the test; it logs into a capture unless given a logger. */
  function open(options: RedisStoreOptionsInput = {}): RedisMembershipStore {
    const store = new RedisMembershipStore({ url: redis.url, cluster: `c${clusters}`, commandTimeoutMs: COMMAND_TIMEOUT_MS, logger: captureLog().logger, ...options });
    stores.push(store);
    return store;
  }

  before(async () => {
    redis = await RedisServer.start();
    raw = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await raw.connect();
  });
  after(async () => {
    raw?.disconnect();
    await redis?.dispose();
  });
  beforeEach(() => {
    clusters++;
  });
  /** Closes every store a test opened: before any server it used goes away, so none logs an outage. */
  async function closeStores(): Promise<void> {
    await Promise.all(stores.splice(0).map((s) => s.close()));
  }
  afterEach(closeStores);

  describeStoreContract('Redis', async () => {
    const store = open();
    return { store, cluster: `c${clusters}`, peer: () => open(), close: async () => undefined };
  });

  describe('keys', () => {
    it(`every key and the announcement channel live under tessera:{<cluster>}:`, async () => {
      const store = open({ cluster: 'keys-test' });
      await store.createCluster(testConfig('keys-test'));
      await store.casMap(0, testMap(1));
      await store.register('shard', { id: 's0', address: '127.0.0.1:7000' }, 10_000);
      await store.register('worker', { id: 'w0' }, 10_000);
      const rec = recordMaps(store);
      await rec.until(1);
      const keys = (await raw.keys('*keys-test*')).sort();
      expect(keys).to.deep.equal(
        ['config', 'epoch', 'map', 'member:shard:s0', 'member:worker:w0', 'members:shard', 'members:worker'].map((k) => `tessera:{keys-test}:${k}`),
      );
      expect(await raw.call('PUBSUB', 'CHANNELS', '*keys-test*')).to.deep.equal(['tessera:{keys-test}:map-announce']);
      expect(await raw.get('tessera:{keys-test}:epoch')).to.equal('1');
      rec.stop();
    });

    it('a key prefix replaces "tessera"; stores with different prefixes do not see each other', async () => {
      const a = open({ cluster: 'same' });
      const b = open({ cluster: 'same', keyPrefix: 'other' });
      await a.createCluster(testConfig('same'));
      await b.register('shard', { id: 'x' }, 10_000);
      expect(await b.getConfig()).to.equal(null);
      expect(await a.members('shard')).to.deep.equal([]);
      expect((await raw.keys('other:*')).sort()).to.deep.equal(['other:{same}:member:shard:x', 'other:{same}:members:shard']);
    });

    it('an expired lease is pruned from the member index when members are listed', async () => {
      const store = open();
      await store.register('worker', { id: 'gone' }, 200);
      await store.register('worker', { id: 'stays' }, 10_000);
      await sleep(300);
      expect((await store.members('worker')).map((m) => m.id)).to.deep.equal(['stays']);
      expect(await raw.smembers(store.keys.memberIndex('worker'))).to.deep.equal(['stays']);
    });

    it('a configuration for another cluster than the store holds is refused', async () => {
      const store = open({ cluster: 'mine' });
      const err = await store.createCluster(testConfig('theirs')).catch((e: Error) => e);
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect(await raw.exists('tessera:{mine}:config', 'tessera:{theirs}:config')).to.equal(0);
    });
  });

  describe('when Redis goes away', () => {
    let own: RedisServer | undefined;
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    beforeEach(() => {
      rejections.length = 0;
      process.on('unhandledRejection', onRejection);
    });
    afterEach(async () => {
      process.off('unhandledRejection', onRejection);
      await closeStores();
      await own?.dispose();
      own = undefined;
    });

    it('calls fail at once, not at commandTimeoutMs, with a retryable MembershipUnavailableError, logged once; after a restart the same store and its watcher work again', async () => {
      own = await RedisServer.start();
      const log = captureLog();
      const store = open({ url: own.url, cluster: 'outage', commandTimeoutMs: NEVER_MS, reconnectMaxDelayMs: 200, logger: log.logger });
      const writer = open({ url: own.url, cluster: 'outage' });
      await store.createCluster(testConfig('outage'));
      await store.casMap(0, testMap(1));
      await store.register('shard', { id: 's0' }, 10_000);
      const rec = recordMaps(store);
      await rec.until(1);

      await own.stop();
      const calls: [string, () => Promise<unknown>][] = [
        ['getConfig', () => store.getConfig()],
        ['getMap', () => store.getMap()],
        ['casMap', () => store.casMap(1, testMap(2))],
        ['register', () => store.register('shard', { id: 's0' }, 10_000)],
        ['members', () => store.members('shard')],
        ['deregister', () => store.deregister('shard', 's0')],
        ['createCluster', () => store.createCluster(testConfig('outage'), true)],
      ];
      for (const [name, call] of calls) {
        const err = await unavailable(call);
        expect(err.message, name).to.match(FAILED_AT_ONCE);
        expect(err.code).to.equal(status.UNAVAILABLE);
        expect(err.reason).to.equal('membership-unavailable');
        expect(err.retryable).to.equal(true);
        expect(err.message).to.include(own.url);
      }
      await sleep(500); // several failed reconnects
      await unavailable(() => store.getMap());
      expect(log.lines.warn, log.lines.warn.join('\n')).to.have.length(1);
      expect(log.lines.warn[0]).to.match(/unreachable/);
      expect(log.lines.info).to.deep.equal([]);

      // Back, empty (persistence is off): the same instance registers again, and its
      // watcher sees the map the cluster writes anew (rebuilt above the old epoch).
      await own.restart();
      await eventually(() => store.register('shard', { id: 's0' }, 10_000));
      expect((await store.members('shard')).map((m) => m.id)).to.deep.equal(['s0']);
      await eventually(async () => expect(log.lines.info.filter((l) => /reachable again/.test(l))).to.have.length(1), 3_000);
      expect(log.lines.warn).to.have.length(1);
      await eventually(() => writer.createCluster(testConfig('outage')));
      await writer.casMap(0, testMap(5, ['b']));
      expect(await rec.until(5)).to.deep.equal(testMap(5, ['b']));
      rec.stop();
      expect(rejections).to.deep.equal([]);
    });

    it('after a crash (SIGKILL) and a restart with the data, the watcher gets the next map', async () => {
      own = await RedisServer.start();
      const store = open({ url: own.url, cluster: 'crash', reconnectMaxDelayMs: 200, logger: captureLog().logger });
      await store.casMap(0, testMap(1));
      const rec = recordMaps(store);
      await rec.until(1);
      await own.save();
      await own.kill();
      await unavailable(() => store.getMap());
      await own.restart({ keepData: true });
      const writer = open({ url: own.url, cluster: 'crash' });
      await eventually(() => writer.casMap(1, testMap(2, ['c'])));
      expect(await rec.until(2)).to.deep.equal(testMap(2, ['c']));
      expect(rec.maps.map((m) => m.epoch)).to.deep.equal([1, 2]);
      rec.stop();
    });

    it('a call that failed while Redis was away is not replayed when it returns', async () => {
      own = await RedisServer.start();
      const store = open({ url: own.url, cluster: 'replay', reconnectMaxDelayMs: 200 });
      await store.register('shard', { id: 's0' }, 30_000);
      await own.stop({ save: true });
      await unavailable(() => store.deregister('shard', 's0'));
      await unavailable(() => store.register('worker', { id: 'w0' }, 30_000));
      await own.restart({ keepData: true });
      await eventually(() => store.getMap());
      await sleep(100);
      expect((await store.members('shard')).map((m) => m.id)).to.deep.equal(['s0']);
      expect(await store.members('worker')).to.deep.equal([]);
    });

    it('a map announced while the watcher was disconnected is read once it resubscribes', async () => {
      const watched = open({ cluster: 'missed', reconnectMinDelayMs: 600, reconnectMaxDelayMs: 600, logger: captureLog().logger });
      const writer = open({ cluster: 'missed' });
      await writer.casMap(0, testMap(1));
      const rec = recordMaps(watched);
      await rec.until(1);
      // Drop every subscriber connection: the watcher's store reconnects only after 600 ms.
      await raw.client('KILL', 'TYPE', 'pubsub');
      expect(await raw.call('PUBSUB', 'NUMSUB', watched.keys.mapChannel)).to.deep.equal([watched.keys.mapChannel, 0]);
      await writer.casMap(1, testMap(2, ['d']));
      expect(rec.maps.map((m) => m.epoch)).to.deep.equal([1]);
      expect(await rec.until(2, 3_000)).to.deep.equal(testMap(2, ['d']));
      rec.stop();
    });

    it('a call to a Redis that stopped answering (SIGSTOP) fails at commandTimeoutMs, and the store carries on once it answers', async () => {
      own = await RedisServer.start();
      const store = open({ url: own.url, cluster: 'frozen', logger: captureLog().logger });
      await store.casMap(0, testMap(1));
      own.pause();
      // Redis cannot answer while stopped, so only the command timeout can end the call.
      const err = await unavailable(() => store.casMap(1, testMap(2)));
      expect(err.message).to.match(/did not answer within 800 ms/);
      own.resume();
      // The late reply to the timed-out command must not be taken for the next one's.
      expect(await store.getConfig()).to.equal(null);
      expect((await store.getMap())!.epoch).to.be.oneOf([1, 2]);
    });

    it('a store opened while Redis is down fails fast, then connects when Redis starts', async () => {
      own = await RedisServer.start();
      await own.stop();
      const store = open({ url: own.url, cluster: 'late', commandTimeoutMs: NEVER_MS, reconnectMaxDelayMs: 200, logger: captureLog().logger });
      const err = await unavailable(() => store.getConfig());
      expect(err.message).to.match(FAILED_AT_ONCE);
      expect(err.message).to.match(/ECONNREFUSED/);
      await own.restart();
      expect(await eventually(() => store.getConfig())).to.equal(null);
    });
  });

  describe('ACL and URL', () => {
    let acl: RedisServer | undefined;
    afterEach(async () => {
      await closeStores();
      await acl?.dispose();
      acl = undefined;
    });

    it('an ACL user and password in the URL are used; a wrong password fails as unavailable without printing it', async () => {
      acl = await RedisServer.start(['--user', 'tessera', 'on', '>s3cret-pw', '~tessera:*', '&tessera:*', '+@all']);
      const url = acl.url.replace('redis://', 'redis://tessera:s3cret-pw@');
      const store = open({ url, cluster: 'acl' });
      await store.register('shard', { id: 's0' }, 10_000);
      await store.casMap(0, testMap(1));
      const rec = recordMaps(store);
      await rec.until(1);
      rec.stop();
      const log = captureLog();
      const wrong = open({ url: acl.url.replace('redis://', 'redis://tessera:wrong-pw@'), cluster: 'acl', commandTimeoutMs: NEVER_MS, logger: log.logger });
      const err = await unavailable(() => wrong.getMap());
      expect(err.message).to.match(FAILED_AT_ONCE);
      expect(err.message).to.not.include('wrong-pw');
      expect(log.lines.warn.join('\n')).to.not.include('wrong-pw');
    });
  });
});
