import { RemoteError } from '../../cluster/errors.js';
import { DEFAULT_DEADLINE_MS, dial, unary } from '../../cluster/grpc-client.js';
import { shardAdminService } from '../../cluster/proto.js';
import { formatRanges, rangesOf } from '../../cluster/slots.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

/** Slot numbers from "3,5-7,9": each a slot or an inclusive range. */
function parseSlots(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--slots takes slot numbers and ranges such as 3,5-7; got "${part.slice(0, 40)}"`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a || b - a > 1 << 20) throw new UsageError(`--slots: "${part}" is not a range from low to high`);
    for (let s = a; s <= b; s++) out.push(s);
  }
  return out;
}

export const resetSlotsCommand: Command = {
  name: 'reset-slots',
  summary:
    "Declare a shard's lost slots lost, on purpose: slots the map gives it that it holds no values for (it started without a checkpoint that has them) are refused until restored or reset; this gives them their initial values. Restore them instead by restarting the shard with --resume or --restore FILE.",
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'shard', type: 'string', metavar: 'ID', required: true, description: 'the shard whose lost slots to reset (`tessera status` lists lost slots)' },
    { name: 'slots', type: 'string', metavar: 'LIST', description: 'only these slots, e.g. 3,5-7 (default: every lost slot of the shard)' },
  ],
  async run(o) {
    const id = o['shard'] as string;
    const slots = o['slots'] !== undefined ? parseSlots(o['slots'] as string) : [];
    const store = openStore(o);
    try {
      const map = await store.getMap();
      const address = map?.addresses[id];
      if (!address) throw new UsageError(`no shard "${id.slice(0, 80)}" in the cluster's map; \`tessera status\` lists the shards`);
      const stub = dial(shardAdminService(), address);
      try {
        const reply = await unary<object, { slots: number[]; epoch: number }>(stub, 'resetSlots', { slots }, DEFAULT_DEADLINE_MS, address);
        const reset = reply.slots ?? [];
        process.stdout.write(
          reset.length > 0
            ? `${id}: slots ${formatRanges(rangesOf(reset))} reset to their initial values (map epoch ${Number(reply.epoch)})\n`
            : `${id}: no lost slot${slots.length > 0 ? ' among those given' : ''}; nothing reset\n`,
        );
        return EXIT.ok;
      } catch (err) {
        if (err instanceof RemoteError || err instanceof Error) process.stderr.write(`${id} (${address}): ${err.message}\n`);
        return EXIT.failed;
      } finally {
        stub.close();
      }
    } finally {
      await store.close();
    }
  },
};
