import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { clusterConfig } from '../../cli/local/defaults.js';
import { ShardServer } from '../../server/shard-server.js';
import { loadTask } from '../../worker/tasks/index.js';
import { type Running, start, waitFor } from '../helpers/cli.js';
import { type TestCluster, flatModel, startCluster } from '../helpers/cluster.js';
import { type Sample, byLabel, havePromtool, parseExposition, promtoolCheck, scrape, total } from '../helpers/prometheus.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { f32, rawClient, rawPush } from '../helpers/raw-shard.js';
import { freePort } from '../helpers/redis-server.js';

const ELEMENTS = 4096;
const SLOTS = 1024;
/** Bytes of the whole model's values: what a full push or pull moves. */
const FULL = ELEMENTS * 4;
/** Bytes of the values of slots [begin, end) (4 values a slot here). */
const bytesOf = (begin: number, end: number) => ((end - begin) * ELEMENTS * 4) / SLOTS;

/** What `tessera worker --json` prints as it ends (cli/local/worker-events.ts). */
interface WorkerDone {
  steps: number;
  samples: number;
  lastLoss: number;
  pushRawBytes: number;
  pushWireBytes: number;
}

/** Scrapes `address`, checks the page with promtool, returns its samples. */
async function scraped(address: string): Promise<Sample[]> {
  const page = await scrape(address);
  expect(page.status, page.body).to.equal(200);
  expect(page.contentType).to.match(/^text\/plain; version=0\.0\.4/);
  await promtoolCheck(page.body);
  return parseExposition(page.body);
}

/*
 * Prometheus metrics (docs/operations.md, "Metrics"): a shard's and a
 * worker's /metrics pass Debian's `promtool check metrics`, and their
 * counters are exactly what was sent: requests by transport and status,
 * bytes, slot-range load summing to the totals; a worker's steps and samples
 * as it reports them.
 */
