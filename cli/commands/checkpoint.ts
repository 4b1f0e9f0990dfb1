import { checkpointCluster } from '../../client/checkpoint-client.js';
import { badCheckpointName } from '../../server/checkpoint.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

export const checkpointCommand: Command = {
  name: 'checkpoint',
  summary: "Have every shard write its slots (values, optimizer state, applied pushes) to a file in its own --checkpoint-dir; `tessera shard --restore FILE` (or --resume) starts from one.",
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'name', type: 'string', metavar: 'NAME', description: "write <shard id>.<NAME>.tessera-checkpoint beside each shard's own file (1-64 letters, digits, '.', '_', '-'); without it, each shard's own <shard id>.tessera-checkpoint, the one --resume reads. Shards write only into their own --checkpoint-dir" },
    { name: 'dir', type: 'string', description: '', retired: 'each shard writes only into its own --checkpoint-dir (start shards with `tessera shard --checkpoint-dir DIR`); name a checkpoint with --name' },
    { name: 'json', type: 'boolean', description: 'print one JSON object per shard, one per line, instead of a table' },
  ],
  async run(o) {
    const name = (o['name'] as string | undefined) ?? '';
    const bad = badCheckpointName(name);
    if (bad) throw new UsageError(`--name: ${bad}`);
    const store = openStore(o);
    try {
      const outcomes = await checkpointCluster(store, name);
      for (const out of outcomes) {
        if (o['json']) {
          process.stdout.write(`${JSON.stringify(out.ok ? out.checkpoint : { shardId: out.shardId, address: out.address, error: out.error.message, reason: out.error.reason })}\n`);
        } else if (out.ok) {
          const c = out.checkpoint;
          process.stdout.write(`${c.shardId}  ${c.path}  ${c.slots} slots, ${c.rows} rows, ${(c.bytes / 2 ** 20).toFixed(1)} MiB, map epoch ${c.epoch}${c.closedSteps > 0 ? `, bsp step ${c.closedSteps}` : ''}, paused ${c.snapshotMs.toFixed(1)} ms, ${c.totalMs.toFixed(0)} ms in all\n`);
        } else {
          process.stderr.write(`${out.shardId} (${out.address}): ${out.error.message}\n`);
        }
      }
      const failed = outcomes.filter((x) => !x.ok).length;
      if (failed > 0) process.stderr.write(failed === outcomes.length ? `tessera: no shard wrote a checkpoint (${failed} failed)\n` : `tessera: ${failed} of ${outcomes.length} shards wrote no checkpoint; ${outcomes.length - failed === 1 ? 'the other one did' : `the other ${outcomes.length - failed} did`}\n`);
      return failed > 0 ? EXIT.failed : EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
