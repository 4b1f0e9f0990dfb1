import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { encodedSlotBytes } from '../../cluster/wire/gradient-codec.js';
import { initialValues } from '../../cluster/model-spec.js';
import { waitFor } from '../helpers/cli.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { f32, rawClient, rawPull } from '../helpers/raw-shard.js';
import { PUSH_CALL_BYTES } from '../../server/push-assembler.js';

const MIB = 2 ** 20;
const SLOTS = 8;
const SLOT = 1 << 18; // values per slot: 1 MiB, the size of a push's window
const D = SLOTS * SLOT;
const BUDGET = 3.5 * MIB; // three windows fit, a fourth does not
const PUSH = MIB + PUSH_CALL_BYTES; // what a push that has sent its first values holds: its window and its call

/**
 * The shard's budget of bytes in flight (server/inflight-budget.ts), over
 * every connection and both transports: pushes that have sent their first
 * values hold a window each, and once the budget is full the next push is
 * refused RESOURCE_EXHAUSTED (`busy`) before anything is applied; the bytes
 * come back when the pushes end however they end; an encoded push holds what
 * has arrived, not what its header announces; the typed client rides out a
 * full budget by retrying. A shard without the budget let 1,500 header-and-
 * first-bytes pushes hold a window each (1.5 GB).
 */
