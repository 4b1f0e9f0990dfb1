import { type ClusterConfig } from '../cluster/cluster-config.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { type TcpPair } from './baselines.js';
import { Child } from './child-rpc.js';
import { BenchCluster } from './cluster-host.js';
import type { DenseOp, OpTiming } from './children/dense-worker.js';
import { type Figure, MB, median, rateFigure } from './figures.js';

/**
 * Dense goodput: worker processes push a whole-model gradient and pull the
 * whole model from shard processes over loopback gRPC. Goodput counts float32
 * values only (4 bytes each), for all workers together, over the wall time from
 * the first worker's start to the last one's end.
 *
 * - push: gradient to the shards, acknowledged only once applied (sgd).
 * - pull: the whole model back.
 * - pushpull: one training step's traffic, a push and then a pull; counts the
 *   bytes of both (2 × model per worker).
 *
 * The clusters of one model size (1 shard and 2 shards) run side by side and
 * their repetitions alternate, with a raw-TCP sample after each: on a shared,
 * noisy host the figures compared with each other (and with their limit) are
 * then taken under the same conditions.
 *
 * Under gradient compression (`--compression`): {@link runDenseCodecs}.
 */

export interface DenseCase {
  /** Model size in floats. */
  elements: number;
  label: string;
  shards: number;
  workers: number;
}

export interface DenseOptions {
  /** Timed repetitions per operation (after one untimed warm-up). */
  reps(elements: number): number;
  cases: DenseCase[];
  /** The raw-TCP limit, sampled once after every repetition, moving one model's bytes. */
  tcp: TcpPair;
  /** Every TCP sample taken, by transfer size in bytes. */
  tcpSamples: Map<number, number[]>;
  /** Client chunk size; the client's default when absent. */
  chunkBytes?: number;
  /** The workers' client transport (default: the client's, bulk). */
  transport?: 'bulk' | 'grpc';
}

const OPS: DenseOp[] = ['push', 'pull', 'pushpull'];

function config(elements: number): ClusterConfig {
  return {
    name: 'bench',
    slots: 1024,
    model: { name: 'flat', seed: 7, tensors: [{ name: 'w', shape: [elements], init: { kind: 'uniform', low: -1, high: 1 } }] },
    optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1e-6 }),
    consistency: 'async',
  };
}

/** One cluster and the worker processes attached to it. */
interface Rig {
  shards: number;
  cluster: BenchCluster;
  workers: Child[];
}

/** What one case collects, repetition by repetition. */
interface Samples {
  c: DenseCase;
  op: DenseOp;
  rates: number[];
  tcp: number[];
  pushLegs: number[];
  pullLegs: number[];
  workerCpu: number[];
  shardCpu: number[];
  workerFaults: number[];
  shardFaults: number[];
}

export async function runDense(opts: DenseOptions, progress: (msg: string) => void): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const elements of [...new Set(opts.cases.map((c) => c.elements))]) {
    const cases = opts.cases.filter((c) => c.elements === elements);
    const shardCounts = [...new Set(cases.map((c) => c.shards))].sort();
    progress(`dense: ${cases[0]!.label} floats over ${shardCounts.join(' and ')} shard(s), side by side`);
    const rigs: Rig[] = [];
    try {
      for (const shards of shardCounts) rigs.push({ shards, cluster: await BenchCluster.start(config(elements), shards), workers: [] });
      for (const workers of [...new Set(cases.map((c) => c.workers))].sort()) {
        const now = cases.filter((c) => c.workers === workers);
        for (const rig of rigs) {
          while (rig.workers.length < workers) {
            const w = Child.start(`worker-${rig.shards}s-${rig.workers.length}`, 'dense-worker');
            rig.workers.push(w);
            await w.call('connect', { membership: rig.cluster.membershipAddress, workerId: `bench-worker-${rig.workers.length - 1}`, chunkBytes: opts.chunkBytes, transport: opts.transport });
          }
        }
        for (const op of OPS) {
          const samples = await measure(now, op, rigs, opts);
          figures.push(...samples.map((s) => figure(s, opts)));
        }
      }
    } finally {
      for (const rig of rigs) {
        await Promise.all(rig.workers.map((w) => w.stop()));
        await rig.cluster.close();
      }
    }
  }
  return figures;
}

