import { readFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeHttpListener, startHttpListener } from '../../cluster/http-listener.js';
import { createLogger } from '../../cluster/log.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { PLAINTEXT, type TransportSecurity } from '../../cluster/tls/transport-security.js';
import { readStatus } from '../cluster-status.js';
import { type DashboardStatus, History } from './history.js';

const log = createLogger('dashboard');

/**
 * What the dashboard's listener lets its callers hold, as the metrics
 * listener does: a page and its fetches are a few small requests.
 */
export const DASHBOARD_LIMITS = {
  /** Open connections; more are closed as they are accepted. */
  maxConnections: 32,
  /** Milliseconds to receive a request's headers (and the whole request). */
  requestTimeoutMs: 10_000,
  /** Milliseconds an idle kept-alive connection stays open. */
  keepAliveTimeoutMs: 30_000,
  /** Bytes of request headers. */
  maxHeaderBytes: 8 << 10,
} as const;

/**
 * The page's files: kept as plain files beside the sources (`cli/dashboard/assets/`,
 * shipped in the package), read once at start; uPlot from its package.
 * From dist/cli/dashboard/ the assets are three folders up, then down again.
 */
function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const dir = fileURLToPath(new URL('../../../cli/dashboard/assets/', import.meta.url));
  const uplot = createRequire(import.meta.url).resolve('uplot');
  const uplotDir = dirname(uplot);
  const files: [string, string, string][] = [
    ['/', `${dir}page.html`, 'text/html; charset=utf-8'],
    ['/page.js', `${dir}page.js`, 'text/javascript; charset=utf-8'],
    ['/page.css', `${dir}page.css`, 'text/css; charset=utf-8'],
    ['/uplot.js', join(uplotDir, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/uplot.css', join(uplotDir, 'uPlot.min.css'), 'text/css; charset=utf-8'],
  ];
  return new Map(files.map(([path, file, type]) => [path, { type, body: readFileSync(file) }]));
}

/**
 * `tessera dashboard`'s listener: the page (`GET /`, its script, style and
 * uPlot), `GET /api/status` (the status read now) and `GET /api/history`
 * (the samples taken every `everyS` seconds, and the events between them).
 * Read-only. Under mutual TLS (the process's `--tls-dir`) it is HTTPS asking
 * for a client certificate of the cluster CA, like the metrics listener.
 */
export class DashboardServer {
  private readonly history: History;
  private timer: NodeJS.Timeout | null = null;
  /** The read in progress, shared by the requests that come meanwhile. */
  private reading: Promise<DashboardStatus> | null = null;
  private closed = false;

  private constructor(
    private readonly server: Server,
    private readonly store: MembershipStore,
    private readonly cluster: string,
    private readonly everyS: number,
    readonly port: number,
    /** host:port it listens on, the port resolved. */
    readonly address: string,
    readonly scheme: 'http' | 'https',
  ) {
    this.history = new History(everyS);
  }

  /** The URL to open. */
  get url(): string {
    return `${this.scheme}://${this.address}/`;
  }

  /**
   * Listens on `listen` (host:port; port 0 picks a free one) and starts sampling `store` every `everyS` seconds.
   * @throws InvalidArgumentError when the address is malformed or cannot be bound.
   */
  static async start(opts: { listen: string; store: MembershipStore; cluster: string; everyS: number; security?: TransportSecurity }): Promise<DashboardServer> {
    const { listen, store, cluster, everyS } = opts;
    const security = opts.security ?? PLAINTEXT;
    const assets = loadAssets();
    let self: DashboardServer | null = null;
    const handler = (req: IncomingMessage, res: ServerResponse) => void self?.answer(assets, req, res);
    const l = await startHttpListener({ listen, flag: '--listen', what: 'the dashboard', limits: DASHBOARD_LIMITS, security, handler });
    self = new DashboardServer(l.server, store, cluster, everyS, l.port, l.address, l.scheme);
    self.sample();
    return self;
  }

  /** Stops sampling and listening, and closes every connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await closeHttpListener(this.server);
  }

  /** Takes a sample into the history, then again in `everyS` seconds; a failed read is logged and skipped. */
  private sample(): void {
    void this.read()
      .then((s) => this.history.add(s))
      .catch((err: Error) => log.warn(`reading the cluster's status failed: ${err.message}`))
      .finally(() => {
        if (!this.closed) this.timer = setTimeout(() => this.sample(), this.everyS * 1000);
      });
  }

  /** The status now, with each slot's owner and each shard's load; one store read at a time. */
  private read(): Promise<DashboardStatus> {
    this.reading ??= (async () => {
      const [status, map, shards] = await Promise.all([readStatus(this.store, this.cluster), this.store.getMap(), this.store.members('shard')]);
      return { ...status, at: Date.now(), owners: map?.owners ?? [], load: Object.fromEntries(shards.map((m) => [m.id, m.load ?? []])) };
    })().finally(() => (this.reading = null));
    return this.reading;
  }

  private async answer(assets: Map<string, { type: string; body: Buffer }>, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(res, req, 405, 'text/plain; charset=utf-8', `${req.method ?? 'this method'} is not allowed; the dashboard is read-only\n`);
    }
    // Browsers ask for an icon unasked: none, rather than a 404 in the console.
    if (path === '/favicon.ico') return send(res, req, 204, 'image/x-icon', '');
    const asset = assets.get(path);
    if (asset) return send(res, req, 200, asset.type, asset.body);
    if (path === '/api/history') return send(res, req, 200, 'application/json', JSON.stringify(this.history.snapshot()));
    if (path === '/api/status') {
      try {
        return send(res, req, 200, 'application/json', JSON.stringify(await this.read()));
      } catch (err) {
        return send(res, req, 503, 'application/json', JSON.stringify({ error: (err as Error).message }));
      }
    }
    send(res, req, 404, 'text/plain; charset=utf-8', `not found: the dashboard serves /, /api/status and /api/history\n`);
  }
}

function send(res: ServerResponse, req: IncomingMessage, code: number, type: string, body: string | Buffer): void {
  // The numbers change with every read: never from a cache.
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
