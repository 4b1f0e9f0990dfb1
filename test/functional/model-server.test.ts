import * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import type { LoadedModel } from '../../serving/runtime/runtime.js';
import { inferenceService } from '../../serving/serve/grpc-server.js';
import { ModelRepository } from '../../serving/serve/model-repository.js';
import { startModelServer, type ModelServer, type ModelServerOptions } from '../../serving/serve/model-server.js';

/**
 * `tessera serve`'s server, for real on loopback, with an in-memory model:
 * every REST route (Open Inference Protocol v2 and TensorFlow Serving v1) and
 * the gRPC service answer, every bad input gets its status and the server
 * keeps answering, and concurrent requests are batched without changing
 * any answer.
 */

const IN = 4;
const OUT = 3;
const MAX_ROWS = 8;
const MAX_BODY = 64 << 10;

/** Each output row is a fixed function of its input row, so batched and unbatched answers must be equal. */
function expected(input: ArrayLike<number>, rows: number): number[] {
  const out = new Float32Array(rows * OUT);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < IN; i++) s += input[r * IN + i]! * (i + 1);
    for (let j = 0; j < OUT; j++) out[r * OUT + j] = s * (j + 1) + j / 8;
  }
  return Array.from(out);
}

/** `gate`, when given, holds every run until it resolves (to keep requests in flight). */
function fakeModel(gate?: Promise<void>): LoadedModel & { runs: number[]; closed: boolean } {
  const m = {
    format: 'onnx' as const,
    input: { name: 'features', datatype: 'FP32' as const, width: IN },
    output: { name: 'scores', datatype: 'FP32' as const, width: OUT },
    runs: [] as number[],
    closed: false,
    async run(input: Float32Array | BigInt64Array, rows: number) {
      if (m.closed) throw new Error('ran after close');
      m.runs.push(rows);
      await (gate ?? new Promise((r) => setTimeout(r, 1)));
      return Float32Array.from(expected(input as Float32Array, rows));
    },
    async close() {
      m.closed = true;
    },
  };
  return m;
}

/** A server on loopback with the fake model as `version`, or with no version loaded (null). */
async function start(over: Partial<ModelServerOptions> = {}, version: number | null = 3): Promise<ModelServer> {
  const repository = new ModelRepository('ctr');
  if (version !== null) await repository.swap({ name: 'ctr', version, model: fakeModel() });
  return startModelServer({ http: '127.0.0.1:0', grpc: '127.0.0.1:0', maxRows: MAX_ROWS, maxBodyBytes: MAX_BODY, source: { repository }, ...over });
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
}

const agent = new http.Agent({ keepAlive: true });

function request(server: ModelServer, method: string, path: string, body?: unknown, opts: { agent?: http.Agent; raw?: string } = {}): Promise<Answer> {
  const text = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const [host, port] = server.httpAddress!.split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: Number(port), method, path, agent: opts.agent ?? agent, headers: text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(raw) as Record<string, unknown> });
        } catch {
          reject(new Error(`${method} ${path}: not JSON: ${raw}`));
        }
      });
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** Sends a body larger than the cap; resolves with the status as soon as the server answers (which it must, mid-upload). */
function oversized(server: ModelServer, total: number, chunked: boolean): Promise<{ status: number; body: string; connection?: string }> {
  const [host, port] = server.httpAddress!.split(':');
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = chunked ? {} : { 'content-length': total };
    const req = http.request({ host, port: Number(port), method: 'POST', path: '/v2/models/ctr/infer', headers, agent: false });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
      res.on('error', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
    });
    // The server may cut the connection while we still write: expected once it has answered.
    req.on('error', (err) => (answered ? undefined : reject(err)));
    const chunk = Buffer.alloc(16 << 10, 0x20);
    let sent = 0;
    const pump = () => {
      while (!answered && sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (!answered) req.end();
    };
    pump();
  });
}

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void;
function call(client: grpc.Client, method: string, req: object): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => (client as unknown as Record<string, Unary>)[method]!(req, (err, res) => (err ? reject(err) : resolve(res))));
}
async function callError(client: grpc.Client, method: string, req: object): Promise<grpc.ServiceError> {
  const err = await call(client, method, req).then(
    () => null,
    (e: grpc.ServiceError) => e,
  );
  expect(err, `${method} should fail`).to.not.equal(null);
  return err!;
}

