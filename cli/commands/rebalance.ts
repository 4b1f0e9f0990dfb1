import { type MoveOutcome, rebalanceCluster } from '../../client/rebalance.js';
import { formatRanges } from '../../cluster/slots.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

export const rebalanceCommand: Command = {
  name: 'rebalance',
  summary: 'Spread the slots evenly over the live shards, moving them live (training goes on); --drain empties shards before they are stopped.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'drain', type: 'string', metavar: 'ID[,ID…]', description: 'shards to empty: they give all their slots away' },
    { name: 'dry-run', type: 'boolean', description: 'print the moves, make none' },
    { name: 'json', type: 'boolean', description: 'one JSON object per move, one per line' },
  ],
  async run(o) {
    const store = openStore(o);
    try {
      const drain = ((o['drain'] as string | undefined) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      const dryRun = Boolean(o['dry-run']);
      const print = (m: { from: string; to: string; slots: number[] } & Partial<MoveOutcome>) => {
        const ranges = formatRanges(runs(m.slots));
        if (o['json']) process.stdout.write(`${JSON.stringify(m)}\n`);
        else process.stdout.write(`${m.from} → ${m.to}: ${m.slots.length} slots (${ranges})${m.epoch ? `, map epoch ${m.epoch}, ${m.rows} rows, ${m.logEntries} updates after the snapshot, frozen ${m.frozenMs!.toFixed(1)} ms` : ''}\n`);
      };
      const moves = await rebalanceCluster(store, { drain, dryRun, ...(dryRun ? {} : { onMove: print }) });
      if (dryRun) moves.forEach(print);
      if (moves.length === 0) process.stdout.write('the slots are already spread evenly\n');
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};

function runs(slots: readonly number[]): { begin: number; end: number }[] {
  const out: { begin: number; end: number }[] = [];
  for (const s of [...slots].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last.end === s) last.end = s + 1;
    else out.push({ begin: s, end: s + 1 });
  }
  return out;
}