describe('functional: bytes in flight per shard', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  const mine = { begin: 0, end: 1 };
  const header = (seq: number, over: object = {}) => ({ epoch: 1, ranges: [mine], workerId: 'w', seq, model: 'flat', ...over });
  const held = () => cluster.shards[0]!.inflight.heldBytes;

  before(async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(D), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, maxInflightBytes: BUDGET });
  });
  after(async () => {
    await cluster.close();
  });

  it('bulk: three unfinished pushes hold a window each; the fourth is refused busy, nothing applied; closing them gives the bytes back', async () => {
    const before = await (await cluster.client({ workerId: 'reader-1' })).pull();
    const open = [1, 2, 3].map((k) => {
      const c = new RawBulk(cluster.shards[0]!.bulkAddress);
      c.send({ id: k, op: 'push', length: SLOT, ...header(k) }, f32(new Float32Array(256).fill(1)));
      return c;
    });
    await waitFor('three windows held', () => held() === 3 * PUSH);
    const fourth = new RawBulk(cluster.shards[0]!.bulkAddress);
    fourth.send({ id: 4, op: 'push', length: SLOT, ...header(4) }, f32(new Float32Array(SLOT).fill(1)));
    const refused = await fourth.next();
    expect(refused?.reply.ok).to.equal(false);
    if (refused && !refused.reply.ok) {
      expect(refused.reply.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused.reply.metadata['tessera-error']).to.equal('busy');
      expect(refused.reply.details).to.match(/a push’s window needs 1 MiB but the shard's requests already hold 3 of its 4 MiB \(--max-inflight-mib\); retry shortly/);
    }
    expect(held(), 'the refused push holds nothing').to.equal(3 * PUSH);
    for (const c of [...open, fourth]) c.close();
    await waitFor('every byte given back', () => held() === 0);
    const after = await (await cluster.client({ workerId: 'reader-2' })).pull();
    expect(Buffer.from(after.buffer).equals(Buffer.from(before.buffer)), 'no push applied anything').to.equal(true);
  });

  it('gRPC: the same, and a cancelled push gives its window back', async () => {
    const raw = rawClient(cluster.shards[0]!.address, { 'grpc.use_local_subchannel_pool': 1 });
    const calls = [1, 2, 3].map((k) => {
      const call = raw.push(() => undefined);
      call.on('error', () => undefined);
      call.write({ header: header(10 + k), offset: 0, values: f32(new Float32Array(256).fill(1)) });
      return call;
    });
    await waitFor('three windows held', () => held() === 3 * PUSH);
    const fourth = await new Promise<grpc.ServiceError | null>((resolve) => {
      const call = raw.push((err) => resolve(err));
      call.on('error', () => undefined);
      call.write({ header: header(14), offset: 0, values: f32(new Float32Array(256).fill(1)) });
    });
    expect(fourth?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(fourth?.metadata.get('tessera-error')).to.deep.equal(['busy']);
    for (const c of calls) c.cancel();
    await waitFor('every byte given back', () => held() === 0);
    raw.close();
  });

  it('an encoded push holds what has arrived, not the size its header announces', async () => {
    const wireBytes = encodedSlotBytes({ kind: 'int8' }, SLOT);
    const c = new RawBulk(cluster.shards[0]!.bulkAddress);
    c.send({ id: 1, op: 'push', length: SLOT, compression: 'int8', wireBytes, ...header(20) }, Buffer.alloc(100));
    await waitFor('the first bytes held', () => held() > 0);
    expect(held(), `its call and at most the first 64 KiB of ${wireBytes}`).to.equal(PUSH_CALL_BYTES + (64 << 10));
    c.close();
    await waitFor('given back', () => held() === 0);
  });

  it('pushes refused on their header (a wrong length, a wrong encoded size) give back what they took', async () => {
    for (let k = 0; k < 20; k++) {
      const c = new RawBulk(cluster.shards[0]!.bulkAddress);
      c.send({ id: 1, op: 'push', length: SLOT + 1, ...header(40 + k) }, f32(new Float32Array(SLOT + 1)));
      expect((await c.next())?.reply.ok, 'a wrong length').to.equal(false);
      c.send({ id: 2, op: 'push', length: SLOT, compression: 'int8', wireBytes: 7, ...header(60 + k) }, Buffer.alloc(7));
      expect((await c.next())?.reply.ok, 'a wrong encoded size').to.equal(false);
      c.close();
    }
    await waitFor('every byte given back', () => held() === 0);
  });

  it('a push that could never fit the budget is refused for good (RESOURCE_EXHAUSTED), not retried as busy', async () => {
    const big = await startCluster({ shards: 1, model: flatModel(16 * MIB), slots: 1, optimizer: { name: 'sgd', learningRate: 1 }, maxInflightBytes: 16 * MIB });
    try {
      // One slot of 16 Mi values: its window (64 MiB) can never fit a 16 MiB budget.
      const c = new RawBulk(big.shards[0]!.bulkAddress);
      c.send({ id: 1, op: 'push', length: 16 * MIB, epoch: 1, ranges: [{ begin: 0, end: 1 }], workerId: 'w', seq: 1, model: 'flat' }, f32(new Float32Array(256)));
      c.close();
      const client = await big.client({ workerId: 'big', retryForMs: 60_000 });
      const began = Date.now();
      const err = await client.push(new Float32Array(16 * MIB)).then(
        () => null,
        (e: Error & { code?: number }) => e,
      );
      expect(err?.message).to.match(/a push’s window needs 64 MiB, more than the 16 MiB the shard lets its requests hold at once \(--max-inflight-mib\)/);
      expect(Date.now() - began, 'given up at once, not after retrying for a minute').to.be.below(30_000);
    } finally {
      await big.close();
    }
  });

  it('gRPC pulls give back what their chunks held, finished or cancelled', async () => {
    const raw = rawClient(cluster.shards[0]!.address, { 'grpc.use_local_subchannel_pool': 1 });
    // Each holds at most two 1 MiB chunks at a time: one after the other, they fit.
    for (let k = 0; k < 4; k++) {
      const pulled = await rawPull(raw, { epoch: 1, ranges: [{ begin: 0, end: SLOTS }], model: 'flat', maxChunkBytes: MIB });
      expect(pulled.ok, pulled.ok ? '' : pulled.error.details).to.equal(true);
    }
    const cancelled = raw.pull({ epoch: 1, ranges: [{ begin: 0, end: SLOTS }], model: 'flat', maxChunkBytes: MIB });
    cancelled.on('error', () => undefined);
    cancelled.once('data', () => cancelled.cancel());
    await waitFor('every byte given back', () => held() === 0);
    raw.close();
  });

  it('the typed client retries a push refused busy, and it is applied once the budget has room', async () => {
    const client = await cluster.client({ workerId: 'trainer', transport: 'bulk' });
    const start = new Float32Array(D);
    initialValues(flatModel(D), 0, start);
    const open = [1, 2, 3].map((k) => {
      const c = new RawBulk(cluster.shards[0]!.bulkAddress);
      c.send({ id: k, op: 'push', length: SLOT, ...header(30 + k) }, f32(new Float32Array(256).fill(1)));
      return c;
    });
    await waitFor('three windows held', () => held() === 3 * PUSH);
    const pushed = client.push(new Float32Array(D).fill(1));
    setTimeout(() => open.forEach((c) => c.close()), 150);
    const ack = await pushed;
    expect(ack.appliedSlots).to.equal(SLOTS);
    const values = await client.pull();
    for (let i = 0; i < D; i += 4099) expect(values[i], `element ${i}`).to.equal(Math.fround(start[i]! - 1));
  });
});