async function measure(cases: DenseCase[], op: DenseOp, rigs: Rig[], opts: DenseOptions): Promise<Samples[]> {
  const all = cases.map((c): Samples => ({ c, op, rates: [], tcp: [], pushLegs: [], pullLegs: [], workerCpu: [], shardCpu: [], workerFaults: [], shardFaults: [] }));
  const reps = opts.reps(cases[0]!.elements);
  for (let r = 0; r <= reps; r++) {
    for (const s of all) {
      const rig = rigs.find((g) => g.shards === s.c.shards)!;
      await once(s, rig, r === 0, opts); // r = 0: warm-up (connections, JIT, first touch of buffers)
    }
  }
  return all;
}

async function once(s: Samples, rig: Rig, warmUp: boolean, opts: DenseOptions): Promise<void> {
  const modelBytes = s.c.elements * 4;
  const workers = rig.workers.slice(0, s.c.workers);
  const bytes = modelBytes * (s.op === 'pushpull' ? 2 : 1) * workers.length;
  const shardUsage = async () =>
    (await Promise.all(rig.cluster.shards.map((sh) => sh.call<{ ms: number; faults: number }>('cpu')))).reduce((a, b) => ({ ms: a.ms + b.ms, faults: a.faults + b.faults }), { ms: 0, faults: 0 });
  const before = await shardUsage();
  const timings = await Promise.all(workers.map((w) => w.call<OpTiming>('run', { op: s.op })));
  const after = await shardUsage();
  if (warmUp) return;
  const start = Math.min(...timings.map((t) => t.start));
  const end = Math.max(...timings.map((t) => t.end));
  s.rates.push(bytes / MB / ((end - start) / 1e9));
  if (s.op === 'pushpull') {
    const pushed = modelBytes * workers.length;
    s.pushLegs.push(pushed / MB / ((Math.max(...timings.map((t) => t.mid)) - start) / 1e9));
    s.pullLegs.push(pushed / MB / ((end - Math.min(...timings.map((t) => t.mid))) / 1e9));
  }
  // CPU time per model's worth of bytes moved: a figure that contention on a shared host disturbs less than wall time.
  const models = bytes / modelBytes;
  s.workerCpu.push(timings.reduce((a, t) => a + t.cpuMs, 0) / models);
  s.workerFaults.push(timings.reduce((a, t) => a + t.faults, 0) / models);
  s.shardCpu.push((after.ms - before.ms) / models);
  s.shardFaults.push((after.faults - before.faults) / models);
  s.tcp.push(await opts.tcp.transfer(modelBytes));
}

function figure(s: Samples, opts: DenseOptions): Figure {
  const modelBytes = s.c.elements * 4;
  const f = rateFigure(`dense_${s.op}_${s.c.label}_${s.c.workers}w${s.c.shards}s`, 'MB/s', s.rates);
  const limit = median(s.tcp);
  opts.tcpSamples.set(modelBytes, [...(opts.tcpSamples.get(modelBytes) ?? []), ...s.tcp]);
  f.limit = modelBytes >= 64 << 20 ? 'loopback_tcp' : `loopback_tcp_${modelBytes >> 20}MiB`;
  f.ratio = f.value / limit;
  f.detail = {
    params_per_s: (f.value * MB) / 4,
    limit_MBps: limit,
    worker_cpu_ms: median(s.workerCpu),
    shard_cpu_ms: median(s.shardCpu),
    worker_faults: median(s.workerFaults),
    shard_faults: median(s.shardFaults),
  };
  if (s.op === 'pushpull') Object.assign(f.detail, { push_leg_MBps: median(s.pushLegs), pull_leg_MBps: median(s.pullLegs) });
  return f;
}

/**
 * Dense push under gradient compression: one cluster per model size and
 * shard count, and beside it one set of worker processes per codec (the
 * client's `compression` option), the codecs' pushes taking turns, one push
 * at a time, a raw-TCP sample after each turn. Two figures per codec and case:
 * goodput in MB/s of raw float32 values (as the other dense figures), and
 * `…_wire`, MB/s of the bytes the pushes put on the wire (PushStats.wireBytes,
 * summed over the workers), each beside the same limit.
 */
export interface CodecCase {
  elements: number;
  label: string;
  /** Workers and shards alike (1 or 2). */
  width: number;
}

export interface CodecOptions {
  reps(elements: number): number;
  /** Codecs as `--compression` names them: none, fp16, int8, topk:R. */
  codecs: string[];
  cases: CodecCase[];
  tcp: TcpPair;
  tcpSamples: Map<number, number[]>;
  chunkBytes?: number;
  transport?: 'bulk' | 'grpc';
}

