import { TesseraClient } from '../client/tessera-client.js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { setLogLevel } from '../cluster/log.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { BenchCluster } from './cluster-host.js';
import { median } from './figures.js';

/**
 * What replication costs and how fast it takes over (docs/replication.md),
 * each shard its own process (BenchCluster), the embedded membership store
 * served from this process, one client here:
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

/** Every slot of `cluster` with its primary and `replicas` backups, all live. */
async function whole(cluster: BenchCluster, replicas: number): Promise<void> {
  await until(async () => {
    const map = await cluster.store.getMap();
    const live = new Set((await cluster.store.members('shard')).map((m) => m.id));
    return map !== null && map.owners.every((o, s) => live.has(o) && (map.backups?.[s] ?? []).filter((b) => live.has(b)).length === replicas);
  }, 60_000);
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
  const rigs = { r0: await BenchCluster.start(config('r0', 0), SHARDS), r1: await BenchCluster.start(config('r1', 1), SHARDS) };
  await whole(rigs.r1, 1);
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
  const rig = await BenchCluster.start(config(`f${lease.ttlMs}`, 1, 2 ** 16), SHARDS, undefined, lease);
  const times: number[] = [];
  try {
    await whole(rig, 1);
    const client = await TesseraClient.connect({ store: rig.store, workerId: 'w', retryForMs: 120_000 });
    const g = new Float32Array(client.elements).fill(1e-3);
    for (let round = 0; round < FAILOVERS; round++) {
      const victim = round % SHARDS;
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
      void rig.shards[victim]!.kill();
      await until(async () => firstAfter > 0, 120_000);
      times.push(firstAfter - killedAt);
      stop = true;
      await loop;
      await rig.restart(victim);
      await whole(rig, 1);
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
