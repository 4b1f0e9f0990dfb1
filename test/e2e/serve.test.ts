import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { snapshotModel } from '../../client/model-snapshot.js';
import { exportModel } from '../../serving/export/exporter.js';
import { privateKeyFrom } from '../../serving/export/manifest.js';
import { manifestSource } from '../../serving/export/source.js';
import { versionFileReader } from '../../serving/export/versions.js';
import { loadFormat } from '../../serving/runtime/load.js';
import { inferenceService } from '../../serving/serve/grpc-server.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { logreg } from '../../worker/models/logreg.js';
import { type Running, start, waitFor } from '../helpers/cli.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { parseExposition, promtoolCheck, scrape, total } from '../helpers/prometheus.js';

/**
 * `tessera serve` over exported versions, as a separate process: REST (v2
 * and v1) and gRPC answers equal the exported model's own outputs; under a
 * continuous load of concurrent requests three new versions are exported and
 * picked up and no request fails; a damaged version is refused while the last
 * good one serves on; bad input gets its status and the server answers on;
 * with 32 concurrent clients it forms batches larger than one and every
 * answer equals the unbatched one.
 */
describe('e2e: tessera serve', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-'));
  let cluster: TestCluster;
  let server: Running | undefined;
  let http = '';
  let grpcAddress = '';
  let metricsAddress = '';
  const test = mnistSplit().test;
  const ROWS = 8;
  const x = test.x.subarray(0, ROWS * 784);

  before(async () => {
    cluster = await startCluster({ shards: 2, model: logreg.spec(1), optimizer: { name: 'sgd', learningRate: 0.1 } });
  });
  after(async () => {
    server?.kill('SIGKILL');
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Moves the cluster's weights (a few gradient steps) and exports a new version. */
  async function train(steps: number): Promise<void> {
    const client = await cluster.client({ workerId: `t${Math.random()}` });
    const params = await client.pull();
    for (let i = 0; i < steps; i++) {
      const { gradient } = await logreg.gradient(params, { x: test.x.subarray(i * 64 * 784), y: test.y.subarray(i * 64), count: 64 });
      await client.push(gradient);
    }
  }
  async function exportVersion(): Promise<{ version: number; dir: string }> {
    const s = await snapshotModel(cluster.store);
    const source = manifestSource({ cluster: 'test', membership: 'memory', consistency: 'async', epoch: s.epoch, closedSteps: s.closedSteps, shards: s.shards });
    return exportModel({ spec: logreg.spec(1), dense: s.dense, tables: s.tables, source }, { outDir: dir, formats: ['onnx'] });
  }
  async function expectedOf(versionDir: string, input: Float32Array, rows: number): Promise<number[]> {
    const model = await loadFormat('onnx', versionFileReader(versionDir));
    try {
      return Array.from(await model.run(input, rows));
    } finally {
      await model.close();
    }
  }
  const post = async (path: string, body: unknown) => {
    const r = await fetch(`http://${http}${path}`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  const infer = (rows: number, input: Float32Array) => post('/v2/models/logreg/infer', { inputs: [{ name: 'input', shape: [rows, 784], datatype: 'FP32', data: Array.from(input) }] });

  async function startServer(...flags: string[]): Promise<void> {
    server = start(['serve', '--model-dir', dir, '--name', 'logreg', '--http', '127.0.0.1:0', '--grpc', '127.0.0.1:0', '--poll-ms', '100', '--json', ...flags]);
    let out = '';
    server.child.stdout!.on('data', (d) => (out += d));
    const line = await waitFor('tessera serve to listen', () => out.includes('\n') && out.split('\n')[0], 30_000);
    const info = JSON.parse(line) as { http: string; grpc: string; metrics: string | null };
    http = info.http;
    grpcAddress = info.grpc;
    metricsAddress = info.metrics ?? '';
  }

  it('answers over REST v2, REST v1 and gRPC with the exported model’s own outputs', async () => {
    await train(5);
    const v1 = await exportVersion();
    await startServer('--metrics', '127.0.0.1:0');
    const want = await expectedOf(v1.dir, x, ROWS);
    const v2 = await infer(ROWS, x);
    expect(v2.status).to.equal(200);
    const out = (v2.body['outputs'] as { name: string; shape: number[]; data: number[] }[])[0]!;
    expect([out.name, out.shape]).to.deep.equal(['probabilities', [ROWS, 10]]);
    expect(out.data.map(Math.fround)).to.deep.equal(want);
    const predict = await post('/v1/models/logreg:predict', { instances: Array.from({ length: ROWS }, (_, r) => Array.from(x.subarray(r * 784, (r + 1) * 784))) });
    expect(predict.status).to.equal(200);
    expect((predict.body['predictions'] as number[][]).flat().map(Math.fround)).to.deep.equal(want);

    const client = new (inferenceService())(grpcAddress, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
    try {
      const raw = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
      const res = await new Promise<{ rawOutputContents: Buffer[]; modelVersion: string }>((resolve, reject) =>
        client['modelInfer']!({ modelName: 'logreg', inputs: [{ name: 'input', datatype: 'FP32', shape: [ROWS, 784] }], rawInputContents: [raw] }, (err: Error | null, r: never) => (err ? reject(err) : resolve(r))),
      );
      const b = res.rawOutputContents[0]!;
      expect(Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)))).to.deep.equal(want);
      expect(res.modelVersion).to.equal(String(v1.version));
      const bad = await new Promise<grpc.ServiceError>((resolve) =>
        client['modelInfer']!({ modelName: 'logreg', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 700], contents: { fp32Contents: new Array(700).fill(0) } }] }, (err: grpc.ServiceError) => resolve(err)),
      );
      expect(bad.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(bad.details).to.match(/784/);
    } finally {
      client.close();
    }
  });

  it('gives bad input its status and keeps serving', async () => {
    const cases: [string, unknown, number][] = [
      ['/v2/models/logreg/infer', { inputs: [{ name: 'input', shape: [1, 783], datatype: 'FP32', data: new Array(783).fill(0) }] }, 400],
      ['/v2/models/logreg/infer', { inputs: [{ name: 'input', shape: [1, 784], datatype: 'INT64', data: new Array(784).fill(0) }] }, 400],
      ['/v2/models/logreg/infer', '{"inputs": [', 400],
      ['/v2/models/nosuch/infer', { inputs: [] }, 404],
      ['/v2/models/logreg/versions/99/infer', { inputs: [{ name: 'input', shape: [1, 784], datatype: 'FP32', data: new Array(784).fill(0) }] }, 404],
      ['/v2/models/logreg/infer', { inputs: [{ name: 'input', shape: [2000, 784], datatype: 'FP32', data: [] }] }, 413],
      ['/v1/models/logreg:predict', { instances: [[1, 2, 3]] }, 400],
    ];
    for (const [path, body, status] of cases) {
      const r = await post(path, body);
      expect(r.status, `${path} ${String(JSON.stringify(body)).slice(0, 60)}`).to.equal(status);
      expect(r.body['error'], 'a message').to.be.a('string').and.not.equal('');
    }
    // A body over the cap is answered 413 as soon as its length is known, before the rest is sent.
    const oversized = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const [host, port] = http.split(':');
      const req = request({ host, port: Number(port), method: 'POST', path: '/v2/models/logreg/infer', headers: { 'content-type': 'application/json', 'content-length': String(9 << 20) } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, body });
        });
      });
      req.on('error', (e: NodeJS.ErrnoException) => (['EPIPE', 'ECONNRESET'].includes(e.code ?? '') ? undefined : reject(e)));
      req.write('x'.repeat(1024));
    });
    expect(oversized.status).to.equal(413);
    expect(oversized.body).to.match(/error/);
    expect((await infer(1, x.subarray(0, 784))).status).to.equal(200);

    // Its Prometheus metrics (--metrics): what promtool accepts, counting what was asked of it so far.
    const scraped = await scrape(metricsAddress);
    expect(scraped.status).to.equal(200);
    await promtoolCheck(scraped.body);
    const samples = parseExposition(scraped.body);
    expect(total(samples, 'tessera_serve_requests_total', { protocol: 'grpc' }), 'the two gRPC requests of the test before').to.equal(2);
    expect(total(samples, 'tessera_serve_errors_total', { protocol: 'grpc' }), 'one of them refused').to.equal(1);
    expect(total(samples, 'tessera_serve_errors_total', { protocol: 'http' }), 'the bad REST requests above').to.be.at.least(cases.length);
    expect(total(samples, 'tessera_serve_requests_total', { protocol: 'http' })).to.be.at.least(cases.length + 3);
    expect(total(samples, 'tessera_serve_batch_rows_total'), 'rows run').to.be.at.least(ROWS * 2 + 1);
    expect(total(samples, 'tessera_serve_model_version')).to.be.greaterThan(0);
  });

  it('picks up three new versions under continuous concurrent load without failing a request; refuses a damaged one', async () => {
    const seen = new Set<string>();
    const failures: string[] = [];
    let stop = false;
    let answered = 0;
    const load = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const r = await infer(1, x.subarray(0, 784)).catch((e: Error) => ({ status: 0, body: { error: e.message } as Record<string, unknown> }));
        if (r.status !== 200) failures.push(`${r.status} ${String(r.body['error'])}`);
        else {
          seen.add(r.body['model_version'] as string);
          answered++;
        }
      }
    });
    const versions: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        await train(3);
        const v = await exportVersion();
        versions.push(v.version);
        await waitFor(`version ${v.version} served`, () => seen.has(String(v.version)), 20_000, 50);
      }
      // A damaged copy of the newest version: refused, the newest good one serves on.
      const last = join(dir, 'logreg', String(versions.at(-1)));
      const damaged = join(dir, 'logreg', String(versions.at(-1)! + 1));
      cpSync(last, damaged, { recursive: true });
      const onnx = readFileSync(join(damaged, 'model.onnx'));
      onnx[onnx.length - 10] = onnx[onnx.length - 10]! ^ 0xff;
      writeFileSync(join(damaged, 'model.onnx'), onnx);
      const status = await waitFor('the damaged version refused', async () => {
        const r = await fetch(`http://${http}/v1/models/logreg`);
        const s = (await r.json()) as { model_version_status: { version: string; state: string; status: { error_message: string } }[] };
        return s.model_version_status.find((v) => v.version === String(versions.at(-1)! + 1) && v.state === 'END') ? s : undefined;
      }, 20_000, 100);
      expect(JSON.stringify(status)).to.match(/model\.onnx has changed/);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      stop = true;
      await Promise.all(load);
    }
    expect(failures, 'requests that failed').to.deep.equal([]);
    expect(answered).to.be.greaterThan(50);
    for (const v of versions) expect(seen.has(String(v)), `version ${v} answered`).to.equal(true);
    const latest = await infer(1, x.subarray(0, 784));
    expect(latest.body['model_version']).to.equal(String(versions.at(-1)));
  });

  it('with 32 concurrent clients forms batches larger than one, each answer equal to the unbatched one', async () => {
    const newest = join(dir, 'logreg', String((await exportVersion()).version));
    const want = await expectedOf(newest, test.x.subarray(0, 32 * 784), 32);
    await waitFor('the newest version served', async () => (await infer(1, x.subarray(0, 784))).body['model_version'] === newest.split('/').pop(), 20_000, 50);
    const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => infer(1, test.x.subarray(i * 784, (i + 1) * 784))));
    answers.forEach((a, i) => expect((a.body['outputs'] as { data: number[] }[])[0]!.data.map(Math.fround), `client ${i}`).to.deep.equal(want.slice(i * 10, (i + 1) * 10)));
    const stats = (await (await fetch(`http://${http}/v2/models/logreg/stats`)).json()) as { batching: { largestBatch: number; batches: number; requests: number } };
    expect(stats.batching.largestBatch, 'largest batch formed').to.be.greaterThan(1);
    expect(stats.batching.batches).to.be.below(stats.batching.requests);
  });

  it('with --public-key refuses unsigned versions and serves one signed by that key', async function () {
    if (spawnSync('openssl', ['version']).status !== 0) this.skip();
    server?.kill('SIGKILL');
    const key = join(dir, 'key.pem');
    const pub = join(dir, 'key.pub');
    expect(spawnSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', key]).status).to.equal(0);
    expect(spawnSync('openssl', ['pkey', '-in', key, '-pubout', '-out', pub]).status).to.equal(0);
    await startServer('--public-key', pub);
    expect((await fetch(`http://${http}/v2/health/ready`)).status, 'the newest version is unsigned: not ready').to.equal(503);
    const s = (await (await fetch(`http://${http}/v1/models/logreg`)).json()) as object;
    expect(JSON.stringify(s)).to.match(/not signed/);
    const snap = await snapshotModel(cluster.store);
    const source = manifestSource({ cluster: 'test', membership: 'memory', consistency: 'async', epoch: snap.epoch, closedSteps: snap.closedSteps, shards: snap.shards });
    const signed = await exportModel({ spec: logreg.spec(1), dense: snap.dense, tables: snap.tables, source }, { outDir: dir, formats: ['onnx'], signKey: privateKeyFrom(readFileSync(key), key) });
    await waitFor('the signed version served', async () => (await fetch(`http://${http}/v2/health/ready`)).status === 200, 20_000, 100);
    expect((await infer(1, x.subarray(0, 784))).body['model_version']).to.equal(String(signed.version));
  });
});
