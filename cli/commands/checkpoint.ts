import { checkpointCluster } from '../../client/checkpoint-client.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

export const checkpointCommand: Command = {
  name: 'checkpoint',
  summary: 'Have every shard write its slots (values, optimizer state, applied pushes) to a file in a directory on its own host; `tessera shard --restore FILE` starts from one.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'dir', type: 'string', metavar: 'DIR', required: true, description: "directory on each shard's host to write <shard id>.tessera-checkpoint to (it must exist)" },
    { name: 'json', type: 'boolean', description: 'print one JSON object per shard, one per line, instead of a table' },
  ],
  async run(o) {
    const dir = o['dir'] as string;
    if (!dir) throw new UsageError('--dir needs a directory');
    const store = openStore(o);
    try {
      const outcomes = await checkpointCluster(store, dir);
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
      if (failed > 0) process.stderr.write(failed === outcomes.length ? `tessera: no shard wrote a checkpoint (${failed} failed)\n` : `tessera: ${failed} of ${outcomes.length} shards wrote no checkpoint; the others did\n`);
      return failed > 0 ? EXIT.failed : EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
