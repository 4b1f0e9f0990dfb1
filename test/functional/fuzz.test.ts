import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import fc from 'fast-check';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { type ShardMap } from '../../cluster/shard-map.js';
import { slotOfId } from '../../cluster/sparse-keys.js';
import { type TransportSecurity, mutualTls } from '../../cluster/tls/transport-security.js';
import { maxSeq } from '../../cluster/worker-id.js';
import { SparseClient } from '../../client/sparse-client.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { DEDUP_WINDOW } from '../../server/push-dedup.js';
import { alive, start, waitFor, type Running } from '../helpers/cli.js';
import { BulkProbe, bulkFrameArb } from '../helpers/fuzz-bulk.js';
import { CountingWorkload, Outcomes, memoryOf, pool } from '../helpers/fuzz-harness.js';
import { type FuzzCall, type FuzzIdentity, type FuzzMethod, adminMethods, callArb, membershipMethods, shardMethods, sparseMethods } from '../helpers/fuzz-messages.js';
import { type FuzzContext } from '../helpers/fuzz-values.js';
import { startMembershipProcess } from '../helpers/membership-process.js';
import { RawGrpc } from '../helpers/raw-grpc.js';
import { RedisServer } from '../helpers/redis-server.js';
import { makeTlsDirs } from '../helpers/tls.js';

/*
 * A fuzz test of every service a shard serves and of its bulk port, and of
 * the membership service (docs/security.md, "Input that cannot be trusted").
 *
 * A real cluster under mutual TLS: Redis (started here) holds the membership,
 * one shard runs as its own process (`tessera shard`), and a worker of this
 * process pushes known gradients the whole time (plain SGD with learning rate
 * 1, so every value at the end is exactly computable, bit for bit). Meanwhile
 * TESSERA_FUZZ_RUNS calls (default 20 000) go to each of five targets —
 * messages made by fast-check from valid requests and then mutated (bits
 * flipped, truncated, spliced, fields duplicated, varints inserted),
 * structurally generated ones with wrong values (edges of the integer types,
 * NaN and infinities, long text, wrong lengths, unknown tables, wrong epochs,
 * any slot lists), protobuf junk and garbage, all sent as raw bytes so that
 * malformed protobuf reaches the server's decoder:
 *
 * - tessera.v1.Shard (Pull, Push, Describe) and tessera.v1.SparseShard (Pull,
 *   Push, Describe), with a worker certificate of the fuzzer's own. Every
 *   slot has applied every sequence number that worker may send (the last
 *   DEDUP_WINDOW up to 2^50, the largest a shard takes, pushed as zeros
 *   before the fuzz), so a mutated push that passes every check is a
 *   duplicate and changes nothing: that keeps "values equal exactly the
 *   valid pushes" meaningful (pushes under another worker's id are refused
 *   by mTLS).
 * - tessera.v1.ShardAdmin, every method: Checkpoint and MoveSlots with a worker
 *   certificate (decoded, then refused: nothing is written, nothing moves);
 *   ImportSlots, ApplyLog and DropSlots with the certificate of the shard
 *   that owns every slot, so payloads (framed right, valid CRCs) get past the
 *   sender check to the payload checks, which must refuse anything for a slot
 *   the shard serves; ExportModel as a reader.
 * - tessera.v1.Membership, every method, as an admin, against a throwaway
 *   membership server in a process of its own (not the cluster's: an admin
 *   may legitimately replace its map).
 * - the bulk port: frames with right and wrong JSON headers, lengths that do
 *   not match, payloads cut short, frames run together, garbage; the shard
 *   may close a connection, and the next request dials again.
 *
 * Every call must end with a status other than INTERNAL, UNKNOWN or
 * DATA_LOSS; UNAVAILABLE or DEADLINE_EXCEEDED only as the server's typed
 * answer (`not-ready` for an epoch ahead of the shard's), never because it
 * did not answer; a status message of at most MAX_DETAILS characters; on the
 * bulk port likewise, or a closed connection. At the end: both server
 * processes alive, every dense value and sparse row the worker pushed to
 * exactly what its pushes make, and each process's peak RSS within
 * RSS_MARGIN_MIB of its RSS before the fuzz.
 *
 * Reproducible: the calls are drawn by fc.sample, in chunks, from seeds made
 * of TESSERA_FUZZ_SEED (default below), the target and the chunk; a failure
 * names the chunk's seed and the call. Measured on a 2-core host, shared
 * with other work: the whole file in 55–130 s at 20 000 calls a target, about
 * half of it the bulk port (each frame it closes a connection on costs a TLS
 * handshake). `npm run test:fuzz` runs it alone; TESSERA_FUZZ_RUNS=2000 is a
 * quick pass (≈ 20 s).
 */

