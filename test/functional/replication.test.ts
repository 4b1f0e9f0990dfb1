import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { backupsOf } from '../../cluster/shard-map.js';
import { TlsMaterial } from '../../cluster/tls/tls-material.js';
import { type TransportSecurity, mutualTls } from '../../cluster/tls/transport-security.js';
import { BulkFrameReader, type BulkReply, encodeHead } from '../../cluster/wire/bulk-frames.js';
import { snapshot } from '../../server/checkpoint.js';
import { ShardServer } from '../../server/shard-server.js';
import { SparseClient } from '../../client/sparse-client.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { makeTlsDirs } from '../helpers/tls.js';

const D = 4_096;
const SLOTS = 16;

/** Every backup's copy of every slot it backs, bit for bit the primary's. */
function expectReplicasEqual(shards: readonly ShardServer[]): number {
  const byId = new Map(shards.filter((s) => s.state !== 'gone').map((s) => [s.shard.id, s]));
  let compared = 0;
  for (const primary of byId.values()) {
    const map = primary.shard.currentMap!;
    for (let s = 0; s < SLOTS; s++) {
      if (map.owners[s] !== primary.shard.id) continue;
      for (const b of backupsOf(map, s)) {
        const backup = byId.get(b);
        if (!backup) continue;
        const mine = primary.shard.store.get(s)!;
        const theirs = backup.shard.store.get(s);
        expect(theirs, `slot ${s} on backup ${b}`).to.not.equal(undefined);
        expect(Buffer.from(theirs!.values.buffer, theirs!.values.byteOffset, theirs!.values.byteLength).equals(Buffer.from(mine.values.buffer, mine.values.byteOffset, mine.values.byteLength)), `slot ${s}: backup ${b} equals primary ${primary.shard.id}`).to.equal(true);
        compared++;
      }
    }
  }
  return compared;
}

describe('functional: replicated shards (--replicas)', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster?.close());

  it('the first map gives every slot a backup on another shard, and pushes reach it before they are acknowledged', async () => {
    cluster = await startCluster({ shards: 3, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, replicas: 1 });
    const map = cluster.shards[0]!.shard.currentMap!;
    for (let s = 0; s < SLOTS; s++) {
      expect(backupsOf(map, s), `slot ${s}`).to.have.length(1);
      expect(backupsOf(map, s)[0]).to.not.equal(map.owners[s]);
    }
    const client = await cluster.client({ workerId: 'w0' });
    for (let i = 0; i < 20; i++) await client.push(new Float32Array(D).map((_, k) => Math.sin(k + i)));
    expect(expectReplicasEqual(cluster.shards)).to.equal(SLOTS);
  });

  it('a backup that moves while updates wait for it gets them at its new address, and the push is acknowledged only then', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, replicas: 1, lease: { ttlMs: 5_000, renewMs: 1_000 }, transport: 'grpc' });
    const client = await cluster.client({ workerId: 'w0' });
    await client.push(new Float32Array(D).fill(0.5));
    const [, s1] = cluster.shards as [ShardServer, ShardServer];
    // shard-1's bulk port goes away: shard-0's updates for it wait, retried.
    await (s1 as unknown as { bulk: { close(): Promise<void> } }).bulk.close();
    const pushed = client.push(new Float32Array(D).fill(0.25));
    await new Promise((r) => setTimeout(r, 150));
    // The map now names no bulk port for shard-1 (as for a shard that serves none): shard-0 reaches it over gRPC.
    const map = (await cluster.store.getMap())!;
    const bulk = Object.fromEntries(Object.entries(map.bulk ?? {}).filter(([id]) => id !== 'shard-1'));
    await cluster.store.casMap(map.epoch, { ...map, epoch: map.epoch + 1, bulk });
    await pushed;
    expect(expectReplicasEqual(cluster.shards), 'both backups hold the push that waited').to.equal(SLOTS);
  });

  it('shards without a bulk port send their backups the updates as ShardAdmin.ApplyLog calls, with the same result', async () => {
    cluster = await startCluster({ shards: 3, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, replicas: 1, bulk: false, transport: 'grpc' });
    expect(cluster.shards[0]!.shard.currentMap!.bulk, 'no bulk port in the map').to.equal(undefined);
    const client = await cluster.client({ workerId: 'w0' });
    for (let i = 0; i < 20; i++) await client.push(new Float32Array(D).map((_, k) => Math.sin(k + i)));
    expect(expectReplicasEqual(cluster.shards)).to.equal(SLOTS);
  });
});

