import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TesseraClient } from '../client/tessera-client.js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { startGrpcServer } from '../cluster/grpc-server.js';
import { setLogLevel } from '../cluster/log.js';
import { MemoryMembershipStore } from '../cluster/membership/memory-store.js';
import { membershipImplementation } from '../cluster/membership/membership-service.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../cluster/proto.js';
import { MEMBERSHIP_RULES } from '../cluster/tls/authorization.js';
import { median } from './figures.js';

/**
 * What replication costs and how fast it takes over (docs/replication.md),
 * each shard a `tessera shard` process, the embedded membership store served
 * from this process, one client here:
 *
 * - push and push+pull goodput (MB/s of float32) of a 4M-float model over 3
 *   shards with `--replicas 1` beside `--replicas 0`, the two clusters side
 *   by side and their repetitions alternating (a ratio taken under the same
 *   conditions on a shared host);
 * - failover: from a primary's SIGKILL to the first push acknowledged after
 *   its slots were taken over (every push covers every slot), with the lease
 *   TTL given, repeated.
 *
 * `node dist/bench/replication.js [--quick]`. Prints one JSON object.
 */

const BIN = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));
const ELEMENTS = 4 * 2 ** 20;
const SHARDS = 3;
const quick = process.argv.includes('--quick');
const REPS = quick ? 3 : 7;
const FAILOVERS = quick ? 2 : 4;

setLogLevel('warn');

function config(name: string, replicas: number, elements = ELEMENTS): ClusterConfig {
  return {
    name,
    slots: 256,
    model: { name: 'flat', seed: 7, tensors: [{ name: 'w', shape: [elements], init: { kind: 'uniform', low: -1, high: 1 } }] },
    optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1e-6 }),
    consistency: 'async',
    initialShards: SHARDS,
    ...(replicas > 0 ? { replicas } : {}),
  };
}

/** An embedded store served over gRPC and `tessera shard` processes on it. */
class Rig {
  readonly procs = new Map<string, ChildProcess>();
  private constructor(
    readonly store: MemoryMembershipStore,
    private readonly close0: () => Promise<void>,
    readonly address: string,
    readonly lease: { ttlMs: number; renewMs: number },
  ) {}

  static async start(c: ClusterConfig, lease = { ttlMs: 10_000, renewMs: 3_000 }): Promise<Rig> {
    const store = new MemoryMembershipStore();
    await store.createCluster(c);
    const server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    server.setServing([MEMBERSHIP_SERVICE_NAME], 'SERVING');
    const rig = new Rig(store, () => server.close(200), `127.0.0.1:${server.port}`, lease);
    for (let i = 0; i < SHARDS; i++) rig.shard(`shard-${i}`);
    await until(async () => (await store.getMap()) !== null, 60_000);
    return rig;
  }

  shard(id: string): void {
    const args = [BIN, 'shard', '--membership', this.address, '--id', id, '--listen', '127.0.0.1:0', '--lease-ttl-ms', String(this.lease.ttlMs), '--lease-renew-ms', String(this.lease.renewMs)];
    this.procs.set(id, spawn(process.execPath, args, { stdio: 'ignore', env: { ...process.env, TESSERA_LOG_LEVEL: 'error' } }));
  }

  /** Every slot with its primary and `replicas` backups, all live. */
  async whole(replicas: number): Promise<void> {
    await until(async () => {
      const map = await this.store.getMap();
      const live = new Set((await this.store.members('shard')).map((m) => m.id));
      return map !== null && map.owners.every((o, s) => live.has(o) && (map.backups?.[s] ?? []).filter((b) => live.has(b)).length === replicas);
    }, 60_000);
  }

  async close(): Promise<void> {
    for (const p of this.procs.values()) p.kill('SIGKILL');
    await this.close0();
    await this.store.close();
  }
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** MB/s of float32 values moved by `ops` rounds of `op`. */
async function goodput(client: TesseraClient, op: 'push' | 'pushpull', ops: number): Promise<number> {
  const g = new Float32Array(client.elements).fill(1e-3);
  const started = performance.now();
  for (let i = 0; i < ops; i++) {
    await client.push(g);
    if (op === 'pushpull') await client.pull();
  }
  const bytes = ops * client.elements * 4 * (op === 'pushpull' ? 2 : 1);
  return bytes / 1e6 / ((performance.now() - started) / 1000);
}

async function throughput(): Promise<object> {
  const rigs = { r0: await Rig.start(config('r0', 0)), r1: await Rig.start(config('r1', 1)) };
  await rigs.r1.whole(1);
  const clients = {
    r0: await TesseraClient.connect({ store: rigs.r0.store, workerId: 'w' }),
    r1: await TesseraClient.connect({ store: rigs.r1.store, workerId: 'w' }),
  };
  const rates: Record<string, number[]> = { push_r0: [], push_r1: [], pushpull_r0: [], pushpull_r1: [] };
  try {
    for (const k of ['r0', 'r1'] as const) await goodput(clients[k], 'pushpull', 2);
    for (let rep = 0; rep < REPS; rep++) {
      for (const op of ['push', 'pushpull'] as const) {
        for (const k of rep % 2 === 0 ? (['r0', 'r1'] as const) : (['r1', 'r0'] as const)) rates[`${op}_${k}`]!.push(await goodput(clients[k], op, 8));
      }
    }
  } finally {
    for (const c of Object.values(clients)) await c.close();
    for (const r of Object.values(rigs)) await r.close();
  }
  const m = (k: string) => median(rates[k]!);
  return {
    model_floats: ELEMENTS,
    shards: SHARDS,
    reps: REPS,
    push_mb_s: { replicas0: m('push_r0'), replicas1: m('push_r1'), ratio: m('push_r1') / m('push_r0') },
    pushpull_mb_s: { replicas0: m('pushpull_r0'), replicas1: m('pushpull_r1'), ratio: m('pushpull_r1') / m('pushpull_r0') },
    samples: rates,
  };
}

/** Kill -9 a primary under continuous pushes; ms from the kill until the first push sent after it is acknowledged. */
async function failover(lease: { ttlMs: number; renewMs: number }): Promise<object> {
  const rig = await Rig.start(config(`f${lease.ttlMs}`, 1, 2 ** 16), lease);
  const times: number[] = [];
  try {
    await rig.whole(1);
    const client = await TesseraClient.connect({ store: rig.store, workerId: 'w', retryForMs: 120_000 });
    const g = new Float32Array(client.elements).fill(1e-3);
    for (let round = 0; round < FAILOVERS; round++) {
      const victim = `shard-${round % SHARDS}`;
      let killedAt = 0;
      let firstAfter = 0;
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          const sent = performance.now();
          await client.push(g);
          if (killedAt > 0 && sent >= killedAt && firstAfter === 0) firstAfter = performance.now();
        }
      })();
      await new Promise((r) => setTimeout(r, 500));
      killedAt = performance.now();
      rig.procs.get(victim)!.kill('SIGKILL');
      await until(async () => firstAfter > 0, 120_000);
      times.push(firstAfter - killedAt);
      stop = true;
      await loop;
      rig.shard(victim);
      await rig.whole(1);
    }
    await client.close();
  } finally {
    await rig.close();
  }
  return { lease_ttl_ms: lease.ttlMs, lease_renew_ms: lease.renewMs, kill_to_first_ack_ms: { median: median(times), samples: times.map((t) => Math.round(t)) } };
}

const out = {
  throughput: await throughput(),
  failover: [await failover({ ttlMs: 2_000, renewMs: 500 }), await failover({ ttlMs: 10_000, renewMs: 3_000 })],
};
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
process.exit(0);