const RUNS = Number(process.env['TESSERA_FUZZ_RUNS'] ?? 20_000);
const SEED = Number(process.env['TESSERA_FUZZ_SEED'] ?? 20_260_101);
/** Calls drawn and sent at a time, each chunk over connections of its own. */
const CHUNK = 500;
/** Calls in flight per gRPC target; connections of the bulk run. */
const CONCURRENCY = 16;
const BULK_CONNECTIONS = 8;
const CALL_DEADLINE_MS = 10_000;
/** How long a server stream that never ends (WatchMap) is read before the call is cancelled; Pull and ExportModel are read to their end. */
const STREAM_MS = 50;
/**
 * How far a server process's peak RSS may rise above its RSS before the
 * fuzz. Measured at 20 000 calls a target, seven seeds: the shard's rose by
 * 75–117 MiB, the membership server's by 37–50 MiB, while their live JS
 * heaps after a full collection stayed where they were (≈ 27 and 12 MB):
 * what rises is garbage V8 has not collected yet and memory the allocator
 * keeps. What a caller can make a shard hold is bounded per connection and
 * per push (docs/security.md, "Limits"), a few MiB for the fuzzer's 16 calls
 * and 8 connections; the sparse rows its pulls create (rows are not bounded
 * yet) are a few tens of thousands of 4 floats. A leak of a few KB a call
 * would pass this margin.
 */
const RSS_MARGIN_MIB = 192;

const CLUSTER = 'fuzz';
const SLOTS = 64;
const TABLE = 'items';
const DIM = 4;
const FUZZ_WORKER = 'fuzz';

const CONFIG: ClusterConfig = {
  name: CLUSTER,
  slots: SLOTS,
  model: {
    name: 'fuzzed',
    seed: 11,
    tensors: [
      { name: 'w', shape: [64, 64], init: { kind: 'uniform', low: -1, high: 1 } },
      { name: 'b', shape: [37], init: { kind: 'uniform', low: -1, high: 1 } },
    ],
    sparse: [{ name: TABLE, dim: DIM, init: { kind: 'uniform', low: -1, high: 1 } }],
  },
  optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }),
  consistency: 'async',
  initialShards: 1,
};
const ELEMENTS = 64 * 64 + 37;
/** The rows the valid workload pushes to. */
const ROWS = Array.from({ length: 24 }, (_, i) => BigInt(i + 1));

/** Codes no request may end with, whatever it carried. */
const BAD_CODES = new Set<number>([status.INTERNAL, status.UNKNOWN, status.DATA_LOSS]);
/** Codes a request may end with only as a typed answer of the server (`not-ready`, `clock-timeout`): from the transport, they mean the server did not answer. */
const TYPED_ONLY = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
const isBad = (code: number, reason: string | undefined) => BAD_CODES.has(code) || (TYPED_ONLY.has(code) && !reason);
/** Longest status message expected: error messages quote at most 80 characters of what the caller sent (docs/security.md). */
const MAX_DETAILS = 1_000;

/** The fast-check seed of chunk `chunk` of target `target`: distinct for every (TESSERA_FUZZ_SEED, target, chunk). */
function chunkSeed(target: number, chunk: number): number {
  return ((SEED * 8 + target) * 10_007 + chunk) % 2 ** 31;
}