describe('functional: replicated shards stopped and started', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  const extra: ShardServer[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-replica-stop-'));
  after(async () => {
    for (const s of extra) await s.close(100);
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const counting = { name: 'counting', seed: 1, tensors: [{ name: 'w', shape: [D], init: { kind: 'zeros' as const } }] };
  const expectCount = (values: Float32Array, n: number) => {
    const off = values.findIndex((v) => v !== n);
    expect(off, off < 0 ? '' : `element ${off} is ${values[off]}, ${n} pushes acknowledged`).to.equal(-1);
  };

  it('a shard stopped cleanly hands its slots to their backups as it goes; the cluster stopped and started whole again keeps every push', async () => {
    cluster = await startCluster({ shards: 3, model: counting, slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, replicas: 1, checkpointDir: dir, lease: { ttlMs: 1_000, renewMs: 250 }, mapPollMs: 200 });
    const client = await cluster.client({ workerId: 'w0' });
    const one = new Float32Array(D).fill(-1);
    let n = 0;
    for (; n < 10; n++) await client.push(one);
    const [s0, s1, s2] = cluster.shards as [ShardServer, ShardServer, ShardServer];
    const before = await cluster.store.getMap();
    await s0.close(100);
    const after = (await cluster.store.getMap())!;
    expect(after.epoch, 'the map changed as it stopped, not a lease TTL later').to.be.greaterThan(before!.epoch);
    expect(after.owners.includes('shard-0')).to.equal(false);
    for (; n < 20; n++) await client.push(one);
    expectCount(await client.pull(), n);

    // Every shard stops (each writes its closing checkpoint, of the slots it serves), then all come back from them.
    const places = [s0, s1, s2].map((s) => ({ id: s.shard.id, listen: s.address, bulkPort: Number(s.bulkAddress.split(':').pop()) }));
    await s1.close(100);
    await s2.close(100);
    for (const p of places) extra.push(await ShardServer.start({ ...p, store: cluster.store, resume: true, checkpoints: { directory: dir, everyMs: 0 }, lease: { ttlMs: 1_000, renewMs: 250 }, mapPollMs: 200 }));
    expect(extra.every((s) => s.shard.lost.size === 0), 'no slot lost').to.equal(true);
    for (; n < 25; n++) await client.push(one);
    expectCount(await client.pull(), n);
  });
});

describe('functional: replicated shards under ssp', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it('two workers in step (ssp:1) over 3 shards with backups: their clocked pulls and pushes go through, the backups equal their primaries, and a backup that takes over knows the clocks', async () => {
    cluster = await startCluster({ shards: 3, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, consistency: 'ssp:1', initialWorkers: 2, replicas: 1, lease: { ttlMs: 1_000, renewMs: 250 }, mapPollMs: 200 });
    const workers = [await cluster.client({ workerId: 'w0' }), await cluster.client({ workerId: 'w1' })];
    const run = async (c: (typeof workers)[number], from: number, to: number) => {
      const values = new Float32Array(D);
      for (let clock = from; clock < to; clock++) {
        await c.pull(values, { clock, join: clock === 0 });
        await c.push(new Float32Array(D).map((_, k) => Math.sin(k + clock)), undefined, clock);
      }
    };
    await Promise.all(workers.map((c) => run(c, 0, 10)));
    expect(expectReplicasEqual(cluster.shards)).to.equal(SLOTS);
    // shard-0 stops: its backup, a primary of its own slots, already has both workers' clocks and serves on.
    await cluster.shards[0]!.close(100);
    await Promise.all(workers.map((c) => run(c, 10, 15)));
    expect(expectReplicasEqual(cluster.shards)).to.be.greaterThan(0);
  });
});

describe('functional: replicated sparse tables', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it('a backup holds the rows, optimizer state and applied pushes of every sparse slot it backs up, as its primary does', async () => {
    const model = { ...flatModel(256), name: 'emb', sparse: [{ name: 'items', dim: 8, init: { kind: 'uniform' as const, low: -0.1, high: 0.1 } }] };
    cluster = await startCluster({ shards: 3, model, slots: SLOTS, optimizer: { name: 'adagrad', learningRate: 0.1 }, replicas: 1 });
    const sparse = new SparseClient(await cluster.client({ workerId: 'w0' }));
    for (let round = 0; round < 6; round++) {
      const ids = Array.from({ length: 40 }, (_, i) => BigInt(i * 7919 + round * 3));
      await sparse.push('items', ids, new Float32Array(ids.length * 8).map((_, k) => Math.sin(k + round)));
    }
    sparse.close();
    const byId = new Map(cluster.shards.map((s) => [s.shard.id, s]));
    let compared = 0;
    for (const primary of cluster.shards) {
      const map = primary.shard.currentMap!;
      const own = new Set(map.owners.flatMap((o, s) => (o === primary.shard.id ? [s] : [])));
      const mine = snapshot(primary.shard, primary.sparse, undefined, own).sparse;
      for (const slot of mine) {
        const backup = byId.get(backupsOf(map, slot.slot)[0]!)!;
        const theirs = snapshot(backup.shard, backup.sparse, undefined, new Set([slot.slot])).sparse.find((r) => r.table === slot.table);
        expect(theirs, `slot ${slot.slot} on its backup`).to.not.equal(undefined);
        expect(Buffer.from(theirs!.ids.buffer, theirs!.ids.byteOffset, theirs!.ids.byteLength).equals(Buffer.from(slot.ids.buffer, slot.ids.byteOffset, slot.ids.byteLength)), `slot ${slot.slot}: ids`).to.equal(true);
        expect(Buffer.from(theirs!.values.buffer, theirs!.values.byteOffset, theirs!.values.byteLength).equals(Buffer.from(slot.values.buffer, slot.values.byteOffset, slot.values.byteLength)), `slot ${slot.slot}: values`).to.equal(true);
        expect(theirs!.state.length).to.equal(slot.state.length);
        theirs!.state.forEach((a, i) => expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(slot.state[i]!.buffer, slot.state[i]!.byteOffset, slot.state[i]!.byteLength)), `slot ${slot.slot}: state ${i}`).to.equal(true));
        expect(theirs!.dedup).to.deep.equal(slot.dedup);
        compared++;
      }
    }
    expect(compared, 'sparse slots compared').to.be.greaterThan(10);
  });
});

