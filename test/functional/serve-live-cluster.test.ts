import { expect } from 'chai';
import { writeOnnx } from '../../serving/formats/onnx-writer.js';
import { buildGraph } from '../../serving/model/build-graph.js';
import { loadOnnx } from '../../serving/runtime/onnx-runtime.js';
import { ClusterFollower } from '../../serving/serve/cluster-follower.js';
import { ModelRepository } from '../../serving/serve/model-repository.js';
import { type ModelServer, startModelServer } from '../../serving/serve/model-server.js';
import { selectBackend } from '../../worker/backend.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { logreg } from '../../worker/models/logreg.js';
import { run, waitFor } from '../helpers/cli.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

/**
 * Online serving (`tessera serve --membership|--redis … --refresh S`): the
 * server takes the weights of a cluster that is still training every S
 * seconds and serves each pull as the next version; what it answers is what
 * the cluster's weights of that moment predict. The CLI refuses the
 * combinations that cannot work, saying why.
 */
describe('functional: serving a live cluster', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let repository: ModelRepository;
  let follower: ClusterFollower;
  let server: ModelServer;
  const spec = logreg.spec(2);
  const test = mnistSplit().test;
  const x = test.x.subarray(0, 4 * 784);

  before(async () => {
    await selectBackend('wasm');
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: 0.1 } });
    repository = new ModelRepository('logreg');
    follower = new ClusterFollower({ store: cluster.store, repository, refreshS: 0.1 });
    await follower.start();
    server = await startModelServer({ http: '127.0.0.1:0', source: { repository } });
  });
  after(async () => {
    await server?.close();
    await follower?.close();
    await repository?.close();
    await cluster?.close();
  });

  const infer = async () => {
    const r = await fetch(`http://${server.httpAddress}/v2/models/logreg/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'input', shape: [4, 784], datatype: 'FP32', data: Array.from(x) }] }) });
    return (await r.json()) as { model_version: string; outputs: { data: number[] }[] };
  };
  const predicted = async (weights: Float32Array) => {
    const model = await loadOnnx(writeOnnx(buildGraph(spec, weights), 'none').files[0]!.bytes);
    try {
      return Array.from(await model.run(x, 4));
    } finally {
      await model.close();
    }
  };

  it('serves new versions as the cluster trains, each answering what the weights of its moment predict', async () => {
    const client = await cluster.client({ workerId: 'w' });
    const first = await infer();
    expect(first.outputs[0]!.data.map(Math.fround)).to.deep.equal(await predicted(await client.pull()));
    const params = await client.pull();
    const { gradient } = await logreg.gradient(params, { x: test.x, y: test.y, count: 64 });
    await client.push(gradient);
    const trained = await client.pull();
    const want = await predicted(trained);
    const later = await waitFor('a version with the trained weights', async () => {
      const r = await infer();
      return JSON.stringify(r.outputs[0]!.data.map(Math.fround)) === JSON.stringify(want) ? r : undefined;
    }, 20_000, 50);
    expect(Number(later.model_version)).to.be.greaterThan(Number(first.model_version));
  });

  it('the CLI says what to give instead of a combination that cannot work', async () => {
    const cases: [string[], RegExp][] = [
      [['serve'], /say what to serve: --model-dir DIR/],
      [['serve', '--membership', '127.0.0.1:1'], /needs --refresh S/],
      [['serve', '--model-dir', '.', '--membership', '127.0.0.1:1', '--refresh', '1'], /either --model-dir DIR or a cluster/],
      [['serve', '--model-dir', '.', '--refresh', '1'], /--refresh goes with --redis\/--membership/],
      [['serve', '--model-dir', '.', '--http', 'off', '--grpc', 'off'], /nothing would be served/],
      [['export', '--membership', '127.0.0.1:1'], /needs --out DIR/],
      [['export', '--membership', '127.0.0.1:1', '--out', 'x', '--prune', '1.5'], /--prune takes a fraction in \[0, 1\)/],
      [['export', '--verify', 'no/such/version'], /manifest\.json cannot be read/],
    ];
    for (const [args, message] of cases) {
      const r = await run(args, 20_000, { TESSERA_REDIS_URL: '' });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.be.oneOf([1, 2]);
      expect(r.stderr, args.join(' ')).to.match(message);
    }
  });
});