describe('functional: fuzzing every service and the bulk port while valid pushes run', function () {
  this.timeout(600_000);
  let root: string;
  let dirs: Record<string, string>;
  let redis: RedisServer;
  let store: RedisMembershipStore;
  let shard: Running;
  let membership: { proc: Running; port: number };
  let map: ShardMap;
  const securities: TransportSecurity[] = [];
  const clients: TesseraClient[] = [];
  let workload: CountingWorkload;
  /** The valid worker's client over gRPC: it reads the values at the end. */
  let reader: TesseraClient;
  let ctx: FuzzContext;
  const baseline: Record<string, { rss: number; peak: number }> = {};
  const peaks: Record<string, number> = {};
  let sampler: NodeJS.Timeout | undefined;
  const pids = () => ({ shard: shard.child.pid!, membership: membership.proc.child.pid! });

  const security = (key: string): TransportSecurity => {
    const s = mutualTls(dirs[key]!);
    securities.push(s);
    return s;
  };

  before(async function () {
    root = mkdtempSync(path.join(tmpdir(), 'tessera-fuzz-'));
    ({ dirs } = await makeTlsDirs(root, CLUSTER, [
      { role: 'shard', id: 's0' },
      { role: 'shard', id: 'm0' },
      { role: 'worker', id: 'w' },
      { role: 'worker', id: FUZZ_WORKER },
      { role: 'reader', id: 'fuzz-reader' },
      { role: 'admin', id: 'fuzz-admin' },
    ]));
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: CLUSTER });
    await store.createCluster(CONFIG);
    shard = start(['shard', '--redis', redis.url, '--cluster', CLUSTER, '--id', 's0', '--tls-dir', dirs['shard-s0']!], 900_000, { TESSERA_LOG_LEVEL: 'error' });
    map = await waitFor('the shard to own every slot', async () => {
      const m = await store.getMap();
      return m?.owners.every((o) => o === 's0') && m.bulk?.['s0'] ? m : undefined;
    });
    // The throwaway membership server holds a cluster of the same shape, under a map of its own.
    membership = await startMembershipProcess(dirs['shard-m0']!, CONFIG, { ...map, epoch: 1, owners: map.owners.map(() => 'm-s0'), addresses: { 'm-s0': '127.0.0.1:1' }, bulk: {} });

    const connect = async (workerId: string, key: string, transport: 'bulk' | 'grpc') => {
      const c = await TesseraClient.connect({ store, workerId, security: security(key), transport });
      clients.push(c);
      return c;
    };
    // The fuzzer's own worker: every slot applies its whole window of sequence numbers, as zeros, before the fuzz.
    const fuzzer = await connect(FUZZ_WORKER, `worker-${FUZZ_WORKER}`, 'bulk');
    const fuzzRows = new SparseClient(fuzzer);
    const everySlot = new Map<number, bigint>();
    for (let id = 1_000_000n; everySlot.size < SLOTS; id++) everySlot.set(slotOfId(TABLE, id, SLOTS), id);
    // The highest numbers a shard takes now (a day ahead of its clock): any lower one a fuzzed push
    // carries is then either in this window, applied already, or below it, counted as applied.
    const top = maxSeq();
    const seqs = Array.from({ length: DEDUP_WINDOW }, (_, i) => top - i);
    const zeros = new Float32Array(ELEMENTS);
    const zeroRows = new Float32Array(everySlot.size * DIM);
    await pool(seqs, 32, async (seq) => {
      const ack = await fuzzer.push(zeros, seq);
      expect(ack.appliedSlots).to.equal(SLOTS);
      await fuzzRows.push(TABLE, [...everySlot.values()], zeroRows, seq);
    });

    const viaBulk = await connect('w', 'worker-w', 'bulk');
    const viaGrpc = await connect('w', 'worker-w', 'grpc');
    reader = viaGrpc;
    const rows = new SparseClient(viaBulk);
    workload = new CountingWorkload(viaBulk, viaGrpc, rows, TABLE, ROWS, await viaBulk.pull(), await rows.pull(TABLE, ROWS), Date.now());
    ctx = { epoch: map.epoch, slots: SLOTS, elements: ELEMENTS, model: CONFIG.model.name, table: TABLE, dim: DIM, worker: FUZZ_WORKER, appliedSeqs: { low: top - DEDUP_WINDOW + 1, high: top } };

    for (const [name, pid] of Object.entries(pids())) {
      baseline[name] = memoryOf(pid);
      peaks[name] = baseline[name].rss;
    }
    sampler = setInterval(() => {
      for (const [name, pid] of Object.entries(pids())) if (alive(pid)) peaks[name] = Math.max(peaks[name]!, memoryOf(pid).rss);
    }, 200);
    workload.start();
  });

  after(async () => {
    if (sampler) clearInterval(sampler);
    await workload?.stop().catch(() => undefined);
    for (const c of clients) await c.close();
    for (const s of securities) if (s.kind === 'mtls') s.material.close();
    shard?.kill('SIGTERM');
    membership?.proc.kill('SIGTERM');
    await Promise.all([shard?.finished, membership?.proc.finished]);
    await store?.close();
    await redis?.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  const processes = () => ({ shard, membership: membership.proc });

  /** Throws, with the end of its output, for a server process that has exited. */
  const checkAlive = async () => {
    for (const [name, proc] of Object.entries(processes())) {
      if (proc.child.exitCode === null && proc.child.signalCode === null && alive(proc.child.pid!)) continue;
      const { code, stderr } = await proc.finished;
      expect.fail(`the ${name} process exited (code ${code}); its last output:\n${stderr.slice(-3000)}`);
    }
  };

  /** Prints what a target's calls came to, and the servers' RSS now; then checks that both are alive. */
  const report = async (target: string, started: number, outcomes: Outcomes) => {
    await checkAlive();
    const rss = Object.entries(pids()).map(([name, pid]) => `${name} ${memoryOf(pid).rss.toFixed(0)} MiB`);
    console.log(`      ${target}: ${RUNS} calls in ${((Date.now() - started) / 1000).toFixed(1)} s (RSS now: ${rss.join(', ')}): ${outcomes.summary()}`);
  };

  /** Sends RUNS calls drawn from `methods` to `address`, each with the certificate its method names. */
  async function fuzzGrpc(target: string, address: string, methods: FuzzMethod[], identities: Partial<Record<FuzzIdentity, string>>, targetIndex: number): Promise<void> {
    const secured = Object.entries(identities).map(([as, key]) => [as as FuzzIdentity, security(key)] as const);
    const arb = callArb(methods);
    const outcomes = new Outcomes();
    const started = Date.now();
    for (let chunk = 0; chunk * CHUNK < RUNS; chunk++) {
      const seed = chunkSeed(targetIndex, chunk);
      const calls: FuzzCall[] = fc.sample(arb, { seed, numRuns: Math.min(CHUNK, RUNS - chunk * CHUNK) });
      // New connections for every chunk: an HTTP/2 server closes a connection whose client cancels streams faster than
      // ~33/s past a burst of 1 000 (nghttp2's rapid-reset protection: GOAWAY INTERNAL_ERROR), and a cancelled WatchMap is one.
      const channels = new Map(secured.map(([as, sec]) => [as, new RawGrpc(address, sec, ['shard'])]));
      try {
        await pool(calls, CONCURRENCY, async ({ method, messages }, i) => {
          const out = await channels.get(method.as)!.call(method.path, method.shape, messages, CALL_DEADLINE_MS, method.endless ? STREAM_MS : Infinity);
          const name = method.path.slice(method.path.lastIndexOf('/') + 1);
          const where = `${method.path} (seed ${seed}, call ${i})`;
          outcomes.count(`${name}:${status[out.code]}`);
          if (isBad(out.code, out.reason)) outcomes.fail(where, `${status[out.code]}: ${out.details.slice(0, 300)}`, messages);
          if (out.details.length > MAX_DETAILS) outcomes.fail(where, `a status of ${out.details.length} characters: ${out.details.slice(0, 200)}`, messages);
        });
      } finally {
        for (const c of channels.values()) c.close();
      }
    }
    await report(target, started, outcomes);
    expect(outcomes.bad, `${outcomes.badTotal} calls to ${target} ended badly (TESSERA_FUZZ_SEED=${SEED})`).to.deep.equal([]);
  }

  it(`tessera.v1.Shard: Pull, Push, Describe`, async () => {
    await fuzzGrpc('tessera.v1.Shard', map.addresses['s0']!, shardMethods(ctx), { worker: `worker-${FUZZ_WORKER}` }, 0);
  });

  it(`tessera.v1.SparseShard: Pull, Push, Describe`, async () => {
    await fuzzGrpc('tessera.v1.SparseShard', map.addresses['s0']!, sparseMethods(ctx), { worker: `worker-${FUZZ_WORKER}` }, 1);
  });

  it(`tessera.v1.ShardAdmin: every method`, async () => {
    await fuzzGrpc('tessera.v1.ShardAdmin', map.addresses['s0']!, adminMethods(ctx, CONFIG), { worker: `worker-${FUZZ_WORKER}`, owner: 'shard-s0', reader: 'reader-fuzz-reader' }, 2);
  });

  it(`tessera.v1.Membership: every method, on a throwaway membership server`, async () => {
    await fuzzGrpc('tessera.v1.Membership', `127.0.0.1:${membership.port}`, membershipMethods(CONFIG, map), { admin: 'admin-fuzz-admin' }, 3);
  });

  it('the bulk port: mutated frames', async () => {
    const sec = security(`worker-${FUZZ_WORKER}`);
    const probes = Array.from({ length: BULK_CONNECTIONS }, () => new BulkProbe(map.bulk!['s0']!, sec));
    const arb = bulkFrameArb(ctx);
    const outcomes = new Outcomes();
    const started = Date.now();
    try {
      for (let chunk = 0; chunk * CHUNK < RUNS; chunk++) {
        const seed = chunkSeed(4, chunk);
        const frames = fc.sample(arb, { seed, numRuns: Math.min(CHUNK, RUNS - chunk * CHUNK) });
        let next = 0;
        await Promise.all(
          probes.map(async (probe) => {
            while (next < frames.length) {
              const i = next++;
              const out = await probe.send(frames[i]!, CALL_DEADLINE_MS);
              const where = `bulk frame (seed ${seed}, frame ${i})`;
              if (out.timedOut) outcomes.fail(where, 'neither answered nor closed the connection', [frames[i]!]);
              for (const r of out.replies) {
                outcomes.count(r.ok ? 'OK' : status[r.code] ?? String(r.code));
                if (!r.ok && r.details.length > MAX_DETAILS) outcomes.fail(where, `a status of ${r.details.length} characters: ${r.details.slice(0, 200)}`, [frames[i]!]);
                if (!r.ok && isBad(r.code, r.metadata['tessera-error'])) outcomes.fail(where, `${status[r.code]}: ${r.details.slice(0, 300)}`, [frames[i]!]);
              }
              if (out.closed) outcomes.count('closed');
            }
          }),
        );
      }
    } finally {
      for (const p of probes) p.close();
    }
    await report('the bulk port', started, outcomes);
    expect(outcomes.bad, `${outcomes.badTotal} bulk frames ended badly (TESSERA_FUZZ_SEED=${SEED})`).to.deep.equal([]);
  });

  it('afterwards: both processes alive, every value exactly what the valid pushes made, memory within its margin', async () => {
    await workload.stop();
    await checkAlive();
    expect(workload.steps, 'valid pushes ran during the fuzz').to.be.greaterThan(10);
    const dense = await reader.pull();
    const rows = await new SparseClient(reader).pull(TABLE, ROWS);
    const mismatch = (got: Float32Array, want: Float32Array) => got.findIndex((v, i) => !Object.is(v, want[i]));
    expect(mismatch(dense, workload.dense), `dense element ${mismatch(dense, workload.dense)} after ${workload.steps} valid pushes`).to.equal(-1);
    expect(mismatch(rows, workload.sparse), `sparse value ${mismatch(rows, workload.sparse)} after ${workload.steps} valid pushes`).to.equal(-1);
    for (const [name, pid] of Object.entries(pids())) {
      const now = memoryOf(pid);
      // The kernel's high-water mark, once the fuzz has raised it; else the highest RSS sampled during the fuzz.
      const peak = now.peak > baseline[name]!.peak ? now.peak : Math.max(peaks[name]!, now.rss);
      console.log(`      ${name} RSS: ${baseline[name]!.rss.toFixed(1)} MiB before the fuzz, ${now.rss.toFixed(1)} MiB after, peak ${peak.toFixed(1)} MiB; ${workload.steps} valid pushes`);
      expect(peak, `${name}: peak RSS within ${RSS_MARGIN_MIB} MiB of its RSS before the fuzz`).to.be.at.most(baseline[name]!.rss + RSS_MARGIN_MIB);
    }
  });
});
