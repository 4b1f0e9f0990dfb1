import { expect } from 'chai';
import { startCluster, flatModel, type TestCluster } from '../helpers/cluster.js';
import { initialValues } from '../../cluster/model-spec.js';
import { forEachTransport } from '../helpers/transports.js';

forEachTransport('functional: push/pull round trip', function (transport) {
  this.timeout(120_000);
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('moves a 64 MB (16M-float) model through 2 shards and applies sgd exactly', async () => {
    const n = 16 * 1024 * 1024;
    const model = flatModel(n);
    cluster = await startCluster({ shards: 2, model, optimizer: { name: 'sgd', learningRate: 0.5 }, transport });
    const client = await cluster.client();
    const before = await client.pull();
    const expected = new Float32Array(n);
    initialValues(model, 0, expected);
    expect(Buffer.from(before.buffer).equals(Buffer.from(expected.buffer))).to.equal(true);

    const grad = new Float32Array(n);
    for (let i = 0; i < n; i++) grad[i] = (i % 97) / 97 - 0.5;
    const stats = await client.push(grad);
    expect(stats.appliedSlots).to.equal(1024);
    expect(stats.duplicateSlots).to.equal(0);

    const after = await client.pull();
    for (let i = 0; i < n; i++) expected[i] = expected[i]! - 0.5 * grad[i]!;
    expect(Buffer.from(after.buffer).equals(Buffer.from(expected.buffer))).to.equal(true);
    // Each shard holds half of the model.
    for (const s of cluster.shards) expect(s.shard.store.heldElements()).to.equal(n / 2);
  });
});

forEachTransport('functional: the client checks before it sends', function (transport) {
  this.timeout(30_000);
  let cluster: TestCluster | undefined;
  after(async () => cluster?.close());

  it('a gradient with NaN is refused before any shard applies a part of it', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(4096), slots: 16, transport });
    const client = await cluster.client();
    const before = await client.pull();
    const grad = new Float32Array(4096).fill(1);
    grad[4000] = NaN; // in shard-1's half: shard-0's half would otherwise be applied
    const err = await client.push(grad).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err?.name).to.equal('InvalidArgumentError');
    expect(err?.message).to.match(/non-finite value \(NaN\) at element 4000; nothing was sent/);
    expect(Buffer.from((await client.pull()).buffer).equals(Buffer.from(before.buffer))).to.equal(true);
  });

  it('slot ranges outside the key space, or reversed, are a typed error', async () => {
    cluster ??= await startCluster({ shards: 2, model: flatModel(4096), slots: 16, transport });
    const client = await cluster.client();
    for (const ranges of [[{ begin: 10, end: 20 }], [{ begin: 5, end: 2 }], [{ begin: -1, end: 2 }]]) {
      const err = await client.pullRanges(ranges).then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(err?.name, JSON.stringify(ranges)).to.equal('InvalidArgumentError');
    }
  });

  it('pullTensor cuts one named tensor out of the slots that cover it; an unknown name is refused', async () => {
    const model = {
      name: 'two',
      seed: 3,
      tensors: [
        { name: 'a', shape: [1000], init: { kind: 'uniform' as const, low: -1, high: 1 } },
        { name: 'b', shape: [37, 3], init: { kind: 'uniform' as const, low: 0, high: 1 } },
      ],
    };
    const c = await startCluster({ shards: 2, model, slots: 64, transport });
    try {
      const client = await c.client();
      const all = await client.pull();
      expect(Array.from(await client.pullTensor('a'))).to.deep.equal(Array.from(all.subarray(0, 1000)));
      expect(Array.from(await client.pullTensor('b'))).to.deep.equal(Array.from(all.subarray(1000)));
      const err = await client.pullTensor('c').then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(err?.message).to.match(/unknown tensor "c" in model two; its tensors are a, b/);
    } finally {
      await c.close();
    }
  });
});
