import { type ClusterConfig } from '../cluster/cluster-config.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { type SparseTableStats } from '../server/sparse-store.js';
import { limitFigure, type TcpPair } from './baselines.js';
import { Child } from './child-rpc.js';
import { BenchCluster } from './cluster-host.js';
import type { SparseOp, SparsePrepared, SparseTiming } from './children/sparse-worker.js';
import { type Figure, MB, median, rateFigure } from './figures.js';

/**
 * Sparse-table throughput: one worker process pulls and pushes rows of one
 * sparse table (dim 64) on one shard process, over loopback gRPC, through
 * `SparseClient`. The model has a tiny dense tensor beside the table.
 *
 * Each request names 4 096 ids drawn from a Zipf distribution (exponent 1.1)
 * over a 10M-id space, seeded; ids repeat within a request and the client
 * sends each distinct id once (a pull gets its row once, a push sums its
 * gradients). Rows are created by the first push that touches them (a pull
 * of a row not held reads its initial values and stores nothing): the head of
 * the distribution exists after the warm-up, its tail keeps creating rows
 * while timed. The
 * worker precomputes every request's ids before anything is timed, and runs a
 * repetition's requests one after another, as a training step would.
 *
 * Figures count rows requested per second (4 096 a request); `detail` also
 * gives distinct rows per second and MB/s of row values (distinct rows ×
 * 256 B: what travels). The limit is raw loopback TCP moving one request's
 * payload (ids and values of its distinct rows, the median request's bytes),
 * sampled after every repetition; the ratio is payload MB/s over it.
 */

export const SPARSE_DIM = 64;
export const SPARSE_ID_SPACE = 10_000_000;
export const SPARSE_IDS_PER_REQUEST = 4096;
export const SPARSE_ZIPF_EXPONENT = 1.1;
const SEED = 20240611;
const TABLE = 'emb';

export interface SparseOptions {
  /** Timed repetitions per operation (pull and push alternate). */
  reps: number;
  /** Requests per repetition. */
  requestsPerRep: number;
  /** Untimed requests per operation before the first repetition. */
  warmUpRequests: number;
  /** The raw-TCP limit, sampled once after every repetition. */
  tcp: TcpPair;
}

function config(): ClusterConfig {
  return {
    name: 'bench',
    slots: 1024,
    model: {
      name: 'sparse-bench',
      seed: 7,
      tensors: [{ name: 'w', shape: [16], init: { kind: 'uniform', low: -1, high: 1 } }],
      sparse: [{ name: TABLE, dim: SPARSE_DIM, init: { kind: 'uniform', low: -0.05, high: 0.05 } }],
    },
    optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1e-3 }),
    consistency: 'async',
  };
}

interface Samples {
  op: SparseOp;
  rows: number[];
  unique: number[];
  tcp: number[];
  /** Per request: ms, worker CPU ms, shard CPU ms, rows created. */
  ms: number[];
  workerCpu: number[];
  shardCpu: number[];
  created: number[];
  /** Per repetition: distinct rows per request. */
  uniquePerRequest: number[];
}

export async function runSparse(opts: SparseOptions, progress: (msg: string) => void): Promise<Figure[]> {
  progress(`sparse: dim ${SPARSE_DIM}, ${SPARSE_IDS_PER_REQUEST} Zipf(${SPARSE_ZIPF_EXPONENT}) ids a request over ${SPARSE_ID_SPACE / 1e6}M ids, 1 worker ↔ 1 shard`);
  const cluster = await BenchCluster.start(config(), 1);
  const worker = Child.start('sparse-worker', 'sparse-worker');
  try {
    await worker.call('connect', { membership: cluster.membershipAddress, workerId: 'bench-sparse-worker' });
    const perOp = opts.warmUpRequests + opts.reps * opts.requestsPerRep;
    const prepared = await worker.call<SparsePrepared>('prepare', {
      table: TABLE,
      requests: 2 * perOp,
      idsPerRequest: SPARSE_IDS_PER_REQUEST,
      idSpace: SPARSE_ID_SPACE,
      exponent: SPARSE_ZIPF_EXPONENT,
      seed: SEED,
    });
    // One request's payload: ids (8 B) and row values (4 B × dim) of its distinct rows.
    const rowBytes = 8 + 4 * SPARSE_DIM;
    const requestBytes = Math.round(median(prepared.unique) * rowBytes);
    const shard = cluster.shards[0]!;
    const shardState = async () => {
      const [cpu, tables] = await Promise.all([shard.call<{ ms: number }>('cpu'), shard.call<SparseTableStats[]>('sparse')]);
      const t = tables.find((x) => x.name === TABLE)!;
      return { ms: cpu.ms, created: t.rowsCreated, rows: t.rows, bytes: t.bytes };
    };

    // Requests [0, perOp) are pulled, [perOp, 2·perOp) pushed: each request is used once, so timed requests still meet new rows.
    let next: Record<SparseOp, number> = { pull: 0, push: perOp };
    const all: Samples[] = (['pull', 'push'] as const).map((op) => ({ op, rows: [], unique: [], tcp: [], ms: [], workerCpu: [], shardCpu: [], created: [], uniquePerRequest: [] }));
    for (const s of all) {
      await worker.call<SparseTiming>('run', { op: s.op, from: next[s.op], count: opts.warmUpRequests });
      next = { ...next, [s.op]: next[s.op] + opts.warmUpRequests };
    }
    const warm = await shardState();
    for (let r = 0; r < opts.reps; r++) {
      for (const s of all) {
        const before = await shardState();
        const t = await worker.call<SparseTiming>('run', { op: s.op, from: next[s.op], count: opts.requestsPerRep });
        const after = await shardState();
        next = { ...next, [s.op]: next[s.op] + opts.requestsPerRep };
        const secs = (t.end - t.start) / 1e9;
        s.rows.push(t.rows / secs);
        s.unique.push(t.unique / secs);
        s.ms.push((secs * 1000) / t.requests);
        s.workerCpu.push(t.cpuMs / t.requests);
        s.shardCpu.push((after.ms - before.ms) / t.requests);
        s.created.push((after.created - before.created) / t.requests);
        s.uniquePerRequest.push(t.unique / t.requests);
        s.tcp.push(await opts.tcp.transfer(requestBytes));
      }
    }
    const end = await shardState();
    const tcpAll = all.flatMap((s) => s.tcp);
    const figures = all.map((s): Figure => {
      const f = rateFigure(`sparse_${s.op}_rows`, 'rows/s', s.rows);
      const unique = median(s.unique);
      const limit = median(s.tcp);
      f.limit = 'loopback_tcp_sparse';
      f.ratio = (unique * rowBytes) / MB / limit;
      f.detail = {
        unique_rows_per_s: unique,
        values_MBps: (unique * 4 * SPARSE_DIM) / MB,
        payload_MBps: (unique * rowBytes) / MB,
        limit_MBps: limit,
        ids_per_request: SPARSE_IDS_PER_REQUEST,
        unique_per_request: median(s.uniquePerRequest),
        ms_per_request: median(s.ms),
        worker_cpu_ms_per_request: median(s.workerCpu),
        shard_cpu_ms_per_request: median(s.shardCpu),
        rows_created_per_request: median(s.created),
        requests_per_rep: opts.requestsPerRep,
        table_rows_after_warm_up: warm.rows,
        table_rows_at_end: end.rows,
        table_MB_at_end: end.bytes / MB,
      };
      return f;
    });
    return [limitFigure('loopback_tcp_sparse', tcpAll, requestBytes), ...figures];
  } finally {
    await worker.stop();
    await cluster.close();
  }
}
