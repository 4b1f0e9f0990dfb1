import { setLogLevel } from '../../cluster/log.js';
import { RemoteMembershipStore } from '../../cluster/membership/remote-store.js';
import { SparseClient } from '../../client/sparse-client.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { nowNs, serve } from '../child-rpc.js';
import { seededUniform, ZipfSampler } from '../zipf.js';

/**
 * A worker process for the sparse benchmark: precomputes its request id
 * arrays (Zipf-distributed ids, repeats allowed) before anything is timed,
 * then pulls or pushes a range of them one request after another through
 * `SparseClient`, as a training step would, and reports when the range
 * started and ended on the host's monotonic clock.
 */

setLogLevel('warn');
let client: TesseraClient | undefined;
let sparse: SparseClient | undefined;
let store: RemoteMembershipStore | undefined;
let table = '';
let requests: BigUint64Array[] = [];
let unique: number[] = [];
let gradient = new Float32Array(0);

export type SparseOp = 'pull' | 'push';

export interface SparsePrepare {
  table: string;
  /** Requests to precompute. */
  requests: number;
  idsPerRequest: number;
  /** Ids are drawn from [0, idSpace): id = Zipf rank − 1, so id 0 is the most frequent. */
  idSpace: number;
  exponent: number;
  seed: number;
}

/** Per request: distinct ids (what travels; the client dedups). */
export interface SparsePrepared {
  unique: number[];
  /** Distinct ids over every request. */
  distinct: number;
  ms: number;
}

/** Times in ns; `cpuMs`: this process's CPU time over the range; `rows`, `unique`: ids requested and distinct ids in it. */
export interface SparseTiming {
  start: number;
  end: number;
  cpuMs: number;
  rows: number;
  unique: number;
  requests: number;
}

serve(
  {
    connect: async ({ membership, workerId }: { membership: string; workerId: string }) => {
      store = new RemoteMembershipStore(membership);
      client = await TesseraClient.connect({ store, workerId });
      sparse = new SparseClient(client);
      return { elements: client.elements };
    },
    prepare: (p: SparsePrepare): SparsePrepared => {
      const t0 = Date.now();
      table = p.table;
      const dim = sparse!.table(table).dim;
      const zipf = new ZipfSampler(p.idSpace, p.exponent, seededUniform(p.seed));
      const all = new Set<number>();
      requests = [];
      unique = [];
      for (let r = 0; r < p.requests; r++) {
        // Ids below 2^32: the low halves carry them, the high halves stay 0; the BigUint64Array views the same memory.
        const halves = new Uint32Array(2 * p.idsPerRequest);
        const seen = new Set<number>();
        for (let i = 0; i < p.idsPerRequest; i++) {
          const id = zipf.sample() - 1;
          halves[2 * i] = id;
          seen.add(id);
          all.add(id);
        }
        requests.push(new BigUint64Array(halves.buffer));
        unique.push(seen.size);
      }
      // A small constant gradient keeps sgd's rows finite however often they are pushed.
      gradient = new Float32Array(p.idsPerRequest * dim).fill(1e-3);
      return { unique, distinct: all.size, ms: Date.now() - t0 };
    },
    /** Requests [from, from + count), one after another. */
    run: async ({ op, from, count }: { op: SparseOp; from: number; count: number }): Promise<SparseTiming> => {
      const s = sparse!;
      if (from + count > requests.length) throw new Error(`only ${requests.length} requests prepared; asked for [${from}, ${from + count})`);
      let rows = 0;
      let distinct = 0;
      for (let r = from; r < from + count; r++) {
        rows += requests[r]!.length;
        distinct += unique[r]!;
      }
      const cpu0 = process.cpuUsage();
      const start = nowNs();
      if (op === 'pull') for (let r = from; r < from + count; r++) await s.pull(table, requests[r]!);
      else for (let r = from; r < from + count; r++) await s.push(table, requests[r]!, gradient);
      const end = nowNs();
      const cpu = process.cpuUsage(cpu0);
      return { start, end, cpuMs: (cpu.user + cpu.system) / 1000, rows, unique: distinct, requests: count };
    },
  },
  async () => {
    sparse?.close();
    await client?.close();
    await store?.close();
  },
);
