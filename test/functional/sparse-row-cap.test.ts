import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { ResourceExhaustedError } from '../../cluster/errors.js';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { type ModelSpec } from '../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { slotOfId } from '../../cluster/sparse-keys.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { SparseClient } from '../../client/sparse-client.js';
import { type SparseTableStats } from '../../server/sparse-store.js';
import { run, start, waitFor } from '../helpers/cli.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { f32 } from '../helpers/raw-shard.js';
import { type SparsePullReply, type SparsePushAck, rawSparse, rawSparseClient, snapshotSparse, u64 } from '../helpers/raw-sparse.js';

/**
 * What a caller can make a shard hold in sparse rows, over real gRPC: pulls
 * hold nothing, and pushes stop creating rows at `--max-sparse-rows` per
 * table per shard (docs/security.md, "Limits").
 */

const SLOTS = 64;
const DIM = 16;
const LR = 0.5;
const CAP = 40;
const MODEL: ModelSpec = {
  name: 'capped',
  seed: 11,
  tensors: [{ name: 'w', shape: [4], init: { kind: 'zeros' } }],
  sparse: [{ name: 'items', dim: DIM, init: { kind: 'uniform', low: -0.1, high: 0.1 } }],
};

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const halves = (a: Float32Array) => a.map((_, i) => (i % 2 ? 0.5 : -0.5));