describe('metrics: /metrics of shards and workers', function () {
  this.timeout(120_000);
  before(function () {
    if (!havePromtool()) throw new Error('these tests check /metrics with promtool, which is not installed: `apt-get install prometheus` (Debian) provides it; scripts/test.sh installs it');
  });

  describe('a shard, after pushes and pulls of known sizes over both transports', () => {
    let cluster: TestCluster;
    before(async () => {
      cluster = await startCluster({ shards: 1, model: flatModel(ELEMENTS), slots: SLOTS, metrics: true });
    });
    after(async () => cluster?.close());

    it('counts each request by transport and status, its bytes and its slot ranges, and passes promtool', async () => {
      const shard = cluster.shards[0]!;
      const bulk = await cluster.client({ transport: 'bulk' });
      const grpc = await cluster.client({ transport: 'grpc' });
      const gradient = new Float32Array(ELEMENTS).fill(0.001);
      // Bulk: 3 full pushes, 2 full pulls and one of slots [512, 600). gRPC: 2 full pushes, 4 full pulls and one of [0, 16) and [100, 130).
      for (let i = 0; i < 3; i++) await bulk.push(gradient);
      for (let i = 0; i < 2; i++) await bulk.pull();
      await bulk.pullRanges([{ begin: 512, end: 600 }]);
      for (let i = 0; i < 2; i++) await grpc.push(gradient);
      for (let i = 0; i < 4; i++) await grpc.pull();
      await grpc.pullRanges([
        { begin: 0, end: 16 },
        { begin: 100, end: 130 },
      ]);
      // Refused: a push at a stale epoch over gRPC, a push of another model over bulk.
      const raw = rawClient(shard.address);
      const stale = await rawPush(raw, [{ header: { epoch: 0, ranges: [{ begin: 0, end: 1 }], workerId: 'w', seq: 1 }, values: f32([1, 1, 1, 1]), offset: 0 }]);
      raw.close();
      expect(stale.ok || stale.error.code).to.equal(status.FAILED_PRECONDITION);
      const rawBulk = new RawBulk(shard.bulkAddress);
      rawBulk.send({ id: 1, op: 'push', epoch: 1, ranges: [{ begin: 0, end: 1 }], workerId: 'w', seq: 2, model: 'not-this-one', length: 4 }, f32([1, 1, 1, 1]));
      const refused = await rawBulk.next();
      rawBulk.close();
      expect(refused?.reply).to.include({ ok: false, code: status.INVALID_ARGUMENT });

      const m = await scraped(shard.metricsAddress);
      const count = (name: string, labels: Record<string, string>) => total(m, name, labels);
      // Requests by transport and status.
      expect(count('tessera_shard_push_requests_total', { transport: 'bulk', code: 'OK' })).to.equal(3);
      expect(count('tessera_shard_push_requests_total', { transport: 'grpc', code: 'OK' })).to.equal(2);
      expect(count('tessera_shard_push_requests_total', { transport: 'grpc', code: 'FAILED_PRECONDITION' })).to.equal(1);
      expect(count('tessera_shard_push_requests_total', { transport: 'bulk', code: 'INVALID_ARGUMENT' })).to.equal(1);
      expect(count('tessera_shard_push_requests_total', {}), 'no other push').to.equal(7);
      expect(count('tessera_shard_pull_requests_total', { transport: 'bulk', code: 'OK' })).to.equal(3);
      expect(count('tessera_shard_pull_requests_total', { transport: 'grpc', code: 'OK' })).to.equal(5);
      expect(count('tessera_shard_pull_requests_total', {}), 'no other pull').to.equal(8);
      // Bytes of the requests answered OK.
      expect(count('tessera_shard_push_bytes_total', { transport: 'bulk' })).to.equal(3 * FULL);
      expect(count('tessera_shard_push_bytes_total', { transport: 'grpc' })).to.equal(2 * FULL);
      expect(count('tessera_shard_pull_bytes_total', { transport: 'bulk' })).to.equal(2 * FULL + bytesOf(512, 600));
      expect(count('tessera_shard_pull_bytes_total', { transport: 'grpc' })).to.equal(4 * FULL + bytesOf(0, 16) + bytesOf(100, 130));
      // Latency: one observation per request, whatever its outcome; apply time per push applied.
      expect(count('tessera_shard_push_duration_seconds_count', { transport: 'bulk' })).to.equal(4);
      expect(count('tessera_shard_push_duration_seconds_count', { transport: 'grpc' })).to.equal(3);
      expect(count('tessera_shard_pull_duration_seconds_count', {})).to.equal(8);
      expect(count('tessera_shard_apply_seconds_count', {})).to.equal(5);
      expect(count('tessera_shard_clock_wait_seconds_count', {}), 'async: no pull waits').to.equal(0);

      // Slot ranges (64 ranges of 16 slots): bytes sum to the totals; a request counts once in each range it touches.
      for (const op of ['push', 'pull']) {
        const bytes = byLabel(m, 'tessera_shard_slot_bytes_total', 'slot_range', { op });
        expect([...bytes.values()].reduce((a, b) => a + b, 0), `${op}: slot-range bytes sum to the total`).to.equal(count(`tessera_shard_${op}_bytes_total`, {}));
        expect(bytes.size, `${op}: every range of the model`).to.equal(64);
      }
      const pulls = byLabel(m, 'tessera_shard_slot_requests_total', 'slot_range', { op: 'pull' });
      expect(pulls.get('0-15'), 'full pulls and the gRPC partial one').to.equal(7);
      expect(pulls.get('16-31'), 'full pulls only').to.equal(6);
      expect([pulls.get('96-111'), pulls.get('112-127'), pulls.get('128-143')], '[100, 130) touches three ranges').to.deep.equal([7, 7, 7]);
      expect([pulls.get('512-527'), pulls.get('592-607'), pulls.get('608-623')], '[512, 600) over bulk').to.deep.equal([7, 7, 6]);
      const pushes = byLabel(m, 'tessera_shard_slot_requests_total', 'slot_range', { op: 'push' });
      expect(new Set(pushes.values()), 'each full push in every range').to.deep.equal(new Set([5]));
      expect(byLabel(m, 'tessera_shard_slot_bytes_total', 'slot_range', { op: 'push' }).get('0-15'), 'a range’s share: its values').to.equal(5 * bytesOf(0, 16));

      // Gauges read when scraped: what the shard holds, owns and has in flight now.
      expect(count('tessera_shard_held_bytes', {})).to.be.at.least(FULL);
      expect(count('tessera_shard_owned_slots', {})).to.equal(SLOTS);
      expect(count('tessera_shard_lost_slots', {})).to.equal(0);
      expect(count('tessera_shard_map_epoch', {})).to.equal(1);
      expect(count('tessera_shard_inflight_requests', {})).to.equal(0);
      expect(count('tessera_shard_inflight_bytes', {})).to.equal(0);
      expect(count('tessera_shard_inflight_limit_bytes', {})).to.equal(shard.inflight.maxBytes);
      // Every series is labelled with its shard; the process's own metrics are there too.
      expect(m.filter((s) => s.name.startsWith('tessera_')).every((s) => s.labels['shard'] === 'shard-0')).to.equal(true);
      expect(count('process_cpu_seconds_total', {})).to.be.greaterThan(0);
    });

    it('serves /metrics only: 404 elsewhere, 405 for another method', async () => {
      const address = cluster.shards[0]!.metricsAddress;
      expect((await scrape(address, '/')).status).to.equal(404);
      expect((await scrape(address, '/metricsx')).status).to.equal(404);
      const post = await scrape(address, '/metrics', 'POST');
      expect(post.status).to.equal(405);
      expect((await scrape(address, '/metrics?x=1')).status).to.equal(200);
    });
  });

  describe('a worker process, after a short training run', () => {
    const store = new MemoryMembershipStore();
    let membership: TesseraGrpcServer | undefined;
    let shard: ShardServer | undefined;
    let worker: Running | undefined;
    after(async () => {
      worker?.kill();
      await worker?.finished;
      await shard?.close(100);
      await membership?.close(100);
      await store.close();
    });

    it('its /metrics passes promtool, its steps and samples are those it reports, and the shard counted its pushes', async () => {
      const task = await loadTask('logreg');
      await store.createCluster(clusterConfig({ name: 'metrics', slots: 64, task, seed: 1, optimizer: 'adam', initialShards: 1 }));
      membership = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
      shard = await ShardServer.start({ id: 'shard-0', listen: '127.0.0.1:0', store, metrics: '127.0.0.1:0' });
      const port = await freePort();
      // Two epochs with --eval: the held-out metrics are measured as the second begins.
      worker = start(['worker', '--membership', `127.0.0.1:${membership.port}`, '--id', 'w0', '--epochs', '2', '--block-size', '2048', '--eval', '--json', '--metrics', `127.0.0.1:${port}`, '--metrics-linger-s', '60']);
      let out = '';
      worker.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const done = await waitFor(
        'the worker to finish training',
        () => {
          if (worker!.child.exitCode !== null) throw new Error(`the worker exited with ${worker!.child.exitCode} before lingering`);
          const line = out.split('\n').find((l) => l.includes('"event":"done"'));
          return line ? (JSON.parse(line) as WorkerDone) : undefined;
        },
        100_000,
        100,
      );
      expect(done.steps).to.be.greaterThan(0);

      const w = await scraped(`127.0.0.1:${port}`);
      expect(total(w, 'tessera_worker_steps_total')).to.equal(done.steps);
      expect(total(w, 'tessera_worker_samples_total')).to.equal(done.samples);
      for (const phase of ['pull', 'compute', 'push']) expect(total(w, 'tessera_worker_step_seconds_count', { phase }), phase).to.equal(done.steps);
      expect(total(w, 'tessera_worker_loss')).to.equal(done.lastLoss);
      expect(total(w, 'tessera_worker_epoch')).to.equal(1);
      expect(total(w, 'tessera_worker_held_out', { metric: 'test_accuracy' })).to.be.within(0.5, 1);
      expect(total(w, 'tessera_worker_push_bytes_total', { encoding: 'raw' })).to.equal(done.pushRawBytes);
      expect(total(w, 'tessera_worker_push_bytes_total', { encoding: 'wire' })).to.equal(done.pushWireBytes);
      expect(w.filter((s) => s.name.startsWith('tessera_')).every((s) => s.labels['worker'] === 'w0')).to.equal(true);

      // The shard saw one push per step, of the bytes the worker says it sent.
      const s = await scraped(shard.metricsAddress);
      expect(total(s, 'tessera_shard_push_requests_total', { code: 'OK' })).to.equal(done.steps);
      expect(total(s, 'tessera_shard_push_requests_total')).to.equal(done.steps);
      expect(total(s, 'tessera_shard_push_bytes_total')).to.equal(done.pushWireBytes);

      // SIGTERM ends the linger: the worker exits 0 and its listener is gone.
      worker.kill('SIGTERM');
      expect((await worker.finished).code).to.equal(0);
      expect(await scrape(`127.0.0.1:${port}`).then(() => 'answered', () => 'closed')).to.equal('closed');
    });
  });
});
