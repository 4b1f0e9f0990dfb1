import type { EventEmitter } from 'node:events';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { writeOnnx } from '../serving/formats/onnx-writer.js';
import { type DenseLayer, type ModelGraph } from '../serving/model/model-graph.js';
import { loadOnnx } from '../serving/runtime/onnx-runtime.js';
import { type LoadedModel } from '../serving/runtime/runtime.js';
import { inferenceService } from '../serving/serve/grpc-server.js';
import { seededRandom } from '../worker/data/random.js';
import { type ModelServerStats } from '../serving/serve/model-server.js';
import { Child } from './child-rpc.js';
import { type Figure, formatTable, median, rateFigure, roundFigure } from './figures.js';

/**
 * `npm run bench:serve` (a table) and `… -- --json` (one JSON object): what
 * `tessera serve` answers for single-example requests to an MNIST-MLP-shaped
 * model (784-256-10, relu then softmax, random weights, ONNX on onnxruntime),
 * at 1, 16 and 64 requests in flight, with dynamic batching on (maxBatch 32,
 * maxDelayMs 2) and off (maxBatch 1), over REST (KServe v2 infer, driven by
 * autocannon: one keep-alive connection per request in flight, no
 * pipelining) and over gRPC (ModelInfer with raw_input_contents, a closed
 * loop of that many outstanding calls over up to 4 channels).
 *
 * The server runs in a child process (bench/children/serve-child.ts), the
 * load in this one, so they never share an event loop. Each request's
 * latency is its own (autocannon's per-response time, or the gRPC call's),
 * not a histogram bucket. Every figure is the median of its repetitions,
 * which alternate with those of the other figures.
 *
 * Same-run limits, measured in this process between the rounds (the server
 * idle): the loaded model called back to back, one row per run (runs/s: the
 * most single-example requests/s one core can serve without batching; the
 * limit of the unbatched figures) and 32 rows per run (rows/s: the limit of
 * the batched ones). Latencies are held against one in-process 1-row run.
 *
 * Each req/s figure's detail: the server's mean batch size over the run (from
 * its batching counters), its CPU time per request, and the CPU cores the
 * server and the load generator used: on a small host the load generator can
 * be what bounds a figure, and the two share the cores.
 *
 * Flags: --json · --quick (one round of 2 s runs instead of two of 4 s).
 */

const MODEL_NAME = 'mnist';
const FEATURES = 784;
const HIDDEN = 256;
const CLASSES = 10;
const BATCH_ROWS = 32;
const CONCURRENCIES = [1, 16, 64] as const;
const PROTOCOLS = ['rest', 'grpc'] as const;
const MAX_GRPC_CHANNELS = 4;
const SERVERS = [
  { key: 'batch', maxBatch: BATCH_ROWS, maxDelayMs: 2 },
  { key: 'nobatch', maxBatch: 1, maxDelayMs: 0 },
] as const;
type Protocol = (typeof PROTOCOLS)[number];
type ServerKey = (typeof SERVERS)[number]['key'];

interface Args {
  json: boolean;
  quick: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { json: false, quick: false };
  for (const f of argv) {
    if (f === '--json') a.json = true;
    else if (f === '--quick') a.quick = true;
    else throw new Error(`unknown flag ${f}; use --json, --quick`);
  }
  return a;
}

// ---------------------------------------------------------------- the model

/** mnist-mlp's inference graph (784-256-10, relu, softmax) with Glorot-uniform random weights. */
function mlpGraph(seed: number): ModelGraph {
  const rand = seededRandom(seed);
  const dense = (name: string, inputs: number, units: number, activation: DenseLayer['activation']): DenseLayer => {
    const scale = Math.sqrt(6 / (inputs + units));
    return {
      weightName: `${name}/kernel`,
      biasName: `${name}/bias`,
      inputs,
      units,
      weight: Float32Array.from({ length: inputs * units }, () => (rand() * 2 - 1) * scale),
      bias: Float32Array.from({ length: units }, () => (rand() * 2 - 1) * 0.01),
      activation,
    };
  };
  return {
    name: 'mnist-mlp',
    input: { kind: 'features', name: 'input', features: FEATURES },
    layers: [dense('dense1', FEATURES, HIDDEN, 'relu'), dense('dense2', HIDDEN, CLASSES, 'softmax')],
    output: { name: 'probabilities' },
  };
}

/** `rows` examples like MNIST pixels (k/255), exactly representable in the JSON body's decimals. */
function examples(rows: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  return Float32Array.from({ length: rows * FEATURES }, () => (rand() < 0.8 ? 0 : Math.floor(rand() * 256) / 256));
}

// ---------------------------------------------------------------- percentiles

/** Nearest-rank percentile of ascending `sorted`. */
function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

// ---------------------------------------------------------------- in-process limit

