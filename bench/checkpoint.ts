import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { evenAssignment } from '../cluster/shard-map.js';
import { toIdHalves } from '../cluster/wire/sparse-values.js';
import { SnapshotArena, readCheckpoint, restore, snapshot, snapshotWords, writeCheckpoint } from '../server/checkpoint.js';
import { Shard } from '../server/shard.js';
import { SparseStore } from '../server/sparse-store.js';

/**
 * What a checkpoint costs one shard (server/checkpoint.ts), in-process, no
 * network: a shard holding a 16M-float dense model under adam (values and two
 * moments: 192 MB) and 200,000 sparse rows of dim 16 under adagrad (≈ 26 MB
 * with ids and counts), all slots its own. Measures the preparation of the
 * snapshot's memory (while serving goes on), the snapshot (the pause in
 * serving), the write to a file in the system's temporary directory
 * (synced), and the read and restore into a fresh shard, median of 3.
 *
 * `node dist/bench/checkpoint.js`. Prints one JSON object.
 */

const ELEMENTS = 16 * 2 ** 20;
const ROWS = 200_000;
const DIM = 16;
const RUNS = 3;
const config: ClusterConfig = {
  name: 'bench',
  slots: 1024,
  model: { name: 'ckpt-bench', seed: 1, tensors: [{ name: 'w', shape: [ELEMENTS], init: { kind: 'uniform', low: -0.1, high: 0.1 } }], sparse: [{ name: 'emb', dim: DIM, init: { kind: 'uniform', low: -0.1, high: 0.1 }, optimizer: optimizerWithDefaults({ name: 'adagrad' }) }] },
  optimizer: optimizerWithDefaults({ name: 'adam' }),
  consistency: 'async',
};
const map = { epoch: 1, slots: 1024, owners: evenAssignment(['s'], 1024), addresses: { s: '127.0.0.1:1' } };

function shard(): { shard: Shard; sparse: SparseStore } {
  const s = new Shard('s', config);
  s.setMap(map);
  return { shard: s, sparse: new SparseStore(config, s) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const a = shard();
a.shard.push({ epoch: 1, ranges: [{ begin: 0, end: 1024 }], workerId: 'w', seq: 1 }, new Float32Array(ELEMENTS).fill(0.01));
for (let from = 0; from < ROWS; from += 10_000) {
  const ids = toIdHalves(Array.from({ length: 10_000 }, (_, i) => BigInt(from + i)));
  a.sparse.push({ epoch: 1, table: 'emb', workerId: 'w', seq: 1 + from, ids, gradients: new Float32Array(10_000 * DIM).fill(0.01) });
}

const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-ckpt-'));
const prepareMs: number[] = [];
const snapshotMs: number[] = [];
const writeMs: number[] = [];
const restoreMs: number[] = [];
let bytes = 0;
try {
  for (let r = 0; r < RUNS; r++) {
    const arena = new SnapshotArena(snapshotWords(a.shard, a.sparse));
    let t = performance.now();
    await arena.prepare();
    prepareMs.push(performance.now() - t);
    t = performance.now();
    const image = snapshot(a.shard, a.sparse, arena);
    snapshotMs.push(performance.now() - t);
    t = performance.now();
    const written = await writeCheckpoint(image, dir);
    writeMs.push(performance.now() - t);
    bytes = written.bytes;
    const b = shard();
    t = performance.now();
    restore(await readCheckpoint(written.path), b.shard, b.sparse, written.path);
    restoreMs.push(performance.now() - t);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const mbps = (ms: number) => Math.round(bytes / 1e6 / (ms / 1e3));
process.stdout.write(
  `${JSON.stringify({
    bench: 'checkpoint',
    dense_floats: ELEMENTS,
    optimizer: 'adam',
    sparse_rows: ROWS,
    row_dim: DIM,
    file_mb: +(bytes / 1e6).toFixed(1),
    prepare_ms: +median(prepareMs).toFixed(1),
    snapshot_ms: +median(snapshotMs).toFixed(1),
    snapshot_mb_per_s: mbps(median(snapshotMs)),
    write_ms: +median(writeMs).toFixed(1),
    write_mb_per_s: mbps(median(writeMs)),
    restore_ms: +median(restoreMs).toFixed(1),
    restore_mb_per_s: mbps(median(restoreMs)),
  })}\n`,
);