describe('functional: replication under mutual TLS', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  const root = mkdtempSync(path.join(tmpdir(), 'tessera-replica-tls-'));
  const materials: TlsMaterial[] = [];
  after(async () => {
    await cluster?.close();
    for (const m of materials) m.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('backups take their primary\'s updates over TLS; a worker certificate sending them is refused and nothing changes', async () => {
    const { dirs } = await makeTlsDirs(root, 'rep', [{ role: 'shard', id: 'shard-0' }, { role: 'shard', id: 'shard-1' }, { role: 'shard', id: 'shard-2' }, { role: 'worker', id: 'w1' }]);
    const as = (key: string): TransportSecurity => {
      const security = mutualTls(dirs[key]!);
      if (security.kind === 'mtls') materials.push(security.material);
      return security;
    };
    cluster = await startCluster({ shards: 3, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, name: 'rep', replicas: 1, security: (id) => as(`shard-${id}`) });
    const client = await cluster.client({ workerId: 'w1', security: as('worker-w1') });
    for (let i = 0; i < 10; i++) await client.push(new Float32Array(D).map((_, k) => Math.cos(k * i)));
    expect(expectReplicasEqual(cluster.shards)).to.equal(SLOTS);

    // A worker's certificate on the bulk port, sending updates for a slot that shard-1 backs up.
    const backup = cluster.shards[1]!;
    const slot = backup.shard.currentMap!.owners.findIndex((_, s) => backup.shard.backs(s));
    const before = Buffer.from(backup.shard.store.get(slot)!.values.slice().buffer);
    const material = TlsMaterial.load(dirs['worker-w1']!);
    materials.push(material);
    const [host, port] = backup.bulkAddress.split(':') as [string, string];
    const socket = tls.connect({ host, port: Number(port), secureContext: material.secureContext, servername: 'tessera', checkServerIdentity: () => undefined });
    const reply = await new Promise<BulkReply>((resolve, reject) => {
      const reader = new BulkFrameReader((h) => (resolve(h as BulkReply), 0), () => undefined, () => undefined);
      socket.on('data', (d: Buffer) => reader.push(d));
      socket.on('error', reject);
      socket.once('secureConnect', () => {
        const n = D / SLOTS;
        socket.write(encodeHead({ id: 1, op: 'replicate', length: n * 4, entries: [{ k: 'd', s: slot, w: 'w1', q: 99, n }] }));
        socket.write(Buffer.from(new Float32Array(n).fill(1).buffer));
      });
    });
    socket.destroy();
    expect(reply.ok).to.equal(false);
    if (!reply.ok) {
      expect(reply.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(reply.details).to.match(/replicated updates needs a shard certificate/);
    }
    expect(Buffer.from(backup.shard.store.get(slot)!.values.slice().buffer).equals(before)).to.equal(true);
  });
});

