import { cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { applyRate } from './apply.js';
import { GrpcPair, limitFigure, Memcpy, TcpPair } from './baselines.js';
import { setChildExecArgv } from './child-rpc.js';
import { type CodecCase, type DenseCase, runDense, runDenseCodecs } from './dense.js';
import { type Figure, formatTable, median, rateFigure, roundFigure } from './figures.js';
import { runSparse } from './sparse.js';
import { type TrainVariant, trainFigureName, trainSamplesPerSec } from './train.js';
import { formatCompression, parseCompression } from '../cluster/wire/gradient-codec.js';
import { OPTIMIZERS } from '../cluster/optimizer-config.js';
import { DEFAULT_CHUNK_BYTES } from '../cluster/wire/dense-values.js';
import { runTls } from './tls.js';

/**
 * `npm run bench` (a table for people) and `npm run bench -- --json` (one JSON
 * object): the data path's figures, each the median of repeated runs, beside
 * the limits they are held against, measured in the same run.
 *
 * Flags: --json · --quick (fewer repetitions) · --only baselines,apply,dense,sparse,tls,train ·
 * --cases 16M_1w1s,1M_2w2s,… (dense cases; default all) ·
 * --profile DIR (every child process writes a V8 CPU profile there) · --node-flag FLAG
 * (passed to every child's node, e.g. --trace-gc; repeatable) · --chunk-bytes N (client chunk size) ·
 * --transport bulk|grpc (the dense workers' client transport; default bulk) ·
 * --compression none,fp16,int8,topk:0.01 (dense push per codec, 1M and 16M, 1 worker × 1 shard and
 * 2 × 2, narrowed by --cases 1M_1w1s,16M_2w2s,…; default none alone: no codec figures).
 */

const SECTIONS = ['baselines', 'apply', 'dense', 'sparse', 'tls', 'train'] as const;
type Section = (typeof SECTIONS)[number];

const M = 1 << 20;
/** Training runs per variant (1 worker, 2 workers, 2 workers unpipelined), alternating; ≈ 5 s each. */
const TRAIN_ROUNDS = 3;
const SIZES = [
  { elements: M, label: '1M' },
  { elements: 16 * M, label: '16M' },
];

interface Args {
  json: boolean;
  quick: boolean;
  only: Set<Section>;
  /** Dense cases to run, as `16M_1w1s`; all when absent. */
  cases?: Set<string>;
  profile?: string;
  /** Client chunk size for the dense runs (default: the client's). */
  chunkBytes?: number;
  transport?: 'bulk' | 'grpc';
  /** Codecs for the dense push figures under compression (`none` alone, the default: none of them). */
  compression: string[];
  /** Extra node/V8 flags for every child (e.g. --trace-gc). */
  nodeFlags: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { json: false, quick: false, only: new Set(SECTIONS), compression: ['none'], nodeFlags: [] };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    if (f === '--json') a.json = true;
    else if (f === '--quick') a.quick = true;
    else if (f === '--only') {
      const names = (argv[++i] ?? '').split(',').filter(Boolean);
      for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`--only takes ${SECTIONS.join(',')}; got "${n}"`);
      a.only = new Set(names as Section[]);
    } else if (f === '--cases') a.cases = new Set((argv[++i] ?? '').split(',').filter(Boolean));
    else if (f === '--chunk-bytes') a.chunkBytes = Number(argv[++i]);
    else if (f === '--transport') {
      const t = argv[++i];
      if (t !== 'bulk' && t !== 'grpc') throw new Error(`--transport takes bulk or grpc; got "${t}"`);
      a.transport = t;
    }
    else if (f === '--compression') a.compression = [...new Set((argv[++i] ?? '').split(',').filter(Boolean).map((c) => formatCompression(parseCompression(c))))];
    else if (f === '--node-flag') a.nodeFlags.push(argv[++i] ?? '');
    else if (f === '--profile') a.profile = resolve(argv[++i] ?? 'profiles');
    else throw new Error(`unknown flag ${f}; use --json, --quick, --only SECTIONS, --cases 16M_1w1s,…, --profile DIR, --node-flag FLAG, --chunk-bytes N, --transport bulk|grpc, --compression none,fp16,int8,topk:R`);
  }
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const progress = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
  setChildExecArgv([...(args.profile ? ['--cpu-prof', '--cpu-prof-dir', args.profile] : []), ...args.nodeFlags]);
  const reps = (n: number) => (args.quick ? Math.max(3, Math.ceil(n / 3)) : n);
  const figures: Figure[] = [];
  const skipped: { name: string; reason: string }[] = [];

  // Limits are sampled between the repetitions of the figures they bound (see baselines.ts).
  if (args.only.has('baselines') || args.only.has('apply')) {
    progress('memory copy bandwidth and optimizer apply rates');
    const memcpy = new Memcpy(64 * M);
    const copies: number[] = [];
    for (let r = 0; r < reps(9); r++) copies.push(memcpy.once());
    const applied: Figure[] = [];
    if (args.only.has('apply')) for (const name of OPTIMIZERS) applied.push(applyRate(name, 16 * M, 1024, reps(7), memcpy, copies));
    figures.push(limitFigure('memcpy', copies, memcpy.bytes, true), ...applied);
  }

  const transport = args.only.has('baselines') || args.only.has('dense');
  if (transport || args.only.has('sparse')) {
    progress('raw loopback TCP');
    const tcp16 = await TcpPair.start(transport ? 64 * M : 4 * M);
    const tcpSamples = new Map<number, number[]>();
    try {
      if (transport) {
        for (const bytes of [64 * M, 4 * M]) {
          const samples: number[] = [];
          for (let r = 0; r < reps(bytes >= 64 * M ? 9 : 25); r++) samples.push(await tcp16.transfer(bytes));
          tcpSamples.set(bytes, samples);
        }
        const dense: Figure[] = [];
        progress('gRPC transport alone');
        const grpcPair = await GrpcPair.start(args.chunkBytes ?? DEFAULT_CHUNK_BYTES);
        try {
          for (const op of ['push', 'pull'] as const) {
            const samples: number[] = [];
            const tcp: number[] = [];
            for (let r = 0; r <= reps(9); r++) {
              const rate = await grpcPair.transfer(op, 64 * M);
              if (r === 0) continue;
              samples.push(rate);
              tcp.push(await tcp16.transfer(64 * M));
            }
            const f = limitFigure(`grpc_stream_${op}_64MiB`, samples, 64 * M);
            Object.assign(f, { limit: 'loopback_tcp', ratio: f.value / median(tcp) });
            dense.push(f);
            tcpSamples.get(64 * M)!.push(...tcp);
          }
        } finally {
          await grpcPair.close();
        }
        if (args.only.has('dense')) {
          let cases: DenseCase[] = [];
          for (const size of SIZES) for (const shards of [1, 2]) for (const workers of [1, 2]) cases.push({ ...size, shards, workers });
          if (args.cases) cases = cases.filter((c) => args.cases!.has(`${c.label}_${c.workers}w${c.shards}s`));
          dense.push(...(await runDense({ cases, reps: (n) => (n >= 16 * M ? reps(7) : reps(15)), tcp: tcp16, tcpSamples, chunkBytes: args.chunkBytes, ...(args.transport ? { transport: args.transport } : {}) }, progress)));
          if (args.compression.some((c) => c !== 'none')) {
            let codecCases: CodecCase[] = [];
            for (const size of SIZES) for (const width of [1, 2]) codecCases.push({ ...size, width });
            if (args.cases) codecCases = codecCases.filter((c) => args.cases!.has(`${c.label}_${c.width}w${c.width}s`));
            const codecOpts = { codecs: args.compression, cases: codecCases, reps: (n: number) => (n >= 16 * M ? reps(7) : reps(15)), tcp: tcp16, tcpSamples, chunkBytes: args.chunkBytes, ...(args.transport ? { transport: args.transport } : {}) };
            dense.push(...(await runDenseCodecs(codecOpts, progress)));
          }
        }
        figures.push(limitFigure('loopback_tcp', tcpSamples.get(64 * M)!, 64 * M), limitFigure('loopback_tcp_4MiB', tcpSamples.get(4 * M)!, 4 * M), ...dense);
      }
      if (args.only.has('sparse')) figures.push(...(await runSparse({ reps: reps(9), requestsPerRep: 32, warmUpRequests: 32, tcp: tcp16 }, progress)));
    } finally {
      await tcp16.close();
    }
  }

  if (args.only.has('tls')) {
    // Mutual TLS beside plaintext, both transports, the four variants taking turns (bench/tls.ts).
    figures.push(...(await runTls({ reps: (n) => reps(n >= 16 * M ? 7 : 15), sizes: [{ elements: M, label: '1M' }, { elements: 16 * M, label: '16M' }] }, progress)));
  }

  if (args.only.has('train')) {
    // 1 worker, 2 workers and 2 workers unpipelined alternate, so all see the same conditions on a shared host;
    // the pipelining speedup is the median of the ratios of runs taken side by side.
    const variants: TrainVariant[] = [
      { workers: 1, pipeline: true },
      { workers: 2, pipeline: true },
      { workers: 2, pipeline: false },
      { workers: 2, consistency: 'ssp:2' },
      { workers: 2, consistency: 'bsp' },
      { workers: 2, model: 'ctr' },
    ];
    const runs = new Map<string, Figure[]>(variants.map((v) => [trainFigureName(v), []]));
    const failures = new Map<string, string>();
    const speedups: number[] = [];
    for (let r = 0; r < (args.quick ? 1 : TRAIN_ROUNDS); r++) {
      const round = new Map<string, number>();
      for (const v of variants) {
        const name = trainFigureName(v);
        if (failures.has(name)) continue;
        progress(`training ${v.model ?? 'mnist-mlp'}, ${v.workers} worker(s)${v.pipeline === false ? ', unpipelined' : ''}, ${v.consistency ?? 'async'}, run ${r + 1}`);
        try {
          const f = await trainSamplesPerSec(v);
          runs.get(name)!.push(f);
          round.set(name, f.value);
        } catch (err) {
          failures.set(name, (err as Error).message);
        }
      }
      const pipelined = round.get(trainFigureName({ workers: 2 }));
      const unpipelined = round.get(trainFigureName({ workers: 2, pipeline: false }));
      if (pipelined !== undefined && unpipelined !== undefined) speedups.push(pipelined / unpipelined);
    }
    for (const [name, got] of runs) {
      if (got.length === 0) skipped.push({ name, reason: failures.get(name) ?? 'not run' });
      else figures.push({ ...rateFigure(name, got[0]!.unit, got.map((f) => f.value)), detail: got[0]!.detail });
    }
    if (speedups.length === 0) skipped.push({ name: 'train_pipeline_speedup', reason: 'no pair of pipelined and unpipelined 2-worker runs completed' });
    else {
      const median2 = (name: string) => median(runs.get(name)!.map((f) => f.value));
      figures.push(rateFigure('train_pipeline_speedup', '×', speedups, { detail: { workers: 2, pipelined_samples_per_s: median2(trainFigureName({ workers: 2 })), unpipelined_samples_per_s: median2(trainFigureName({ workers: 2, pipeline: false })) } }));
    }
  }

  const rounded = figures.map(roundFigure);
  const targets = checkTargets(figures);
  const machine = { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? '', memory_gib: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` };
  const wallS = (Date.now() - started) / 1000;
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ machine, wall_s: wallS, figures: rounded, targets, skipped })}\n`);
  } else {
    process.stdout.write(`Tessera benchmarks — ${machine.cpus} × ${machine.cpu_model}, Node ${machine.node}, ${wallS.toFixed(0)} s\n\n`);
    process.stdout.write(formatTable(rounded));
    if (targets.length) {
      process.stdout.write('\ntargets\n');
      for (const t of targets) process.stdout.write(`  ${t.holds ? 'holds' : 'MISSED'}  ${t.target}: ${t.measured}\n`);
    }
    if (skipped.length) {
      process.stdout.write('\nnot measured\n');
      for (const s of skipped) process.stdout.write(`  ${s.name}: ${s.reason}\n`);
    }
  }
}

