import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { type BulkReply } from '../../cluster/wire/bulk-frames.js';
import { slotStart } from '../../cluster/slots.js';
import { f32 } from '../helpers/raw-shard.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';

const ELEMENTS = 10_000;
const SLOTS = 64;

/**
 * The bulk transport (plain TCP beside gRPC) keeps the data plane's contract:
 * the same values as gRPC, every bad input refused with the same typed status
 * and nothing applied, the connection still usable after a refused request, a
 * stream that cannot be parsed closed without harm to the shard.
 */
describe('functional: the bulk transport', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  const owned = { begin: 0, end: 32 };
  const n = slotStart(32, ELEMENTS, SLOTS);
  const push = (over: object = {}) => ({ id: 1, op: 'push', epoch: 1, ranges: [owned], workerId: 'w', seq: 1, model: 'flat', length: n, ...over });

  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(ELEMENTS), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 0.5 } });
  });
  after(async () => cluster.close());

  const snapshot = async () => Buffer.from((await (await cluster.client({ transport: 'grpc' })).pull()).buffer);

  it('moves the same values as gRPC, and a retried push is applied once', async () => {
    const bulk = await cluster.client({ transport: 'bulk', workerId: 'bulk-w' });
    const grpc = await cluster.client({ transport: 'grpc', workerId: 'grpc-w' });
    expect(Buffer.from((await bulk.pull()).buffer).equals(Buffer.from((await grpc.pull()).buffer))).to.equal(true);
    const g = Float32Array.from({ length: ELEMENTS }, (_, i) => (i % 7) - 3);
    const before = await grpc.pull();
    const seq = bulk.nextSeq();
    const first = await bulk.push(g, seq);
    const again = await bulk.push(g, seq);
    expect(first.appliedSlots).to.equal(SLOTS);
    expect(again.duplicateSlots, 'the retry').to.equal(SLOTS);
    const after = await grpc.pull();
    for (let i = 0; i < ELEMENTS; i++) expect(after[i]).to.equal(Math.fround(before[i]! - 0.5 * g[i]!));
    expect(Buffer.from((await bulk.pull()).buffer).equals(Buffer.from(after.buffer))).to.equal(true);
  });

  it('refuses bad input with the typed status, applies nothing, and keeps the connection', async () => {
    const raw = new RawBulk(cluster.shards[0]!.bulkAddress);
    const ones = Buffer.from(new Float32Array(n).fill(1).buffer);
    const nan = new Float32Array(n).fill(1);
    nan[7] = NaN;
    const cases: [string, object, Buffer, number, RegExp][] = [
      ['too few values', push({ length: n - 1 }), ones.subarray(4), status.INVALID_ARGUMENT, /carries 4999 values but slots of the request hold 5000/],
      ['NaN', push(), f32(nan), status.INVALID_ARGUMENT, /non-finite value \(NaN\)/],
      ['unknown model', push({ model: 'resnet' }), ones, status.INVALID_ARGUMENT, /unknown model "resnet"/],
      ['stale epoch', push({ epoch: 0 }), ones, status.FAILED_PRECONDITION, /epoch 0 but the shard is at epoch 1/],
      ['slot of the other shard', push({ ranges: [{ begin: 40, end: 41 }], length: slotStart(41, ELEMENTS, SLOTS) - slotStart(40, ELEMENTS, SLOTS) }), ones.subarray(0, 4 * (slotStart(41, ELEMENTS, SLOTS) - slotStart(40, ELEMENTS, SLOTS))), status.FAILED_PRECONDITION, /slot 40 is owned by shard shard-1/],
      ['no worker id', push({ workerId: '' }), ones, status.INVALID_ARGUMENT, /no worker_id/],
    ];
    const start = await snapshot();
    for (const [name, header, payload, code, match] of cases) {
      raw.send(header, payload);
      const r = await raw.next();
      expect(r, name).not.to.equal(null);
      expect(r!.reply.ok, name).to.equal(false);
      const e = r!.reply as Extract<BulkReply, { ok: false }>;
      expect(e.code, name).to.equal(code);
      expect(e.details, name).to.match(match);
    }
    expect((await snapshot()).equals(start), 'values bit-identical').to.equal(true);
    // The same connection still serves a valid pull.
    raw.send({ id: 9, op: 'pull', epoch: 1, ranges: [owned], workerId: 'w', model: 'flat' });
    const ok = await raw.next();
    expect(ok!.reply).to.include({ ok: true, total: n });
    expect(ok!.values.equals(start.subarray(0, 4 * n))).to.equal(true);
    raw.close();
  });

  it('a stream that cannot be parsed is closed; the shard serves the next connection', async () => {
    for (const garbage of [Buffer.from([5, 0, 0, 0, 0x7b, 0x7b, 0x7b, 0x7b, 0x7b]), Buffer.from([0xff, 0xff, 0xff, 0x7f])]) {
      const raw = new RawBulk(cluster.shards[0]!.bulkAddress);
      raw.sendRaw(garbage);
      expect(await raw.next()).to.equal(null);
      expect(raw.closed).to.equal(true);
    }
    const client = await cluster.client({ transport: 'bulk' });
    expect((await client.pull()).length).to.equal(ELEMENTS);
  });
});
