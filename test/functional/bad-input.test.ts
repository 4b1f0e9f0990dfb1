import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { slotStart } from '../../cluster/slots.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { f32, rawClient, rawPull, rawPush } from '../helpers/raw-shard.js';
import { forEachTransport } from '../helpers/transports.js';

/**
 * Every kind of bad input gets its status over real gRPC, and the stored
 * values stay bit-identical, as the client reads them over either transport;
 * the shard keeps serving afterwards.
 */
forEachTransport('functional: bad input costs no data', function (transport) {
  this.timeout(60_000);
  const ELEMENTS = 10_000;
  const SLOTS = 64;
  let cluster: TestCluster;
  let shard0: string;
  let raw: ReturnType<typeof rawClient>;
  // Shard 0 owns slots [0, 32): a valid push for them has this many values.
  const owned = { begin: 0, end: 32 };
  const n = slotStart(32, ELEMENTS, SLOTS);
  const header = (over: object = {}) => ({ epoch: 1, ranges: [owned], workerId: 'w', seq: 1, model: 'flat', ...over });

  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(ELEMENTS), slots: SLOTS, optimizer: { name: 'adam' }, transport });
    shard0 = cluster.shards[0]!.address;
    raw = rawClient(shard0);
  });
  after(async () => {
    raw.close();
    await cluster.close();
  });

  async function snapshot(): Promise<Buffer> {
    const client = await cluster.client();
    const v = await client.pull();
    return Buffer.from(v.buffer);
  }

  const ones = () => new Float32Array(n).fill(1);
  const withValue = (v: number) => {
    const g = ones();
    g[n - 3] = v;
    return g;
  };
  const mdError = (e: { metadata: { get(k: string): unknown[] } }) => String(e.metadata.get('tessera-error')[0] ?? '');

  const cases: { name: string; messages: () => object[]; code: status; reason?: string; match: RegExp }[] = [
    { name: 'too few values', messages: () => [{ header: header(), offset: 0, values: f32(new Float32Array(n - 1)) }], code: status.INVALID_ARGUMENT, match: /carries 4999 values but its slots hold 5000/ },
    { name: 'too many values', messages: () => [{ header: header(), offset: 0, values: f32(new Float32Array(n + 1)) }], code: status.INVALID_ARGUMENT, match: /more than the \d+ values/ },
    { name: 'bytes not a multiple of 4', messages: () => [{ header: header(), offset: 0, values: Buffer.alloc(4 * n - 2) }], code: status.INVALID_ARGUMENT, match: /not a whole number of float32/ },
    { name: 'chunks out of order', messages: () => [{ header: header(), offset: 8, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /send chunks in order/ },
    { name: 'no header', messages: () => [{ offset: 0, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /must carry its header/ },
    { name: 'unknown model', messages: () => [{ header: header({ model: 'resnet' }), offset: 0, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /unknown model "resnet"/ },
    { name: 'NaN gradient', messages: () => [{ header: header(), offset: 0, values: f32(withValue(NaN)) }], code: status.INVALID_ARGUMENT, match: /non-finite value \(NaN\)/ },
    { name: '+Inf gradient', messages: () => [{ header: header(), offset: 0, values: f32(withValue(Infinity)) }], code: status.INVALID_ARGUMENT, match: /non-finite value \(Infinity\)/ },
    { name: '-Inf gradient', messages: () => [{ header: header(), offset: 0, values: f32(withValue(-Infinity)) }], code: status.INVALID_ARGUMENT, match: /non-finite value \(-Infinity\)/ },
    { name: 'slot beyond the key space', messages: () => [{ header: header({ ranges: [{ begin: 60, end: 70 }] }), offset: 0, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /exceeds the 64 slots/ },
    { name: 'empty slot range', messages: () => [{ header: header({ ranges: [{ begin: 5, end: 5 }] }), offset: 0, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /is empty/ },
    { name: 'no worker id', messages: () => [{ header: header({ workerId: '' }), offset: 0, values: f32(ones()) }], code: status.INVALID_ARGUMENT, match: /no worker_id/ },
    { name: 'stale epoch', messages: () => [{ header: header({ epoch: 0 }), offset: 0, values: f32(ones()) }], code: status.FAILED_PRECONDITION, reason: 'stale-epoch', match: /epoch 0 but the shard is at epoch 1/ },
    { name: 'epoch from the future', messages: () => [{ header: header({ epoch: 9 }), offset: 0, values: f32(ones()) }], code: status.UNAVAILABLE, reason: 'not-ready', match: /behind the caller's 9/ },
    { name: 'slot owned by another shard', messages: () => [{ header: header({ ranges: [{ begin: 30, end: 40 }] }), offset: 0, values: f32(ones()) }], code: status.FAILED_PRECONDITION, reason: 'moved', match: /slot 32 is owned by shard shard-1/ },
    { name: 'oversized message (17 MiB)', messages: () => [{ header: header(), offset: 0, values: Buffer.alloc(17 << 20) }], code: status.RESOURCE_EXHAUSTED, match: /./ },
  ];

  for (const c of cases) {
    it(`${c.name} → ${status[c.code]}, values unchanged`, async () => {
      const before = await snapshot();
      const res = await rawPush(raw, c.messages());
      expect(res.ok, 'push should have been refused').to.equal(false);
      if (res.ok) return;
      expect(res.error.code, res.error.details).to.equal(c.code);
      expect(res.error.details).to.match(c.match);
      if (c.reason) expect(mdError(res.error)).to.equal(c.reason);
      const after = await snapshot();
      expect(after.equals(before), 'stored values changed').to.equal(true);
    });
  }

  it('bad pulls get their status too', async () => {
    const stale = await rawPull(raw, { epoch: 0, ranges: [owned], workerId: 'w' });
    expect(stale.ok).to.equal(false);
    if (!stale.ok) expect(stale.error.code).to.equal(status.FAILED_PRECONDITION);
    const unknown = await rawPull(raw, { epoch: 1, ranges: [owned], workerId: 'w', model: 'resnet' });
    expect(!unknown.ok && unknown.error.code).to.equal(status.INVALID_ARGUMENT);
    const none = await rawPull(raw, { epoch: 1, ranges: [], workerId: 'w' });
    expect(!none.ok && none.error.code).to.equal(status.INVALID_ARGUMENT);
  });

  it('the shard still applies a valid push after all that', async () => {
    const before = await snapshot();
    const res = await rawPush(raw, [{ header: header({ seq: 99 }), offset: 0, values: f32(ones()) }]);
    expect(res.ok).to.equal(true);
    if (res.ok) expect(res.value.appliedSlots).to.equal(32);
    const after = await snapshot();
    expect(after.subarray(0, 4 * n).equals(before.subarray(0, 4 * n))).to.equal(false);
    expect(after.subarray(4 * n).equals(before.subarray(4 * n))).to.equal(true);
  });
});
