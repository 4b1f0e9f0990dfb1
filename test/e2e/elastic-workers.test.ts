import { expect } from 'chai';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { clusterConfig } from '../../cli/local/defaults.js';
import { ShardServer } from '../../server/shard-server.js';
import { BlockPlan } from '../../worker/data/work-source.js';
import { MNIST_TRAIN_EXAMPLES } from '../../worker/data/mnist.js';
import { loadTask } from '../../worker/tasks/index.js';
import { type Running, start, waitFor } from '../helpers/cli.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';

const EPOCHS = 2;
const BLOCK = 256;
const SEED = 3;

interface BlockEvent {
  event: 'block';
  id: string;
  item: number;
  epoch: number;
  examples: number;
  counted: boolean;
}

/**
 * Workers come and go mid-run: of two worker processes one is killed (-9)
 * and a third joins. Training finishes, and every example of every epoch was
 * trained on by exactly one live worker, as the workers' block reports show.
 */
describe('e2e: elastic workers', function () {
  this.timeout(120_000);
  const store = new MemoryMembershipStore();
  let server: TesseraGrpcServer | undefined;
  let shard: ShardServer | undefined;
  const workers: Running[] = [];
  after(async () => {
    for (const w of workers) w.kill();
    await shard?.close(100);
    await server?.close(100);
    await store.close();
  });

  it('a worker killed and one added mid-run: the run finishes, each example used once per epoch by a live worker', async () => {
    await store.createCluster(clusterConfig({ name: 'elastic', slots: 64, task: await loadTask('mnist-mlp'), seed: 1, optimizer: 'adam', initialShards: 1 }));
    server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    shard = await ShardServer.start({ id: 'shard-0', listen: '127.0.0.1:0', store });

    const blocks: BlockEvent[] = [];
    const worker = (id: string) => {
      const w = start(['worker', '--membership', `127.0.0.1:${server!.port}`, '--id', id, '--epochs', String(EPOCHS), '--block-size', String(BLOCK), '--seed', String(SEED), '--lease-ttl-ms', '1500', '--json']);
      let pending = '';
      w.child.stdout!.on('data', (d: Buffer) => {
        pending += d.toString();
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const line of lines) if (line.includes('"event":"block"')) blocks.push(JSON.parse(line) as BlockEvent);
      });
      workers.push(w);
      return w;
    };
    const w0 = worker('w0');
    const w1 = worker('w1');
    await waitFor('w1 to finish two blocks', () => blocks.filter((b) => b.id === 'w1').length >= 2, 60_000, 50);
    // Killed while it holds a block (it holds one but for the instant between completing a block and claiming the next).
    await waitFor('w1 to hold a block', async () => (await store.workProgress())?.held['w1'], 10_000, 5);
    w1.kill('SIGKILL');
    await w1.finished;
    const killedHolding = (await store.workProgress())?.held['w1'] ?? [];
    const w2 = worker('w2');

    const [r0, r1, r2] = await Promise.all([w0.finished, w1.finished, w2.finished]);
    expect(killedHolding.length, 'blocks w1 held when it died').to.be.at.most(1);
    expect(r0.code, r0.stderr).to.equal(0);
    expect(r1.code).to.equal(137);
    expect(r2.code, r2.stderr).to.equal(0);

    const plan = new BlockPlan(MNIST_TRAIN_EXAMPLES, EPOCHS, BLOCK, SEED);
    const total = EPOCHS * plan.blocksPerEpoch;
    const counted = blocks.filter((b) => b.counted);
    const reported = counted.map((b) => b.item).sort((a, b) => a - b);
    // Every work item done exactly once: no item reported twice, and every item reported — but for at most one
    // that w1 completed just before the kill, whose report line it had queued and never wrote (stdout to a pipe
    // is written asynchronously; SIGKILL drops what is queued). The store counts it done (no one claims it again).
    expect(new Set(reported).size, 'no item done twice').to.equal(reported.length);
    const unreported = Array.from({ length: total }, (_, i) => i).filter((i) => !reported.includes(i));
    expect(unreported.length, `items done without a report: ${unreported.join(', ')}`).to.be.at.most(1);
    // …so each epoch used every example exactly once.
    const done = [...counted, ...unreported.map((item) => ({ item, epoch: Math.floor(item / plan.blocksPerEpoch) }))];
    for (let epoch = 0; epoch < EPOCHS; epoch++) {
      const uses = new Uint8Array(MNIST_TRAIN_EXAMPLES);
      for (const b of done.filter((c) => c.epoch === epoch)) for (const i of plan.indices(b.item)) uses[i]!++;
      expect(uses.every((u) => u === 1), `epoch ${epoch}: every example used once`).to.equal(true);
    }
    // The block w1 died holding was taken over and done by a live worker; the newcomer took a share.
    for (const item of killedHolding) expect(counted.find((b) => b.item === item)?.id).to.be.oneOf(['w0', 'w2']);
    expect(counted.filter((b) => b.id === 'w2').length, 'blocks the added worker did').to.be.greaterThan(0);
    expect(await store.claimWork('late', plan.plan, 0)).to.deep.equal({ kind: 'finished' });
  });
});