interface CodecSamples {
  codec: string;
  workers: Child[];
  rates: number[];
  wireRates: number[];
  wireBytes: number[];
  tcp: number[];
  workerCpu: number[];
  shardCpu: number[];
}

/** A codec case's figure name: `dense_push_16M_fp16` for 1 worker × 1 shard, `dense_push_16M_2w2s_fp16` beyond. */
export function codecFigureName(c: CodecCase, codec: string): string {
  return `dense_push_${c.label}${c.width === 1 ? '' : `_${c.width}w${c.width}s`}_${codec}`;
}

export async function runDenseCodecs(opts: CodecOptions, progress: (msg: string) => void): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const c of opts.cases) {
    progress(`dense push under ${opts.codecs.join(', ')}: ${c.label} floats, ${c.width} worker(s) × ${c.width} shard(s)`);
    const cluster = await BenchCluster.start(config(c.elements), c.width);
    const all: CodecSamples[] = [];
    try {
      for (const codec of opts.codecs) {
        const s: CodecSamples = { codec, workers: [], rates: [], wireRates: [], wireBytes: [], tcp: [], workerCpu: [], shardCpu: [] };
        all.push(s);
        for (let w = 0; w < c.width; w++) {
          const worker = Child.start(`worker-${codec}-${w}`, 'dense-worker');
          s.workers.push(worker);
          await worker.call('connect', { membership: cluster.membershipAddress, workerId: `bench-${codec}-${w}`, chunkBytes: opts.chunkBytes, transport: opts.transport, compression: codec });
        }
      }
      const reps = opts.reps(c.elements);
      for (let r = 0; r <= reps; r++) for (const s of all) await codecOnce(s, c, cluster, r === 0, opts); // r = 0: warm-up
      for (const s of all) figures.push(...codecFigures(s, c, opts));
    } finally {
      await Promise.all(all.flatMap((s) => s.workers.map((w) => w.stop())));
      await cluster.close();
    }
  }
  return figures;
}

async function codecOnce(s: CodecSamples, c: CodecCase, cluster: BenchCluster, warmUp: boolean, opts: CodecOptions): Promise<void> {
  const shardMs = async () => (await Promise.all(cluster.shards.map((sh) => sh.call<{ ms: number }>('cpu')))).reduce((a, u) => a + u.ms, 0);
  const before = await shardMs();
  const timings = await Promise.all(s.workers.map((w) => w.call<OpTiming>('run', { op: 'push' })));
  const after = await shardMs();
  if (warmUp) return;
  const seconds = (Math.max(...timings.map((t) => t.end)) - Math.min(...timings.map((t) => t.start))) / 1e9;
  const wire = timings.reduce((a, t) => a + t.wireBytes, 0);
  s.rates.push((c.elements * 4 * timings.length) / MB / seconds);
  s.wireRates.push(wire / MB / seconds);
  s.wireBytes.push(wire / timings.length);
  s.workerCpu.push(timings.reduce((a, t) => a + t.cpuMs, 0) / timings.length);
  s.shardCpu.push((after - before) / timings.length);
  s.tcp.push(await opts.tcp.transfer(c.elements * 4));
}

function codecFigures(s: CodecSamples, c: CodecCase, opts: CodecOptions): Figure[] {
  const modelBytes = c.elements * 4;
  const limit = median(s.tcp);
  opts.tcpSamples.set(modelBytes, [...(opts.tcpSamples.get(modelBytes) ?? []), ...s.tcp]);
  const limitName = modelBytes >= 64 << 20 ? 'loopback_tcp' : `loopback_tcp_${modelBytes >> 20}MiB`;
  const wireBytes = median(s.wireBytes);
  // Per push of one worker: its CPU, the shards' CPU, and its bytes on the wire.
  const detail = { limit_MBps: limit, worker_cpu_ms: median(s.workerCpu), shard_cpu_ms: median(s.shardCpu), wire_bytes: wireBytes, raw_per_wire: modelBytes / wireBytes };
  const name = codecFigureName(c, s.codec);
  const raw = rateFigure(name, 'MB/s', s.rates, { limit: limitName, detail: { params_per_s: (median(s.rates) * MB) / 4, ...detail } });
  raw.ratio = raw.value / limit;
  const wire = rateFigure(`${name}_wire`, 'MB/s', s.wireRates, { limit: limitName, detail });
  wire.ratio = wire.value / limit;
  return [raw, wire];
}
