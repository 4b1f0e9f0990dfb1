import { expect } from 'chai';
import { slotStart } from '../../cluster/slots.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { f32, rawClient, rawPush } from '../helpers/raw-shard.js';
import { forEachTransport } from '../helpers/transports.js';

forEachTransport('functional: a retried push is applied once', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster.close());

  it('the same (worker id, seq) sent twice through the client changes the values once', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(50_000), optimizer: { name: 'sgd', learningRate: 1 }, transport });
    const client = await cluster.client({ workerId: 'w1' });
    const start = await client.pull();
    const grad = new Float32Array(client.elements).fill(0.25);
    const first = await client.push(grad, 42);
    expect(first.appliedSlots).to.equal(1024);
    const second = await client.push(grad, 42);
    expect(second).to.deep.equal({ seq: 42, appliedSlots: 0, duplicateSlots: 1024, wireBytes: 200_000 });
    const end = await client.pull();
    for (let i = 0; i < start.length; i++) expect(end[i]).to.equal(Math.fround(start[i]! - 0.25));
    // Another worker with the same seq is a different push.
    const other = await cluster.client({ workerId: 'w2' });
    expect((await other.push(grad, 42)).appliedSlots).to.equal(1024);
  });

  it('a push retried after its stream broke mid-way is applied once', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(300_000), optimizer: { name: 'sgd', learningRate: 1 }, transport });
    const client = await cluster.client({ workerId: 'w1' });
    const start = await client.pull();
    const raw = rawClient(cluster.shards[0]!.address);
    const header = { epoch: 1, ranges: [{ begin: 0, end: 1024 }], workerId: 'w1', seq: 7, model: 'flat' };
    // First attempt: only half the values arrive before the stream ends: refused, the slots whose values all came applied.
    const half = await rawPush(raw, [{ header, offset: 0, values: f32(new Float32Array(150_000).fill(1)) }]);
    expect(half.ok).to.equal(false);
    const mid = await client.pull();
    // 300 000 values over 1 024 slots: slots 0–511 end at or before element 150 000 (slot 511 ends exactly there).
    const applied = slotStart(512, 300_000, 1024);
    expect(applied).to.equal(150_000);
    for (let i = 0; i < start.length; i++) {
      const want = i < applied ? Math.fround(start[i]! - 1) : start[i]!;
      if (mid[i] !== want) expect.fail(`element ${i} after the broken push: ${mid[i]}, want ${want}`);
    }
    // The retry with the same seq applies the other slots, and a second retry is a duplicate.
    const grad = new Float32Array(300_000).fill(1);
    expect(await client.push(grad, 7)).to.include({ appliedSlots: 512, duplicateSlots: 512 });
    expect((await client.push(grad, 7)).duplicateSlots).to.equal(1024);
    const end = await client.pull();
    for (let i = 0; i < start.length; i++) if (end[i] !== Math.fround(start[i]! - 1)) expect.fail(`element ${i}: ${end[i]}, want ${Math.fround(start[i]! - 1)} (applied once)`);
    raw.close();
  });
});

describe('functional: sequence numbers across a restart', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster.close());

  it('a worker restarted under the same id right after numbering pushes faster than one a millisecond: every push of the new one is applied', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(64), slots: 4, optimizer: { name: 'sgd', learningRate: 1 } });
    const one = new Float32Array(64).fill(1);
    const first = await cluster.client({ workerId: 'fast' });
    const start = await first.pull();
    // It numbers 5,000 pushes faster than one a millisecond (as a fast pipelined worker may: the
    // numbers are taken here without the pushes, then the last one is pushed); then it is replaced
    // within moments. Numbered from the clock in ms alone, the new one would start more than the
    // dedup window (4,096) below where this one ended, and its pushes would count as applied already.
    const skipped = 5_000;
    for (let k = 0; k < skipped; k++) first.nextSeq();
    await first.push(one);
    const pushes = 1;
    // At 256 numbers a millisecond, 5,001 are behind the clock after 20 ms.
    await new Promise((r) => setTimeout(r, 25));
    await first.close();
    const again = await cluster.client({ workerId: 'fast' });
    for (let k = 0; k < 50; k++) expect((await again.push(one)).appliedSlots, `push ${k} of the restarted worker`).to.equal(4);
    const end = await again.pull();
    for (let i = 0; i < 64; i++) {
      let want = start[i]!;
      for (let k = 0; k < pushes + 50; k++) want = Math.fround(want - 1);
      expect(end[i], `element ${i}`).to.equal(want);
    }
  });
});
