import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { dial, unary } from '../../cluster/grpc-client.js';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService, shardAdminService, sparseShardService } from '../../cluster/proto.js';
import { type ModelSpec } from '../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { evenAssignment } from '../../cluster/shard-map.js';
import { idHalves, slotOfId } from '../../cluster/sparse-keys.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { PLAINTEXT } from '../../cluster/tls/transport-security.js';
import { SparseClient } from '../../client/sparse-client.js';
import { frameArrays } from '../../server/array-frame.js';
import { CHECKPOINT_FORMAT, CHECKPOINT_MAGIC, encodeCheckpoint } from '../../server/checkpoint-format.js';
import { identityOf } from '../../server/checkpoint.js';
import { encodeLog } from '../../server/migration.js';
import { firstSeq } from '../../cluster/worker-id.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { RawGrpc } from '../helpers/raw-grpc.js';
import { f32, rawClient, rawPush } from '../helpers/raw-shard.js';

/*
 * Input crafted to hurt, as an attacker on the network without certificates
 * (a plaintext cluster) would send it — each case one that used to be
 * accepted: it is refused with a clear status, nothing changes, and the
 * shard (checkpoints included) works on.
 */

const D = 4096;
const SLOTS = 1024;
const MODEL: ModelSpec = {
  name: 'hostile',
  seed: 3,
  tensors: [{ name: 'w', shape: [D], init: { kind: 'uniform', low: -1, high: 1 } }],
  sparse: [{ name: 'items', dim: 4, init: { kind: 'constant', value: 0 } }],
};

