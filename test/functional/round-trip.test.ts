import { expect } from 'chai';
import { startCluster, flatModel, type TestCluster } from '../helpers/cluster.js';
import { initialValues } from '../../cluster/model-spec.js';

describe('functional: push/pull round trip', function () {
  this.timeout(120_000);
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('moves a 64 MB (16M-float) model through 2 shards and applies sgd exactly', async () => {
    const n = 16 * 1024 * 1024;
    const model = flatModel(n);
    cluster = await startCluster({ shards: 2, model, optimizer: { name: 'sgd', learningRate: 0.5 } });
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
