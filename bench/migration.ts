import { rebalanceCluster, type MoveOutcome } from '../client/rebalance.js';
import { TesseraClient } from '../client/tessera-client.js';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { setLogLevel } from '../cluster/log.js';
import { MemoryMembershipStore } from '../cluster/membership/memory-store.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { ShardServer } from '../server/shard-server.js';

/**
 * What a live rebalance costs (docs/migration.md), all in this process over
 * loopback gRPC: 2 shards hold a 4M-float model under adam (48 MB with its
 * moments) while one worker pushes whole-model gradients back to back; a
 * third shard joins and `rebalanceCluster` moves a third of the slots to it,
 * 16 slots (≈ 64k floats) per move. Reports the moves, how long each froze
 * its slots (the only time their requests wait), the whole rebalance, and
 * the worker's pushes per second before and during it.
 *
 * `node dist/bench/migration.js`. Prints one JSON object.
 */

const ELEMENTS = 4 * 2 ** 20;
const config: ClusterConfig = {
  name: 'bench',
  slots: 1024,
  model: { name: 'move-bench', seed: 1, tensors: [{ name: 'w', shape: [ELEMENTS], init: { kind: 'uniform', low: -0.1, high: 0.1 } }] },
  optimizer: optimizerWithDefaults({ name: 'adam' }),
  consistency: 'async',
  initialShards: 2,
};

setLogLevel('warn');
const store = new MemoryMembershipStore();
await store.createCluster(config);
const shards = [await ShardServer.start({ id: 's0', listen: '127.0.0.1:0', store }), await ShardServer.start({ id: 's1', listen: '127.0.0.1:0', store })];
for (const s of shards) await s.refresh();
const client = await TesseraClient.connect({ store, workerId: 'w', retryDelayMs: 10, maxRetries: 50 });
const gradient = new Float32Array(ELEMENTS).fill(0.001);
let pushes = 0;
let stop = false;
const worker = (async () => {
  while (!stop) {
    await client.push(gradient);
    pushes++;
  }
})();

const rate = async (ms: number) => {
  const before = pushes;
  await new Promise((r) => setTimeout(r, ms));
  return ((pushes - before) * 1000) / ms;
};
const baseline = await rate(2_000);
shards.push(await ShardServer.start({ id: 's2', listen: '127.0.0.1:0', store }));
const started = performance.now();
const duringBefore = pushes;
const moves = (await rebalanceCluster(store, { perMove: 16 })) as MoveOutcome[];
const totalMs = performance.now() - started;
const during = ((pushes - duringBefore) * 1000) / totalMs;
stop = true;
await worker;
await client.close();
for (const s of shards) await s.close(0);

const frozen = moves.map((m) => m.frozenMs).sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({
    bench: 'migration',
    floats: ELEMENTS,
    optimizer: 'adam',
    slots_moved: moves.reduce((n, m) => n + m.slots.length, 0),
    moves: moves.length,
    log_entries: moves.reduce((n, m) => n + m.logEntries, 0),
    frozen_ms_median: +frozen[Math.floor(frozen.length / 2)]!.toFixed(1),
    frozen_ms_max: +frozen[frozen.length - 1]!.toFixed(1),
    move_ms_median: +moves.map((m) => m.totalMs).sort((a, b) => a - b)[Math.floor(moves.length / 2)]!.toFixed(1),
    rebalance_s: +(totalMs / 1000).toFixed(2),
    pushes_per_s_before: +baseline.toFixed(1),
    pushes_per_s_during: +during.toFixed(1),
  })}\n`,
);