function rowsOf(rows: number, seed: number): number[] {
  return Array.from({ length: rows * IN }, (_, i) => ((seed * 13 + i * 5) % 11) / 4 - 1);
}
const v2Body = (data: number[], rows: number, over: object = {}) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, IN], data, ...over }] });
const le = (values: number[]) => Buffer.from(Float32Array.from(values).buffer);
const fromLe = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));

describe('functional: the model server (tessera serve)', function () {
  this.timeout(30_000);
  const started: ModelServer[] = [];
  const clients: grpc.Client[] = [];
  let server: ModelServer;

  const grpcClient = (s: ModelServer) => {
    const Client = inferenceService();
    const c = new Client(s.grpcAddress!, grpc.credentials.createInsecure());
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await start();
    started.push(server);
  });
  after(async () => {
    for (const c of clients) c.close();
    agent.destroy();
    await Promise.all(started.map((s) => s.close()));
    await Promise.all(started.map((s) => s.repository.close()));
  });

  describe('REST: Open Inference Protocol (v2)', () => {
    it('answers health, server metadata, model metadata and readiness', async () => {
      const live = await request(server, 'GET', '/v2/health/live');
      expect(live.status).to.equal(200);
      expect(live.headers.connection, 'keep-alive').to.equal('keep-alive');
      expect((await request(server, 'GET', '/v2/health/ready')).status).to.equal(200);
      const meta = await request(server, 'GET', '/v2');
      expect(meta.status).to.equal(200);
      expect(meta.body).to.include({ name: 'tessera' });
      expect(meta.body.extensions).to.deep.equal([]);
      const model = { name: 'ctr', versions: ['3'], platform: 'onnx', inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, IN] }], outputs: [{ name: 'scores', datatype: 'FP32', shape: [-1, OUT] }] };
      for (const path of ['/v2/models/ctr', '/v2/models/ctr/versions/3']) {
        expect(await request(server, 'GET', path)).to.deep.include({ status: 200, body: model });
        expect((await request(server, 'GET', `${path}/ready`)).status).to.equal(200);
      }
    });

    it('infers, flat or nested, with or without a version, echoing the id', async () => {
      const x = rowsOf(3, 1);
      const res = await request(server, 'POST', '/v2/models/ctr/infer', { id: 'req-1', ...v2Body(x, 3) });
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ model_name: 'ctr', model_version: '3', id: 'req-1', outputs: [{ name: 'scores', datatype: 'FP32', shape: [3, OUT], data: expected(x, 3) }] });
      const nested = [x.slice(0, 4), x.slice(4, 8), x.slice(8, 12)];
      const again = await request(server, 'POST', '/v2/models/ctr/versions/3/infer', v2Body(nested as unknown as number[], 3));
      expect(again.status).to.equal(200);
      expect((again.body.outputs as { data: number[] }[])[0]!.data).to.deep.equal(expected(x, 3));
      const one = await request(server, 'POST', '/v2/models/ctr/infer', v2Body(x.slice(0, 4), 1, { shape: [IN] }));
      expect((one.body.outputs as { shape: number[] }[])[0]!.shape).to.deep.equal([1, OUT]);
    });

    it('gives every bad request its status and an error that says what was expected, and keeps answering', async () => {
      const x = rowsOf(2, 2);
      const cases: [string, string, unknown, number, RegExp, string?][] = [
        ['POST', '/v2/models/ctr/infer', v2Body(x, 2, { shape: [2, 5] }), 400, /shape \[2, 5\]; this model takes \[n, 4\]/],
        ['POST', '/v2/models/ctr/infer', v2Body(x, 2, { datatype: 'INT64' }), 400, /datatype "INT64"; this model takes FP32/],
        ['POST', '/v2/models/ctr/infer', v2Body(x, 2, { name: 'x' }), 400, /this model.s one input is named "features"/],
        ['POST', '/v2/models/ctr/infer', v2Body(x.slice(1), 2), 400, /has 7 values; shape \[2, 4\] needs 8/],
        ['POST', '/v2/models/ctr/infer', v2Body(rowsOf(MAX_ROWS + 1, 3), MAX_ROWS + 1), 413, /at most 8 per request \(its maxRows option\)/],
        ['POST', '/v2/models/ctr/infer', undefined, 400, /not valid JSON/, '{"inputs": ['],
        ['POST', '/v2/models/ctr/infer', undefined, 400, /not valid JSON/, ''],
        ['POST', '/v2/models/other/infer', v2Body(x, 2), 404, /model "other" is not served here; this server serves "ctr"/],
        ['POST', '/v2/models/ctr/versions/2/infer', v2Body(x, 2), 404, /version "2" of model "ctr" is not served; the served version is 3/],
        ['GET', '/v2/models/ctr/versions/4', undefined, 404, /the served version is 3/],
        ['GET', '/v2/models/nope/ready', undefined, 404, /model "nope" is not served/],
        ['GET', '/v2/nothing/here', undefined, 404, /no route \/v2\/nothing\/here/],
        ['GET', '/v2/models/ctr/infer', undefined, 405, /GET \/v2\/models\/ctr\/infer is not allowed; use POST/],
        ['POST', '/v2/health/live', {}, 405, /use GET/],
        ['GET', '/v2/models/%E0%A4%A', undefined, 400, /percent-encoded/],
      ];
      for (const [method, path, body, status, message, raw] of cases) {
        const res = await request(server, method, path, body, raw === undefined ? {} : { raw });
        expect(res.status, `${method} ${path} ${raw ?? JSON.stringify(body)?.slice(0, 60)}`).to.equal(status);
        expect(res.body.error).to.match(message);
        if (status === 405) expect(res.headers.allow).to.match(/GET|POST/);
      }
      expect((await request(server, 'GET', '/v2/health/live')).status).to.equal(200);
      expect((await request(server, 'POST', '/v2/models/ctr/infer', v2Body(x, 2))).status).to.equal(200);
    });

    it('answers 413 to a body over maxBodyBytes while it is still being sent, declared or chunked, and keeps answering', async () => {
      for (const chunked of [false, true]) {
        const res = await oversized(server, 4 * MAX_BODY, chunked);
        expect(res.status, chunked ? 'chunked' : 'with Content-Length').to.equal(413);
        expect(JSON.parse(res.body).error).to.match(new RegExp(`at most ${MAX_BODY} bytes \\(its maxBodyBytes option\\)`));
        expect(res.connection).to.equal('close');
      }
      expect((await request(server, 'GET', '/v2/health/live')).status).to.equal(200);
    });

    it('answers 503 while no version is loaded', async () => {
      const empty = await start({}, null);
      started.push(empty);
      expect((await request(empty, 'GET', '/v2/health/live')).status).to.equal(200);
      const ready = await request(empty, 'GET', '/v2/health/ready');
      expect(ready.status).to.equal(503);
      expect(ready.body.error).to.match(/no version loaded/);
      expect((await request(empty, 'GET', '/v2/models/ctr/ready')).status).to.equal(503);
      expect((await request(empty, 'GET', '/v2/models/ctr')).status).to.equal(503);
      expect((await request(empty, 'POST', '/v2/models/ctr/infer', v2Body(rowsOf(1, 1), 1))).status).to.equal(503);
      expect((await request(empty, 'POST', '/v1/models/ctr:predict', { instances: [rowsOf(1, 1)] })).status).to.equal(503);
      expect((await request(empty, 'GET', '/v1/models/ctr')).status).to.equal(503);
    });
  });

  describe('REST: TensorFlow Serving (v1)', () => {
    it('answers the version status and predicts in row and columnar form', async () => {
      const available = [{ version: '3', state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }];
      expect(await request(server, 'GET', '/v1/models/ctr')).to.deep.include({ status: 200, body: { model_version_status: available } });
      expect(await request(server, 'GET', '/v1/models/ctr/versions/3')).to.deep.include({ status: 200, body: { model_version_status: available } });
      const x = rowsOf(2, 4);
      const want = expected(x, 2);
      const rows = [want.slice(0, OUT), want.slice(OUT)];
      const instances = [x.slice(0, IN), x.slice(IN)];
      expect(await request(server, 'POST', '/v1/models/ctr:predict', { instances })).to.deep.include({ status: 200, body: { predictions: rows } });
      expect(await request(server, 'POST', '/v1/models/ctr/versions/3:predict', { instances: instances.map((i) => ({ features: i })) })).to.deep.include({ status: 200, body: { predictions: rows } });
      expect(await request(server, 'POST', '/v1/models/ctr:predict', { inputs: { features: instances } })).to.deep.include({ status: 200, body: { outputs: rows } });
    });

    it('refuses bad requests with their statuses', async () => {
      const cases: [string, string, unknown, number, RegExp][] = [
        ['POST', '/v1/models/ctr:predict', { instances: [[1, 2, 3]] }, 400, /instances\[0\] must be a list of 4 values/],
        ['POST', '/v1/models/ctr:predict', { rows: [] }, 400, /exactly one of "instances"/],
        ['POST', '/v1/models/ctr:predict', { instances: Array(MAX_ROWS + 1).fill(rowsOf(1, 1)) }, 413, /its maxRows option/],
        ['POST', '/v1/models/other:predict', { instances: [rowsOf(1, 1)] }, 404, /serves "ctr"/],
        ['POST', '/v1/models/ctr/versions/9:predict', { instances: [rowsOf(1, 1)] }, 404, /the served version is 3/],
        ['GET', '/v1/models/ctr/versions/9', undefined, 404, /the served version is 3/],
        ['GET', '/v1/models/ctr:predict', undefined, 405, /use POST/],
        ['POST', '/v1/models/ctr', {}, 405, /use GET/],
      ];
      for (const [method, path, body, status, message] of cases) {
        const res = await request(server, method, path, body);
        expect(res.status, `${method} ${path}`).to.equal(status);
        expect(res.body.error).to.match(message);
      }
      expect((await request(server, 'POST', '/v1/models/ctr:predict', { instances: [rowsOf(1, 1)] })).status).to.equal(200);
    });
  });

  describe('gRPC: inference.GRPCInferenceService', () => {
    it('answers ServerLive, ServerReady, ModelReady, ServerMetadata and ModelMetadata', async () => {
      const c = grpcClient(server);
      expect(await call(c, 'ServerLive', {})).to.deep.equal({ live: true });
      expect(await call(c, 'ServerReady', {})).to.deep.equal({ ready: true });
      expect(await call(c, 'ModelReady', { name: 'ctr' })).to.deep.equal({ ready: true });
      expect(await call(c, 'ModelReady', { name: 'ctr', version: '3' })).to.deep.equal({ ready: true });
      const meta = await call(c, 'ServerMetadata', {});
      expect(meta).to.include({ name: 'tessera' });
      expect(meta.extensions).to.deep.equal([]);
      expect(await call(c, 'ModelMetadata', { name: 'ctr' })).to.deep.equal({
        name: 'ctr',
        versions: ['3'],
        platform: 'onnx',
        inputs: [{ name: 'features', datatype: 'FP32', shape: ['-1', String(IN)] }],
        outputs: [{ name: 'scores', datatype: 'FP32', shape: ['-1', String(OUT)] }],
      });
    });

    it('infers from contents and from raw_input_contents, answering raw_output_contents', async () => {
      const c = grpcClient(server);
      const x = rowsOf(3, 5);
      for (const req of [
        { modelName: 'ctr', id: 'g1', inputs: [{ name: 'features', datatype: 'FP32', shape: [3, IN], contents: { fp32Contents: x } }] },
        { modelName: 'ctr', modelVersion: '3', id: 'g1', inputs: [{ name: 'features', datatype: 'FP32', shape: [3, IN] }], rawInputContents: [le(x)] },
      ]) {
        const res = (await call(c, 'ModelInfer', req)) as { modelName: string; modelVersion: string; id: string; outputs: object[]; rawOutputContents: Buffer[] };
        expect(res).to.deep.include({ modelName: 'ctr', modelVersion: '3', id: 'g1' });
        expect(res.outputs).to.deep.equal([{ name: 'scores', datatype: 'FP32', shape: ['3', String(OUT)], parameters: {}, contents: null }]);
        expect(fromLe(res.rawOutputContents[0]!)).to.deep.equal(expected(x, 3));
      }
    });

    it('refuses bad calls with INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED and UNAVAILABLE, and keeps answering', async () => {
      const c = grpcClient(server);
      const x = rowsOf(2, 6);
      const infer = (over: object, tensor: object = {}) => ({ modelName: 'ctr', inputs: [{ name: 'features', datatype: 'FP32', shape: [2, IN], contents: { fp32Contents: x }, ...tensor }], ...over });
      const cases: [string, object, grpc.status, RegExp][] = [
        ['ModelInfer', infer({}, { shape: [2, 3] }), grpc.status.INVALID_ARGUMENT, /shape \[2, 3\]; this model takes \[n, 4\]/],
        ['ModelInfer', infer({}, { datatype: 'FP64' }), grpc.status.INVALID_ARGUMENT, /this model takes FP32/],
        ['ModelInfer', infer({ rawInputContents: [le(x.slice(1))] }, { contents: null }), grpc.status.INVALID_ARGUMENT, /raw_input_contents\[0\] has 28 bytes; 2 × 4 FP32 values need 32/],
        ['ModelInfer', infer({}, { shape: [MAX_ROWS + 1, IN] }), grpc.status.RESOURCE_EXHAUSTED, /its maxRows option/],
        ['ModelInfer', infer({ modelName: 'other' }), grpc.status.NOT_FOUND, /serves "ctr"/],
        ['ModelInfer', infer({ modelVersion: '7' }), grpc.status.NOT_FOUND, /the served version is 3/],
        ['ModelMetadata', { name: 'other' }, grpc.status.NOT_FOUND, /serves "ctr"/],
        ['ModelReady', { name: 'ctr', version: '2' }, grpc.status.NOT_FOUND, /the served version is 3/],
        // Over maxBodyBytes: grpc-js refuses the message before it is decoded.
        ['ModelInfer', infer({ rawInputContents: [Buffer.alloc(MAX_BODY + 1)] }, { contents: null }), grpc.status.RESOURCE_EXHAUSTED, /larger than max/i],
      ];
      for (const [method, req, code, message] of cases) {
        const err = await callError(c, method, req);
        expect(err.code, `${method} ${err.details}`).to.equal(code);
        expect(err.details).to.match(message);
      }
      const empty = await start({ http: undefined }, null);
      started.push(empty);
      const e = grpcClient(empty);
      expect(await call(e, 'ServerReady', {})).to.deep.equal({ ready: false });
      expect(await call(e, 'ModelReady', { name: 'ctr' })).to.deep.equal({ ready: false });
      expect((await callError(e, 'ModelInfer', infer({}))).code).to.equal(grpc.status.UNAVAILABLE);
      expect((await callError(e, 'ModelMetadata', { name: 'ctr' })).code).to.equal(grpc.status.UNAVAILABLE);

      const ok = (await call(c, 'ModelInfer', infer({}))) as { rawOutputContents: Buffer[] };
      expect(fromLe(ok.rawOutputContents[0]!)).to.deep.equal(expected(x, 2));
    });
  });

  describe('batching', () => {
    it('merges 32 concurrent clients into batches, and every answer equals the unbatched one', async () => {
      const batched = await start({ maxBatch: 32, maxDelayMs: 50 });
      const alone = await start({ maxBatch: 1 });
      started.push(batched, alone);
      const CLIENTS = 32;
      const inputs = Array.from({ length: CLIENTS }, (_, i) => rowsOf(1 + (i % 3), 100 + i));
      const agents = inputs.map(() => new http.Agent({ keepAlive: false }));
      const grpcClients = inputs.map(() => grpcClient(batched));
      const viaHttp = (s: ModelServer, x: number[], i: number) =>
        request(s, 'POST', '/v2/models/ctr/infer', v2Body(x, x.length / IN), { agent: agents[i]! }).then((r) => (r.body.outputs as { data: number[] }[])[0]!.data);
      const viaGrpc = (x: number[], i: number) =>
        call(grpcClients[i]!, 'ModelInfer', { modelName: 'ctr', inputs: [{ name: 'features', datatype: 'FP32', shape: [x.length / IN, IN] }], rawInputContents: [le(x)] }).then((r) =>
          fromLe((r.rawOutputContents as Buffer[])[0]!),
        );

      const [overHttp, overGrpc] = await Promise.all([Promise.all(inputs.map((x, i) => viaHttp(batched, x, i))), Promise.all(inputs.map((x, i) => viaGrpc(x, i)))]);
      const unbatched = await Promise.all(inputs.map((x, i) => viaHttp(alone, x, i)));
      for (const a of agents) a.destroy();

      for (let i = 0; i < CLIENTS; i++) {
        expect(overHttp[i], `client ${i} over HTTP`).to.deep.equal(unbatched[i]);
        expect(overGrpc[i], `client ${i} over gRPC`).to.deep.equal(unbatched[i]);
        expect(unbatched[i]).to.deep.equal(expected(inputs[i]!, inputs[i]!.length / IN));
      }
      const stats = batched.stats();
      expect(stats.batching.requests).to.equal(2 * CLIENTS);
      expect(stats.batching.rows).to.equal(2 * inputs.reduce((n, x) => n + x.length / IN, 0));
      expect(stats.batching.largestBatch).to.be.greaterThan(1).and.at.most(32);
      expect(stats.batching.batches).to.be.lessThan(2 * CLIENTS);
      expect(Object.values(stats.batching.histogram).reduce((a, b) => a + b, 0)).to.equal(stats.batching.batches);
      expect(stats.http).to.deep.equal({ requests: CLIENTS, errors: 0 });
      expect(stats.grpc).to.deep.equal({ requests: CLIENTS, errors: 0 });
      expect(stats.version).to.equal(3);
      expect(alone.stats().batching.largestBatch).to.equal(3);
    });

    it('swaps versions under load without failing a request, and closes the old one after its requests', async () => {
      const repository = new ModelRepository('ctr');
      let open!: () => void;
      const old = fakeModel(new Promise<void>((r) => (open = r)));
      await repository.swap({ name: 'ctr', version: 3, model: old });
      const s = await startModelServer({ http: '127.0.0.1:0', maxBatch: 8, maxDelayMs: 1, source: { repository } });
      started.push(s);
      const x = rowsOf(2, 9);
      const infer = () => request(s, 'POST', '/v2/models/ctr/infer', v2Body(x, 2));
      const early = Array.from({ length: 24 }, infer);
      // Wait (bounded) until version 3 is running some of them: those hold it.
      for (let i = 0; i < 500 && old.runs.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(old.runs.length).to.be.greaterThan(0);
      const swapped = repository.swap({ name: 'ctr', version: 4, model: fakeModel() });
      const late = await Promise.all(Array.from({ length: 8 }, infer));
      expect(old.closed, 'version 3 stays open while its requests run').to.equal(false);
      open();
      const answers = [...(await Promise.all(early)), ...late];
      await swapped;
      expect(old.closed).to.equal(true);
      for (const a of answers) {
        expect(a.status).to.equal(200);
        expect((a.body.outputs as { data: number[] }[])[0]!.data).to.deep.equal(expected(x, 2));
      }
      const versions = answers.map((a) => a.body.model_version);
      expect(versions.slice(24).every((v) => v === '4')).to.equal(true);
      expect(versions).to.include('3');
      expect((await request(s, 'GET', '/v1/models/ctr')).body.model_version_status).to.deep.equal([{ version: '4', state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }]);
    });
  });

  it('refuses bad options before listening', async () => {
    const repository = new ModelRepository('ctr');
    const bad: [Partial<ModelServerOptions>, RegExp][] = [
      [{ http: undefined, grpc: undefined }, /give an http or a grpc address/],
      [{ http: 'nowhere' }, /not HOST:PORT/],
      [{ maxBatch: 1.5 }, /maxBatch must be an integer/],
      [{ maxDelayMs: -1 }, /maxDelayMs must be a number ≥ 0/],
      [{ maxRows: 0 }, /maxRows must be an integer ≥ 1/],
      [{ maxBodyBytes: 0 }, /maxBodyBytes must be an integer ≥ 1/],
      [{ name: 'a/b' }, /model name "a\/b" must be letters/],
    ];
    for (const [over, message] of bad) {
      let err: Error | undefined;
      await startModelServer({ http: '127.0.0.1:0', source: { repository }, ...over }).then(
        (s) => s.close(),
        (e: Error) => (err = e),
      );
      expect(err?.message, JSON.stringify(over)).to.match(message);
    }
  });
});