describe('functional: the rows of a sparse table are bounded', function () {
  this.timeout(60_000);

  describe(`two shards, at most ${CAP} rows per table each`, () => {
    let cluster: TestCluster;
    let sparse: SparseClient;
    before(async () => {
      cluster = await startCluster({ shards: 2, model: MODEL, slots: SLOTS, optimizer: { name: 'sgd', learningRate: LR }, maxSparseRows: CAP });
      sparse = new SparseClient(await cluster.client());
    });
    after(async () => {
      sparse.close();
      await cluster.close();
    });

    const describeShard = async (i: number): Promise<SparseTableStats> => {
      const raw = rawSparseClient(cluster.shards[i]!.address);
      const d = await rawSparse<{ tables: SparseTableStats[] }>(raw, 'describe', {});
      raw.close();
      if (!d.ok) return expect.fail(d.error.message);
      return d.value.tables.find((t) => t.name === 'items')!;
    };
    const ownedBy = (i: number, from: bigint, n: number): bigint[] => {
      const out: bigint[] = [];
      for (let id = from; out.length < n; id++) {
        const s = slotOfId('items', id, SLOTS);
        if (cluster.shards[i]!.shard.owned().some((r) => r.begin <= s && s < r.end)) out.push(id);
      }
      return out;
    };

    it('pulls of 100 000 ids never pushed leave every shard\'s rows and bytes (Describe) where they were', async () => {
      await sparse.push('items', [1n, 2n, 3n, 4n], new Float32Array(4 * DIM));
      const before = [await describeShard(0), await describeShard(1)];
      const heldBefore = cluster.shards.map((s) => s.sparse.heldBytes());
      for (let k = 0n; k < 5n; k++) {
        const ids = BigUint64Array.from({ length: 20_000 }, (_, i) => 1_000_000n + k * 20_000n + BigInt(i));
        expect(await sparse.pull('items', ids)).to.have.length(20_000 * DIM);
      }
      // The reply's rows_created is 0 for every pull.
      const raw = rawSparseClient(cluster.shards[0]!.address);
      const p = await rawSparse<SparsePullReply>(raw, 'pull', { epoch: 1, table: 'items', workerId: 'w', ids: u64(ownedBy(0, 5_000_000n, 100)) });
      raw.close();
      expect(p.ok && p.value.rowsCreated).to.equal(0);
      const after = [await describeShard(0), await describeShard(1)];
      for (const i of [0, 1]) {
        expect(Number(after[i]!.rows), `shard ${i} rows`).to.equal(Number(before[i]!.rows));
        expect(Number(after[i]!.bytes), `shard ${i} bytes held`).to.equal(Number(before[i]!.bytes));
        expect(Number(after[i]!.rowsCreated), `shard ${i} rows created`).to.equal(Number(before[i]!.rowsCreated));
        expect(Number(after[i]!.pulls) - Number(before[i]!.pulls), `shard ${i} served the pulls`).to.be.at.least(5);
      }
      expect(cluster.shards.map((s) => s.sparse.heldBytes())).to.deep.equal(heldBefore);
    });

    it('a push that would pass the cap: RESOURCE_EXHAUSTED naming table, cap and flag, nothing applied; rows held still take pushes; the shard serves on', async () => {
      const shard0 = cluster.shards[0]!;
      const raw = rawSparseClient(shard0.address);
      const held = Number((await describeShard(0)).rows);
      const room = ownedBy(0, 10_000_000n, CAP - held);
      const push = (ids: bigint[], seq: number) => rawSparse<SparsePushAck>(raw, 'push', { epoch: 1, table: 'items', workerId: 'w', seq, ids: u64(ids), gradients: f32(halves(new Float32Array(ids.length * DIM))) });
      const filled = await push(room, 1);
      expect(filled.ok && filled.value.rowsCreated).to.equal(room.length);
      const values = await sparse.pull('items', room);
      const before = snapshotSparse(shard0.sparse);

      const more = ownedBy(0, 20_000_000n, 3);
      const refused = await push([...room.slice(0, 5), ...more], 2);
      if (refused.ok) return expect.fail('a push past the cap was applied');
      expect(refused.error.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(refused.error.metadata.get('tessera-error')).to.deep.equal(['resource-exhausted']);
      expect(refused.error.details).to.match(new RegExp(`sparse table items is full on shard shard-0: it holds ${CAP} rows and this push would create 3 more, over the cap of ${CAP} rows per table per shard \\(--max-sparse-rows\\); nothing was applied`));
      expect(snapshotSparse(shard0.sparse).equals(before), 'nothing applied, not even to the rows held').to.equal(true);
      // The client gets it typed, and does not retry it.
      const err = await sparse.push('items', more, new Float32Array(3 * DIM)).then(() => null, (e: unknown) => e);
      expect(err).to.be.instanceOf(ResourceExhaustedError);

      // Rows held take pushes; their values move by exactly one update.
      const again = await push(room, 3);
      expect(again.ok && again.value).to.include({ rowsApplied: room.length, rowsCreated: 0 });
      const g = halves(new Float32Array(room.length * DIM));
      expect(bits(await sparse.pull('items', room)).equals(bits(values.map((w, i) => w - LR * g[i]!)))).to.equal(true);
      // Pulls of rows not held still answer, the other shard still creates rows, and the shard still describes itself.
      expect(await sparse.pull('items', more)).to.have.length(3 * DIM);
      const other = await sparse.push('items', ownedBy(1, 30_000_000n, 2), new Float32Array(2 * DIM));
      expect(other.rowsCreated).to.equal(2);
      expect(Number((await describeShard(0)).rows)).to.equal(CAP);
      raw.close();
    });
  });

  describe('tessera shard --max-sparse-rows', () => {
    let store: MemoryMembershipStore;
    let membership: TesseraGrpcServer;
    before(async () => {
      store = new MemoryMembershipStore();
      await store.createCluster({ name: 'cap', slots: 8, model: MODEL, optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async', initialShards: 1 });
      membership = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    });
    after(async () => {
      await membership.close(50);
      await store.close();
    });

    it('is in the help, with its default; 0 is refused', async () => {
      const help = await run(['shard', '--help'], 30_000);
      expect(help.stdout).to.match(/--max-sparse-rows N[\s\S]*8000000/);
      const zero = await run(['shard', '--membership', `127.0.0.1:${membership.port}`, '--id', 'z', '--max-sparse-rows', '0'], 30_000);
      expect(zero.code, zero.stderr).to.equal(2);
      expect(zero.stderr).to.match(/--max-sparse-rows must be at least 1/);
    });

    it('reaches the shard: the row past the cap is refused', async () => {
      const shard = start(['shard', '--membership', `127.0.0.1:${membership.port}`, '--id', 's0', '--max-sparse-rows', '3'], 60_000);
      try {
        const address = await waitFor('the shard to own every slot', async () => {
          const map = await store.getMap();
          return map?.owners.every((o) => o === 's0') ? map.addresses['s0'] : undefined;
        });
        const raw = rawSparseClient(address!);
        const push = (ids: bigint[], seq: number) => rawSparse<SparsePushAck>(raw, 'push', { epoch: 1, table: 'items', workerId: 'w', seq, ids: u64(ids), gradients: f32(new Float32Array(ids.length * DIM)) });
        const three = await push([1n, 2n, 3n], 1);
        expect(three.ok && three.value.rowsCreated).to.equal(3);
        const fourth = await push([4n], 2);
        expect(fourth.ok).to.equal(false);
        if (!fourth.ok) {
          expect(fourth.error.code).to.equal(status.RESOURCE_EXHAUSTED);
          expect(fourth.error.details).to.match(/on shard s0: it holds 3 rows .* over the cap of 3 rows per table per shard \(--max-sparse-rows\)/);
        }
        raw.close();
      } finally {
        shard.kill('SIGTERM');
        await shard.finished;
      }
    });
  });
});
