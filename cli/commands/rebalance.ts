import { type MoveOutcome, rebalanceCluster } from '../../client/rebalance.js';
import { type LoadPlan } from '../../cluster/rebalance-plan.js';
import { formatRanges } from '../../cluster/slots.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

export const rebalanceCommand: Command = {
  name: 'rebalance',
  summary: 'Spread the slots evenly over the live shards (or, --by load, the traffic they carry), moving them live (training goes on); --drain empties shards before they are stopped.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'drain', type: 'string', metavar: 'ID[,ID…]', description: 'shards to empty: they give all their slots away' },
    { name: 'by', type: 'string', default: 'slots', choices: ['slots', 'load'], description: "what to even out: the slots per shard, or the traffic they carry (bytes/s over the last minutes, from the shards), each shard within --margin of the mean, with the fewest moves" },
    { name: 'margin', type: 'number', default: 0.1, description: 'with --by load: how far above the mean load a shard may stay (0.1: 10 %)' },
    { name: 'dry-run', type: 'boolean', description: 'print the moves (with --by load, each shard\'s load before and after), make none' },
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
      const by = o['by'] as 'slots' | 'load';
      const margin = o['margin'] as number;
      if (!(margin >= 0)) throw new UsageError('--margin must be 0 or more (0.1: within 10 % of the mean)');
      const showLoads = (p: LoadPlan) => {
        const mb = (b: number) => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB/s` : b >= 1e3 ? `${(b / 1e3).toFixed(1)} kB/s` : `${Math.round(b)} B/s`);
        if (o['json']) process.stdout.write(`${JSON.stringify({ load: { before: p.before, after: p.after, mean: p.mean, margin: p.margin } })}\n`);
        else for (const id of Object.keys(p.before).sort()) process.stdout.write(`${id}: ${mb(p.before[id]!)} → ${mb(p.after[id] ?? 0)} (mean ${mb(p.mean)}, margin ${(p.margin * 100).toFixed(0)} %)\n`);
      };
      const moves = await rebalanceCluster(store, { drain, dryRun, by, margin, onLoadPlan: showLoads, ...(dryRun ? {} : { onMove: print }) });
      if (dryRun) moves.forEach(print);
      if (moves.length === 0) process.stdout.write(by === 'load' ? 'every shard is already within the margin of the mean load\n' : 'the slots are already spread evenly\n');
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