interface InProcessSample {
  perSec: number;
  medianMs: number;
}

/** `model.run` of `rows` rows back to back for `ms` (after a short warm-up): runs/s and the median run time. */
async function inProcess(model: LoadedModel, input: Float32Array, rows: number, ms: number): Promise<InProcessSample> {
  for (let i = 0; i < 20; i++) await model.run(input, rows);
  const times: number[] = [];
  const t0 = performance.now();
  const end = t0 + ms;
  let t = t0;
  while (t < end) {
    await model.run(input, rows);
    const after = performance.now();
    times.push(after - t);
    t = after;
  }
  return { perSec: times.length / ((t - t0) / 1000), medianMs: median(times) };
}

// ---------------------------------------------------------------- load generators

/** One measured run: completed requests per second and each request's latency. */
interface LoadSample {
  rps: number;
  /** Ascending, ms. */
  latencies: number[];
  errors: number;
  firstError?: string;
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  '2xx': number;
}
type Autocannon = (opts: Record<string, unknown>, done: (err: Error | null, result: AutocannonResult) => void) => EventEmitter;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

/** autocannon against the v2 infer route: `connections` keep-alive connections, each one request at a time, for `seconds` (or `amount` requests). */
function restRun(address: string, body: string, connections: number, run: { seconds: number } | { amount: number }): Promise<LoadSample> {
  return new Promise((resolve, reject) => {
    const latencies: number[] = [];
    let firstError: string | undefined;
    const instance = autocannon(
      {
        url: `http://${address}/v2/models/${MODEL_NAME}/infer`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        connections,
        pipelining: 1,
        timeout: 10,
        ...('seconds' in run ? { duration: run.seconds } : { amount: run.amount }),
      },
      (err, result) => {
        if (err) return reject(err);
        latencies.sort((a, b) => a - b);
        const errors = result.errors + result.timeouts + result.non2xx + result.resets;
        resolve({ rps: result['2xx'] / result.duration, latencies, errors, ...(errors && firstError ? { firstError } : {}) });
      },
    );
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status === 200) latencies.push(ms);
      else firstError ??= `HTTP ${status}`;
    });
    instance.on('reqError', (e: Error) => (firstError ??= e.message));
  });
}

const MODEL_INFER = '/inference.GRPCInferenceService/ModelInfer';
const identity = (b: Buffer) => b;

/** gRPC channels (separate connections: each its own subchannel pool) to the server. */
function grpcClients(address: string, n: number): grpc.Client[] {
  return Array.from({ length: n }, () => new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
}

function modelInfer(client: grpc.Client, request: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(MODEL_INFER, identity, identity, request, { deadline: Date.now() + 10_000 }, (err, res) => (err || !res ? reject(err ?? new Error('no response')) : resolve(res)));
  });
}

/** A closed loop: `concurrency` calls always outstanding, spread over `clients`, for `ms` (or `amount` calls). */
async function grpcRun(clients: grpc.Client[], request: Buffer, concurrency: number, run: { seconds: number } | { amount: number }): Promise<LoadSample> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let left = 'amount' in run ? run.amount : Infinity;
  const t0 = performance.now();
  const end = 'seconds' in run ? t0 + run.seconds * 1000 : Infinity;
  const loop = async (i: number) => {
    const client = clients[i % clients.length]!;
    while (left-- > 0 && performance.now() < end) {
      const start = performance.now();
      try {
        await modelInfer(client, request);
        latencies.push(performance.now() - start);
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => loop(i)));
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / seconds, latencies, errors, ...(firstError ? { firstError } : {}) };
}

/** One REST request with node:http, for the answer check. */
function postJson(address: string, path: string, body: string): Promise<{ status: number; body: unknown }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method: 'POST', path, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.end(body);
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

// ---------------------------------------------------------------- the run

interface Case {
  protocol: Protocol;
  concurrency: number;
  server: ServerKey;
}

interface CaseSample extends LoadSample {
  meanBatch: number;
  requests: number;
  cpuUsPerRequest: number;
  /** CPU seconds per second of the run: the server's process, and this one (the load generator). */
  serverCores: number;
  clientCores: number;
}

