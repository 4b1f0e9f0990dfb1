import { formatRanges } from '../../cluster/slots.js';
import { type ClusterStatus, readStatus } from '../cluster-status.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { untilSignal } from '../signals.js';
import { sleep } from '../../cluster/backoff.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';

export { type ClusterStatus } from '../cluster-status.js';

export const statusCommand: Command = {
  name: 'status',
  summary: "Show the cluster: map epoch, each shard (address, alive/dead by lease, slots, bytes), each worker (step, epoch, loss, backend) and the run's data progress.",
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'json', type: 'boolean', description: 'print one JSON object instead of tables' },
    { name: 'watch', type: 'number', metavar: 'SECONDS', description: 'print it again every SECONDS until Ctrl-C (redrawn in place on a terminal; with --json, one object per line)' },
  ],
  async run(o) {
    const watchS = o['watch'] as number | undefined;
    if (watchS !== undefined && !(watchS >= 0.5)) throw new UsageError('--watch takes the seconds between refreshes, at least 0.5');
    const store = openStore(o);
    try {
      if (watchS === undefined) {
        const status = await readStatus(store, o['cluster'] as string);
        process.stdout.write(o['json'] ? `${JSON.stringify(status)}\n` : render(status));
        return EXIT.ok;
      }
      // --watch: again every watchS seconds until Ctrl-C; on a terminal, redrawn in place.
      const stopped = untilSignal();
      for (;;) {
        const status = await readStatus(store, o['cluster'] as string).catch((err: Error) => err);
        const text = status instanceof Error ? `tessera: ${status.message}\n` : o['json'] ? `${JSON.stringify(status)}\n` : render(status);
        process.stdout.write(process.stdout.isTTY && !o['json'] ? `\x1b[H\x1b[2J${new Date().toISOString()}  (every ${watchS} s; Ctrl-C stops)\n${text}` : text);
        const next = await Promise.race([stopped, sleep(watchS * 1000).then(() => null)]);
        if (next) return EXIT.ok;
      }
    } finally {
      await store.close();
    }
  },
};

function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function render(s: ClusterStatus): string {
  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  let out = `cluster ${s.cluster} · model ${s.model} · ${s.consistency} · map epoch ${s.epoch} · ${s.slots} slots${s.orphaned_slots ? ` · ${s.orphaned_slots} slots on dead shards` : ''}`;
  if (s.replicas > 0) out += ` · ${s.replicas} backup(s) per slot${s.under_replicated_slots ? ` · ${s.under_replicated_slots} slots UNDER-REPLICATED` : ''}`;
  out += '\n';
  if (s.data) {
    const held = Object.values(s.data.held).reduce((a, h) => a + h.length, 0);
    out += `data: ${s.data.epochs} epochs × ${s.data.blocks_per_epoch} blocks · ${s.data.handed_out - held} of ${s.data.items} blocks done · ${held} in progress\n`;
  }
  out += '\n';
  const ago = (iso: string) => `${Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))} s ago`;
  out += s.shards.length
    ? table(['SHARD', 'ADDRESS', 'STATE', 'SLOTS', 'BACKS', 'HELD', 'CHECKPOINT'], s.shards.map((x) => [x.id, x.address, x.state, x.slots, x.backed_slots, mb(x.bytes), x.last_checkpoint ? `${ago(x.last_checkpoint.at)} ${x.last_checkpoint.path}` : '-']))
    : 'no shards\n';
  if (s.replica_sets.length > 0) {
    out += '\n' + table(['SLOTS', 'PRIMARY', 'BACKUPS (updates not yet acknowledged)'], s.replica_sets.map((r) => [formatRanges([r.slots]), r.primary, r.backups.map((b) => `${b.id}${b.alive ? '' : ' DEAD'} (${b.pending})`).join(', ') || 'NONE']));
  }
  for (const x of s.shards) {
    if (x.rolled_back) out += `\n${x.id}: ROLLED BACK to its checkpoint of ${x.rolled_back.to} (${x.rolled_back.path}) after a crash: pushes it acknowledged after then are lost\n`;
    if (x.lost_slots.length > 0) out += `\n${x.id}: slots ${formatRanges(x.lost_slots)} LOST (it holds no values for them; refused until it restarts from a checkpoint that has them, or \`tessera reset-slots --shard ${x.id}\`)\n`;
  }
  out += '\n';
  out += s.workers.length
    ? table(
        ['WORKER', 'STATE', 'STEP', 'EPOCH', 'LOSS', 'HELD-OUT', 'PUSHED', 'BACKEND'],
        s.workers.map((w) => [
          w.id,
          w.state,
          w.step,
          w.train_epoch + 1,
          w.loss === null ? '-' : w.loss.toFixed(4),
          w.held_out ? Object.entries(w.held_out).map(([k, v]) => `${k.replace('test_', '')} ${v.toFixed(4)}`).join(' ') : '-',
          w.pushed ? `${mb(w.pushed.wire)}${w.pushed.wire < w.pushed.raw ? ` (${(w.pushed.raw / Math.max(1, w.pushed.wire)).toFixed(1)}× less)` : ''}` : '-',
          w.backend,
        ]),
      )
    : 'no workers\n';
  return out;
}