interface Target {
  target: string;
  measured: string;
  holds: boolean;
}

/** The project's performance targets, checked against this run's figures (absent figures are left out). */
function checkTargets(figures: Figure[]): Target[] {
  const f = (n: string) => figures.find((x) => x.name === n);
  const out: Target[] = [];
  const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
  const pp = f('dense_pushpull_16M_1w1s');
  if (pp?.ratio !== undefined) out.push({ target: 'dense push+pull 16M 1w↔1s ≥ 50 % of loopback TCP', measured: pct(pp.ratio), holds: pp.ratio >= 0.5 });
  if (pp?.detail) {
    const push = Number(pp.detail['push_leg_MBps']);
    const pull = Number(pp.detail['pull_leg_MBps']);
    out.push({ target: 'dense push+pull 16M 1w↔1s ≥ 600 MB/s each way', measured: `push ${push.toFixed(0)} MB/s, pull ${pull.toFixed(0)} MB/s`, holds: push >= 600 && pull >= 600 });
  }
  for (const [opt, min] of [
    ['sgd', 0.5],
    ['adam', 0.25],
  ] as const) {
    const a = f(`apply_${opt}`);
    if (a?.ratio !== undefined) out.push({ target: `apply_${opt} ≥ ${pct(min)} of the memory-copy bound`, measured: pct(a.ratio), holds: a.ratio >= min });
  }
  for (const op of ['push', 'pull', 'pushpull']) {
    for (const size of ['1M', '16M']) {
      const one = f(`dense_${op}_${size}_1w1s`);
      const two = f(`dense_${op}_${size}_1w2s`);
      if (one && two) out.push({ target: `a second shard does not lower dense ${op} ${size}`, measured: `${two.value.toFixed(0)} vs ${one.value.toFixed(0)} MB/s (×${(two.value / one.value).toFixed(2)})`, holds: two.value >= one.value });
    }
  }
  const t1 = f('train_mnist_1w');
  const t2 = f('train_mnist_2w');
  if (t1 && t2) out.push({ target: 'a second worker raises samples/s', measured: `${t2.value.toFixed(0)} vs ${t1.value.toFixed(0)} samples/s (×${(t2.value / t1.value).toFixed(2)})`, holds: t2.value > t1.value });
  const sp = f('train_pipeline_speedup');
  const tu = f('train_mnist_2w_unpipelined');
  if (sp && t2 && tu) {
    out.push({
      target: 'pipelined training beats unpipelined (2 workers)',
      measured: `${t2.value.toFixed(0)} vs ${tu.value.toFixed(0)} samples/s (×${sp.value.toFixed(2)}, paired runs ×${sp.min!.toFixed(2)}–${sp.max!.toFixed(2)})`,
      holds: sp.value > 1,
    });
  }
  return out;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