describe('functional: hostile input is refused and costs nothing', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let root: string;
  /** Shard 0's slots, and the values they hold. */
  const mine = { begin: 0, end: SLOTS / 2 };
  const N = D / 2;
  const header = (over: object = {}) => ({ epoch: 1, ranges: [mine], workerId: 'w', seq: 1, model: 'hostile', ...over });

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'tessera-hostile-'));
    cluster = await startCluster({ shards: 2, model: MODEL, slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, checkpointDir: root });
  });
  after(async () => {
    await cluster.close();
    rmSync(root, { recursive: true, force: true });
  });

  const values = async () => Buffer.from((await (await cluster.client()).pull()).buffer);
  const admin = () => dial(shardAdminService(), cluster.shards[0]!.address);
  const checkpointStillWorks = async () => {
    const info = await unary<object, { slots: number }>(admin(), 'checkpoint', { name: 'hostile' });
    expect(info.slots, 'a checkpoint of every slot of shard 0').to.equal(SLOTS / 2);
  };

  it('a push whose worker id is 600 KB: INVALID_ARGUMENT; checkpoints go on working', async () => {
    const before = await values();
    const raw = rawClient(cluster.shards[0]!.address);
    const r = await rawPush(raw, [{ header: header({ workerId: 'x'.repeat(600_000) }), offset: 0, values: f32(new Float32Array(N).fill(1)) }]);
    raw.close();
    expect(r.ok).to.equal(false);
    if (!r.ok) {
      expect(r.error.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(r.error.details).to.match(/a worker id is at most 128 characters, got 600000/);
    }
    expect((await values()).equals(before)).to.equal(true);
    await checkpointStillWorks();
  });

  it('bulk: a worker id that is not text, sent twice, is refused both times and applies nothing', async () => {
    const before = await values();
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    for (const id of [1, 2]) {
      conn.send({ id, op: 'push', length: N, ...header({ workerId: { not: 'text' } }) }, f32(new Float32Array(N).fill(1)));
      const reply = (await conn.next())?.reply;
      expect(reply?.ok).to.equal(false);
      if (reply && !reply.ok) expect(reply.details).to.match(/"workerId" must be text/);
    }
    conn.close();
    expect((await values()).equals(before)).to.equal(true);
  });

  it('bulk: replicated updates that do not fit (heads not a list, lengths past the payload, bytes left over, slots the shard serves or does not hold) are refused; nothing changes and the connection lives', async () => {
    const before = await values();
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    const slotFloats = D / SLOTS;
    const cases: { entries: unknown; payload: Buffer; message: RegExp }[] = [
      { entries: 'all of them', payload: Buffer.alloc(0), message: /need a list of entries/ },
      { entries: [{ k: 'd', s: 0, w: 'w', q: 1, n: slotFloats }], payload: Buffer.alloc(8), message: /runs past the 8 bytes sent/ },
      { entries: [{ k: 'd', s: 0, w: 'w', q: 1, n: 1 }], payload: Buffer.alloc(12), message: /8 bytes sent beyond their entries/ },
      { entries: [{ k: 'd', s: 0, w: 'w', q: 1, n: slotFloats }], payload: f32(new Float32Array(slotFloats).fill(1)), message: /the slot is served by shard-0/ },
      { entries: [{ k: 'd', s: SLOTS - 1, w: 'w', q: 1, n: slotFloats }], payload: f32(new Float32Array(slotFloats).fill(1)), message: /no move brought this slot to shard-0/ },
    ];
    let id = 1;
    for (const c of cases) {
      conn.send({ id: id++, op: 'replicate', length: c.payload.byteLength, entries: c.entries }, c.payload);
      const reply = (await conn.next())?.reply;
      expect(reply?.ok, String(c.message)).to.equal(false);
      if (reply && !reply.ok) {
        expect(reply.code).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(reply.details).to.match(c.message);
      }
    }
    conn.close();
    expect((await values()).equals(before)).to.equal(true);
  });

  it('bulk: an epoch sent as text is refused, naming the field', async () => {
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    conn.send({ id: 1, op: 'pull', epoch: '1', ranges: [mine], workerId: 'w' });
    const reply = (await conn.next())?.reply;
    conn.close();
    expect(reply?.ok).to.equal(false);
    if (reply && !reply.ok) {
      expect(reply.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(reply.details).to.match(/"epoch" must be a non-negative integer/);
    }
  });

  it('a push with seq 2^53−1, or a day ahead of the clock, is refused rather than recorded, so the worker’s later pushes still apply', async () => {
    const raw = rawClient(cluster.shards[0]!.address);
    for (const seq of [2 ** 53 - 1, 2 ** 50, firstSeq(Date.now() + 86_400_000 + 60_000)]) {
      const r = await rawPush(raw, [{ header: header({ workerId: 'seq-w', seq }), offset: 0, values: f32(new Float32Array(N).fill(0.5)) }]);
      expect(r.ok).to.equal(false);
      if (!r.ok) expect(r.error.details).to.match(/is more than a day ahead of this shard's clock/);
    }
    const later = await rawPush(raw, [{ header: header({ workerId: 'seq-w', seq: firstSeq() }), offset: 0, values: f32(new Float32Array(N).fill(0.5)) }]);
    raw.close();
    expect(later.ok && later.value.appliedSlots, 'the next push is applied').to.equal(SLOTS / 2);
  });

  it('a sparse call naming a 1 MB table: refused with a short message', async () => {
    const Sparse = sparseShardService();
    const stub = new Sparse(cluster.shards[0]!.address, grpc.credentials.createInsecure());
    const err = await unary(stub, 'pull', { epoch: 1, model: 'hostile', table: 't'.repeat(1 << 20), ids: Buffer.alloc(8), workerId: 'w', readOnly: true }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    stub.close();
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err!.message.length, 'the status does not echo the name').to.be.below(400);
  });

  it('ImportSlots with a header whose slot lists are not lists: a clear refusal, not INTERNAL', async () => {
    const pieces = frameArrays(CHECKPOINT_MAGIC, { format: CHECKPOINT_FORMAT, dense: {}, sparse: [], tables: {} }, []);
    let crc = 0;
    for (const p of pieces) crc = crc32(p, crc);
    const tail = Buffer.alloc(4);
    tail.writeUInt32LE(crc >>> 0, 0);
    const err = await unary(admin(), 'importSlots', { data: Buffer.concat([...pieces, tail]) }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    expect(err?.code).to.not.equal(grpc.status.INTERNAL);
    expect(err?.message).to.match(/a header without its dense and sparse slot lists/);
  });

  // Found by the fuzz test (fuzz.test.ts): each of these was answered INTERNAL, or worse.

  it('bytes that are not the request message, on every kind of call: INVALID_ARGUMENT, not INTERNAL; nothing changes', async () => {
    const before = await values();
    const raw = new RawGrpc(cluster.shards[0]!.address, PLAINTEXT);
    // 0x0a 0xff: field 1, length-delimited, with a length that runs past the end.
    const junk = Buffer.from([0x0a, 0xff]);
    const calls = [
      ['/tessera.v1.Shard/Push', 'client-stream'],
      ['/tessera.v1.Shard/Pull', 'server-stream'],
      ['/tessera.v1.SparseShard/Push', 'unary'],
      ['/tessera.v1.ShardAdmin/ImportSlots', 'unary'],
    ] as const;
    for (const [path, shape] of calls) {
      const out = await raw.call(path, shape, [junk], 10_000);
      expect(out.code, path).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(out.details, path).to.match(/request whose bytes are not its message/);
    }
    raw.close();
    expect((await values()).equals(before)).to.equal(true);
  });

  it('ApplyLog whose header is not a list of entries: INVALID_ARGUMENT, not INTERNAL', async () => {
    const magic = encodeLog([]).toString('latin1', 0, 8);
    for (const header of [{ k: 'd' }, null, [null]]) {
      const err = await unary(admin(), 'applyLog', { data: Buffer.concat(frameArrays(magic, header, [])) }).then(
        () => null,
        (e: Error & { code: number }) => e,
      );
      expect(err?.code, JSON.stringify(header)).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(err?.message).to.match(/header that is not a list of entries/);
    }
  });

  it("ImportSlots with rows for a slot the shard serves: refused, the rows stay as they were", async () => {
    const sparse = new SparseClient(await cluster.client());
    const id = 77n;
    const slot = slotOfId('items', id, SLOTS);
    const owner = slot < SLOTS / 2 ? 0 : 1;
    const rowBefore = await sparse.pull('items', [id]);
    const [lo, hi] = idHalves(id);
    const image = {
      header: { format: CHECKPOINT_FORMAT, ...identityOf(cluster.config, D), shard: 'elsewhere', epoch: 1, closedSteps: 0, createdAt: new Date().toISOString() },
      dense: [],
      sparse: [{ table: 'items', slot, count: 1, ids: Uint32Array.from([lo, hi]), steps: new Uint32Array(1), values: new Float32Array(4).fill(42), state: [], dedup: [] }],
    };
    const err = await unary(dial(shardAdminService(), cluster.shards[owner]!.address), 'importSlots', { data: Buffer.concat(encodeCheckpoint(image)) }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err?.message).to.match(new RegExp(`slot ${slot} is already served by shard-${owner}`));
    expect(await sparse.pull('items', [id])).to.deep.equal(rowBefore);
  });

  it('ImportSlots of a slot with a record of applied pushes that does not fit: INVALID_ARGUMENT, and no slot appears', async () => {
    const held = cluster.shards[0]!.shard.store.heldElements();
    const slot = SLOTS - 1;
    const image = {
      header: { format: CHECKPOINT_FORMAT, ...identityOf(cluster.config, D), shard: 'elsewhere', epoch: 1, closedSteps: 0, createdAt: new Date().toISOString() },
      dense: [{ slot, step: 0, values: new Float32Array(D / SLOTS), state: [], dedup: [{ worker: 'w', high: 3, bits: 'AAAA' }] }],
      sparse: [],
    };
    const err = await unary(admin(), 'importSlots', { data: Buffer.concat(encodeCheckpoint(image)) }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err?.message).to.match(/a dedup window of 3 bytes/);
    expect(cluster.shards[0]!.shard.store.heldElements(), 'no phantom slot').to.equal(held);
  });

  it('bulk: a slot range that is not {begin, end} is refused, not INTERNAL', async () => {
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    conn.send({ id: 1, op: 'pull', epoch: 1, ranges: [null], workerId: 'w' });
    const reply = (await conn.next())?.reply;
    conn.close();
    expect(reply?.ok).to.equal(false);
    if (reply && !reply.ok) {
      expect(reply.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(reply.details).to.match(/a slot range must be \{begin, end\}, got null/);
    }
  });

  it('a sparse push naming a 70 KB model: refused with a short message', async () => {
    const Sparse = sparseShardService();
    const stub = new Sparse(cluster.shards[0]!.address, grpc.credentials.createInsecure());
    const err = await unary(stub, 'push', { epoch: 1, model: 'm'.repeat(70_000), table: 'items', ids: Buffer.alloc(8), gradients: Buffer.alloc(16), workerId: 'w', seq: 1 }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    stub.close();
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err!.message.length, 'the status does not echo the name').to.be.below(400);
  });

  it('JSON values that cannot be turned into text (an object with a "toString" that is not a function): refused, not INTERNAL', async () => {
    const hostile = { toString: true };
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    conn.send({ id: 1, op: 'push', length: N, ...header({ seq: hostile }) }, f32(new Float32Array(N)));
    const reply = (await conn.next())?.reply;
    conn.close();
    expect(reply?.ok).to.equal(false);
    if (reply && !reply.ok) expect(reply.code).to.equal(grpc.status.INVALID_ARGUMENT);
    const magic = encodeLog([]).toString('latin1', 0, 8);
    const err = await unary(admin(), 'applyLog', { data: Buffer.concat(frameArrays(magic, [{ k: 'd', s: hostile, w: 'w', q: 1, n: 0 }], [])) }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
  });

  it('a name quoted in a status cut in the middle of a surrogate pair: the call is refused and the shard lives', async () => {
    // The status quotes 80 characters of the name, here ending in half of '😀'; grpc-js percent-encodes a status
    // message with encodeURI, which throws on a lone surrogate: that took the process down.
    const Sparse = sparseShardService();
    const stub = new Sparse(cluster.shards[0]!.address, grpc.credentials.createInsecure());
    const err = await unary(stub, 'pull', { epoch: 1, model: 'hostile', table: `${'t'.repeat(79)}😀`, ids: Buffer.alloc(8), workerId: 'w', readOnly: true }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    stub.close();
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err?.message).to.match(/unknown sparse table "t{79}\uFFFD"/);
    expect((await values()).length, 'the shard still serves').to.equal(4 * D);
  });

  describe('ApplyLog only for slots the shard is receiving', () => {
    const entry = (slot: number, gradient: Float32Array) => ({ kind: 'dense' as const, slot, worker: 'w-log', seq: 1, gradient });
    const slotLength = D / SLOTS;
    const cases: { name: string; entries: () => Parameters<typeof encodeLog>[0]; message: RegExp }[] = [
      { name: 'a slot the shard serves', entries: () => [entry(5, new Float32Array(slotLength).fill(1))], message: /slot 5\): the slot is served by shard-0/ },
      { name: 'NaN', entries: () => [entry(600, new Float32Array(slotLength).fill(Number.NaN))], message: /slot 600\): a non-finite value/ },
      { name: 'a slot no move brought here', entries: () => [entry(600, new Float32Array(slotLength).fill(1))], message: /slot 600\): no move brought this slot to shard-0/ },
      { name: 'a slot out of range', entries: () => [entry(SLOTS + 7, new Float32Array(slotLength))], message: /no such slot in a cluster of 1024/ },
    ];
    for (const c of cases) {
      it(`${c.name}: refused; no value changes, no slot appears`, async () => {
        const before = await values();
        const held = cluster.shards[0]!.shard.store.heldElements();
        const err = await unary(admin(), 'applyLog', { data: encodeLog(c.entries()) }).then(
          () => null,
          (e: Error & { code: number }) => e,
        );
        expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(err?.message).to.match(c.message);
        expect((await values()).equals(before)).to.equal(true);
        expect(cluster.shards[0]!.shard.store.heldElements(), 'no phantom slot').to.equal(held);
      });
    }
  });
});

/*
 * The membership service (as `tessera local` serves its embedded store) takes
 * JSON documents from its callers: ones of the wrong shape are refused
 * INVALID_ARGUMENT, and a member of the wrong shape is never kept, where it
 * would fail every later ListMembers (shards build the map from them).
 */
describe('functional: hostile input to the membership service', function () {
  this.timeout(30_000);
  let store: MemoryMembershipStore;
  let server: TesseraGrpcServer;
  let client: grpc.Client;
  const config = { name: 'hostile', slots: 4, model: MODEL, optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }), consistency: 'async' };
  const map = { epoch: 1, slots: 4, owners: evenAssignment(['s0'], 4), addresses: { s0: '127.0.0.1:1' } };

  before(async () => {
    store = new MemoryMembershipStore();
    await store.createCluster(config as never);
    await store.casMap(0, map);
    server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }], PLAINTEXT);
    client = dial(membershipService(), `127.0.0.1:${server.port}`, PLAINTEXT);
  });
  after(async () => {
    client.close();
    await server.close(50);
    await store.close();
  });

  const call = (method: string, req: object) =>
    unary(client, method, req).then(
      () => null,
      (e: Error & { code: number }) => e,
    );

  it('a configuration or a map of the wrong shape: INVALID_ARGUMENT, not INTERNAL; the cluster is unchanged', async () => {
    const cases: [string, object][] = [
      ['createCluster', { configJson: 'null', force: true }],
      ['createCluster', { configJson: JSON.stringify({ ...config, model: { ...MODEL, tensors: 5 } }), force: true }],
      ['createCluster', { configJson: JSON.stringify({ ...config, model: { ...MODEL, tensors: [null] } }), force: true }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: 'null' }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: JSON.stringify({ ...map, epoch: 2, owners: undefined }) }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: JSON.stringify({ ...map, epoch: 2, addresses: { s0: 5 } }) }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: JSON.stringify({ ...map, epoch: 2, owners: [{ toString: true }, 's0', 's0', 's0'] }) }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: JSON.stringify({ ...map, epoch: { toString: true } }) }],
      ['compareAndSetMap', { expectedEpoch: 1, mapJson: JSON.stringify({ ...map, epoch: 2, owners: ['constructor', 's0', 's0', 's0'] }) }],
    ];
    for (const [method, req] of cases) {
      const err = await call(method, req);
      expect(err?.code, `${method} ${JSON.stringify(req).slice(0, 120)}`).to.equal(grpc.status.INVALID_ARGUMENT);
    }
    expect((await store.getMap())?.epoch).to.equal(1);
    expect((await store.getConfig())?.model.name).to.equal(MODEL.name);
  });

  it('a member whose id or address is not text is refused, and ListMembers goes on working', async () => {
    for (const member of [{ id: 5 }, { id: 's1', address: 7 }, { id: 's1', owned: [null] }, null]) {
      const err = await call('register', { kind: 'shard', memberJson: JSON.stringify(member), ttlMs: 60_000 });
      expect(err?.code, JSON.stringify(member)).to.equal(grpc.status.INVALID_ARGUMENT);
    }
    expect(await call('register', { kind: 'shard', memberJson: JSON.stringify({ id: 's1', address: '127.0.0.1:2' }), ttlMs: 60_000 })).to.equal(null);
    const listed = await unary<object, { memberJson: string[] }>(client, 'listMembers', { kind: 'shard' });
    expect(listed.memberJson.map((m) => (JSON.parse(m) as { id: string }).id)).to.deep.equal(['s1']);
  });

  it('a worker named "constructor" claims work: GetWorkProgress still answers, for everyone', async () => {
    for (const workerId of ['constructor', '__proto__']) {
      const claim = await unary<object, { kind: string; item: number }>(client, 'claimWork', { workerId, epochs: 1, blocksPerEpoch: 4, floor: 0, graceMs: 60_000 });
      expect(claim.kind).to.equal('item');
    }
    const doc = await unary<object, { progressJson: string }>(client, 'getWorkProgress', {});
    const held = (JSON.parse(doc.progressJson) as { held: Record<string, number[]> }).held;
    expect(Object.keys(held).sort()).to.deep.equal(['__proto__', 'constructor']);
  });

  it('an unknown member kind of 70 KB: refused with a short message', async () => {
    const err = await call('listMembers', { kind: 'k'.repeat(70_000) });
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err!.message.length).to.be.below(400);
  });
});