const caseName = (c: Case) => `serve_${c.protocol}_c${c.concurrency}_${c.server}`;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const progress = (msg: string) => process.stderr.write(`bench serve: ${msg}\n`);
  const rounds = args.quick ? 1 : 2;
  const seconds = args.quick ? 2 : 4;
  const limitMs = args.quick ? 700 : 1000;

  const bytes = writeOnnx(mlpGraph(7), 'none').files[0]!.bytes;
  const model = await loadOnnx(bytes);
  const x1 = examples(1, 11);
  const x32 = examples(BATCH_ROWS, 12);
  const expected = await model.run(x1, 1);
  const restBody = JSON.stringify({ inputs: [{ name: 'input', shape: [1, FEATURES], datatype: 'FP32', data: Array.from(x1) }] });
  const Service = inferenceService();
  const grpcRequest = Service.service['ModelInfer']!.requestSerialize({
    modelName: MODEL_NAME,
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, FEATURES] }],
    rawInputContents: [Buffer.from(x1.buffer, x1.byteOffset, x1.byteLength)],
  });

  const figures: Figure[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const checks: Record<string, string> = {};
  const limit1: InProcessSample[] = [];
  const limit32: InProcessSample[] = [];
  const sampleLimits = async () => {
    limit1.push(await inProcess(model, x1, 1, limitMs));
    limit32.push(await inProcess(model, x32, BATCH_ROWS, limitMs));
  };

  progress(`server child; in-process limits; ${rounds} round(s) of ${PROTOCOLS.length * CONCURRENCIES.length * SERVERS.length} runs of ${seconds} s`);
  const child = Child.start('serve', 'serve-child');
  const channels = new Map<string, grpc.Client[]>();
  const samples = new Map<string, CaseSample[]>();
  const failures = new Map<string, string>();
  try {
    const addresses = await child.call<Record<ServerKey, { http: string; grpc: string }>>('start', {
      name: MODEL_NAME,
      onnxBase64: Buffer.from(bytes).toString('base64'),
      configs: SERVERS,
    });

    // Both edges of both servers answer as the model does, in-process.
    for (const s of SERVERS) {
      const rest = await postJson(addresses[s.key].http, `/v2/models/${MODEL_NAME}/infer`, restBody);
      const restOut = (rest.body as { outputs?: { data?: number[] }[] }).outputs?.[0]?.data ?? [];
      checks[`rest_${s.key}`] = rest.status === 200 ? `max |Δ| ${maxAbsDiff(restOut, expected).toExponential(2)}` : `HTTP ${rest.status}: ${JSON.stringify(rest.body)}`;
      const [c] = grpcClients(addresses[s.key].grpc, 1);
      try {
        const res = Service.service['ModelInfer']!.responseDeserialize(await modelInfer(c!, grpcRequest)) as { rawOutputContents: Buffer[] };
        const raw = res.rawOutputContents[0]!;
        const out = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
        checks[`grpc_${s.key}`] = `max |Δ| ${maxAbsDiff(out, expected).toExponential(2)}`;
      } catch (e) {
        checks[`grpc_${s.key}`] = `failed: ${(e as Error).message}`;
      } finally {
        c!.close();
      }
    }
    progress(`answers: ${Object.entries(checks).map(([k, v]) => `${k} ${v}`).join('; ')}`);

    const cases: Case[] = [];
    for (const server of SERVERS.map((s) => s.key)) for (const protocol of PROTOCOLS) for (const concurrency of CONCURRENCIES) cases.push({ protocol, concurrency, server });
    const clientsFor = (c: Case) => {
      const key = `${c.server}/${Math.min(c.concurrency, MAX_GRPC_CHANNELS)}`;
      let got = channels.get(key);
      if (!got) channels.set(key, (got = grpcClients(addresses[c.server].grpc, Math.min(c.concurrency, MAX_GRPC_CHANNELS))));
      return got;
    };
    const load = (c: Case, run: { seconds: number } | { amount: number }) =>
      c.protocol === 'rest' ? restRun(addresses[c.server].http, restBody, c.concurrency, run) : grpcRun(clientsFor(c), grpcRequest, c.concurrency, run);

    await sampleLimits();
    for (let r = 0; r < rounds; r++) {
      for (const c of cases) {
        const name = caseName(c);
        if (failures.has(name)) continue;
        progress(`round ${r + 1}/${rounds}: ${c.protocol}, ${c.concurrency} in flight, batching ${c.server === 'batch' ? 'on' : 'off'}`);
        try {
          await load(c, { amount: Math.max(200, 20 * c.concurrency) }); // warm-up: connections, JIT
          const before = await child.call<Record<ServerKey, ModelServerStats>>('stats');
          const cpuBefore = await child.call<{ ms: number }>('cpu');
          const clientCpu = process.cpuUsage();
          const t0 = performance.now();
          const sample = await load(c, { seconds });
          const wallMs = performance.now() - t0;
          const clientUsed = process.cpuUsage(clientCpu);
          const cpuAfter = await child.call<{ ms: number }>('cpu');
          const after = await child.call<Record<ServerKey, ModelServerStats>>('stats');
          const b0 = before[c.server].batching;
          const b1 = after[c.server].batching;
          const requests = b1.requests - b0.requests;
          const s: CaseSample = {
            ...sample,
            requests,
            meanBatch: (b1.rows - b0.rows) / Math.max(1, b1.batches - b0.batches),
            cpuUsPerRequest: ((cpuAfter.ms - cpuBefore.ms) * 1000) / Math.max(1, requests),
            serverCores: (cpuAfter.ms - cpuBefore.ms) / wallMs,
            clientCores: (clientUsed.user + clientUsed.system) / 1000 / wallMs,
          };
          if (sample.errors) progress(`  ${sample.errors} error(s), first: ${sample.firstError ?? '?'}`);
          if (sample.latencies.length === 0) throw new Error(`no request answered${sample.firstError ? `: ${sample.firstError}` : ''}`);
          (samples.get(name) ?? samples.set(name, []).get(name)!).push(s);
        } catch (e) {
          failures.set(name, (e as Error).message);
        }
      }
      await sampleLimits();
    }
  } finally {
    for (const list of channels.values()) for (const c of list) c.close();
    await child.stop();
    await model.close();
  }

  // In-process limits first, then one group per case.
  const rps1 = median(limit1.map((l) => l.perSec));
  const rows32 = median(limit32.map((l) => l.perSec * BATCH_ROWS));
  const ms1 = median(limit1.map((l) => l.medianMs));
  figures.push(
    rateFigure('serve_inprocess_1row_rps', 'runs/s', limit1.map((l) => l.perSec)),
    rateFigure('serve_inprocess_32rows_rows_per_s', 'rows/s', limit32.map((l) => l.perSec * BATCH_ROWS)),
    rateFigure('serve_inprocess_1row_ms', 'ms', limit1.map((l) => l.medianMs)),
    rateFigure('serve_inprocess_32rows_ms', 'ms', limit32.map((l) => l.medianMs)),
  );
  for (const s of SERVERS) {
    for (const protocol of PROTOCOLS) {
      for (const concurrency of CONCURRENCIES) {
        const c: Case = { protocol, concurrency, server: s.key };
        const name = caseName(c);
        const got = samples.get(name);
        if (!got?.length) {
          skipped.push({ name, reason: failures.get(name) ?? 'not run' });
          continue;
        }
        const batched = s.key === 'batch';
        const errors = got.reduce((n, x) => n + x.errors, 0);
        const rps = rateFigure(`${name}_rps`, 'req/s', got.map((x) => x.rps), {
          limit: batched ? 'serve_inprocess_32rows_rows_per_s' : 'serve_inprocess_1row_rps',
          detail: {
            mean_batch: median(got.map((x) => x.meanBatch)),
            server_cpu_us_per_req: median(got.map((x) => x.cpuUsPerRequest)),
            server_cores: median(got.map((x) => x.serverCores)),
            loadgen_cores: median(got.map((x) => x.clientCores)),
            answered: got.reduce((n, x) => n + x.latencies.length, 0),
            errors,
            ...(errors ? { first_error: got.find((x) => x.firstError)?.firstError ?? '' } : {}),
          },
        });
        rps.ratio = rps.value / (batched ? rows32 : rps1);
        const latency = (q: string, p: number, extra: Partial<Figure> = {}) => {
          const f = rateFigure(`${name}_${q}_ms`, 'ms', got.map((x) => percentile(x.latencies, p)), { limit: 'serve_inprocess_1row_ms', ...extra });
          f.ratio = f.value / ms1;
          return f;
        };
        figures.push(
          rps,
          latency('p50', 0.5),
          latency('p99', 0.99, { detail: { p999_ms: median(got.map((x) => percentile(x.latencies, 0.999))), max_ms: Math.max(...got.map((x) => x.latencies[x.latencies.length - 1]!)) } }),
        );
      }
    }
  }

  const rounded = figures.map(roundFigure);
  const machine = { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? '', memory_gib: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` };
  const config = {
    model: `${FEATURES}-${HIDDEN}-${CLASSES} relu/softmax MLP, ONNX fp32, onnxruntime 1 thread`,
    rounds,
    run_s: seconds,
    batching_on: { maxBatch: BATCH_ROWS, maxDelayMs: 2 },
    batching_off: { maxBatch: 1 },
    grpc_channels: `min(concurrency, ${MAX_GRPC_CHANNELS})`,
  };
  const wallS = (Date.now() - started) / 1000;
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ machine, wall_s: wallS, config, checks, figures: rounded, skipped })}\n`);
  } else {
    process.stdout.write(`Tessera serving benchmark — ${machine.cpus} × ${machine.cpu_model}, Node ${machine.node}, ${wallS.toFixed(0)} s\n`);
    process.stdout.write(`${config.model}; ${rounds} round(s) of ${seconds} s runs; answers: ${Object.entries(checks).map(([k, v]) => `${k} ${v}`).join(', ')}\n\n`);
    process.stdout.write(formatTable(rounded));
    if (skipped.length) {
      process.stdout.write('\nnot measured\n');
      for (const s of skipped) process.stdout.write(`  ${s.name}: ${s.reason}\n`);
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench serve failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
