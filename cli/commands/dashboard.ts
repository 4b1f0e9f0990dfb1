import { checkPlaintextListener, processSecurity } from '../../cluster/tls/transport-security.js';
import { splitHostPort } from '../../cluster/address.js';
import { createLogger } from '../../cluster/log.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { untilSignal } from '../signals.js';
import { DashboardServer } from '../dashboard/dashboard-server.js';

const log = createLogger('cli');

/** Defaults of `tessera dashboard`. */
export const DASHBOARD_DEFAULTS = {
  listen: '127.0.0.1:7080',
  everyS: 2,
} as const;

export const dashboardCommand: Command = {
  name: 'dashboard',
  summary: 'Serve a live page of the cluster (shards, load per slot, throughput, workers, loss and held-out curves, moves and checkpoints), refreshed by itself, until Ctrl-C.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'listen', type: 'string', metavar: 'HOST:PORT', default: DASHBOARD_DEFAULTS.listen, description: 'where to serve the page (port 0: a free one)' },
    { name: 'every-s', type: 'number', metavar: 'S', default: DASHBOARD_DEFAULTS.everyS, description: 'seconds between samples and page refreshes (at least 0.5; the history keeps the last 900)' },
    { name: 'insecure', type: 'boolean', description: 'serve plaintext on a non-loopback --listen address (without it, that needs --tls-dir; a network you trust)' },
  ],
  async run(o) {
    const everyS = o['every-s'] as number;
    if (!(everyS >= 0.5)) throw new UsageError('--every-s takes the seconds between samples, at least 0.5');
    const listen = o['listen'] as string;
    const store = openStore(o);
    try {
      // openStore set the process's security from --tls-dir; the page is served under the same.
      const security = processSecurity();
      checkPlaintextListener(security, splitHostPort(listen).host, Boolean(o['insecure']), 'the dashboard');
      const server = await DashboardServer.start({ listen, store, cluster: o['cluster'] as string, everyS, security });
      process.stdout.write(`dashboard on ${server.url} (Ctrl-C stops)\n`);
      log.debug(`dashboard on ${server.url}, sampling every ${everyS} s`);
      await untilSignal();
      await server.close();
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
