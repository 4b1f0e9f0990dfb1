import { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type Registry } from 'prom-client';
import { closeHttpListener, startHttpListener } from '../http-listener.js';
import { createLogger } from '../log.js';
import { PLAINTEXT, type TransportSecurity } from '../tls/transport-security.js';

const log = createLogger('metrics');

/** The only path served: Prometheus's default `metrics_path`. */
export const METRICS_PATH = '/metrics';

/**
 * What a metrics listener lets its callers hold: it is plaintext and answers
 * anyone who reaches it (docs/operations.md, "Metrics"), so a scraper that
 * misbehaves, or something that is not a scraper, holds at most this much.
 * A scrape is one small request; Prometheus keeps one connection per target.
 */
export const METRICS_LIMITS = {
  /** Open connections; more are closed as they are accepted. */
  maxConnections: 16,
  /** Milliseconds to receive a request's headers (and the whole request). */
  requestTimeoutMs: 10_000,
  /** Milliseconds an idle kept-alive connection stays open. */
  keepAliveTimeoutMs: 30_000,
  /** Bytes of request headers. */
  maxHeaderBytes: 8 << 10,
} as const;

/**
 * Serves a registry in Prometheus's text format on `GET /metrics` (and
 * `HEAD`); every other path is 404, every other method on `/metrics` 405.
 * Read-only: nothing a caller sends changes anything. Under mutual TLS (the
 * process's `--tls-dir`) it is HTTPS and, like every Tessera listener, asks
 * for a client certificate of the cluster CA (any role may read), taking
 * rotated files without a restart; otherwise plain HTTP. Started by
 * `--metrics HOST:PORT` of `tessera shard` and `tessera worker`; off unless
 * asked for.
 */
export class MetricsServer {
  private constructor(
    private readonly server: Server,
    /** The bound port (the one asked for, or the free one port 0 picked). */
    readonly port: number,
    /** host:port it listens on, the port resolved. */
    readonly address: string,
    /** `https` under mutual TLS, else `http`. */
    readonly scheme: 'http' | 'https',
  ) {}

  /**
   * Listens on `listen` (host:port; port 0 picks a free one).
   * @throws InvalidArgumentError when the address is malformed or cannot be bound.
   */
  static async start(listen: string, registry: Registry, security: TransportSecurity = PLAINTEXT): Promise<MetricsServer> {
    const handler = (req: IncomingMessage, res: ServerResponse) => void answer(registry, req, res);
    const l = await startHttpListener({ listen, flag: '--metrics', what: 'metrics', limits: METRICS_LIMITS, security, handler });
    return new MetricsServer(l.server, l.port, l.address, l.scheme);
  }

  /** Stops listening and closes every connection, kept-alive ones included. */
  async close(): Promise<void> {
    await closeHttpListener(this.server);
  }
}

async function answer(registry: Registry, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '').split('?')[0];
  if (path !== METRICS_PATH) return plain(res, 404, `not found: metrics are at ${METRICS_PATH}\n`);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return plain(res, 405, `${req.method ?? 'this method'} is not allowed on ${METRICS_PATH}; use GET\n`);
  }
  try {
    const body = await registry.metrics();
    res.writeHead(200, { 'Content-Type': registry.contentType, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (err) {
    // A collect callback failed: say so rather than serve a partial page as if whole.
    log.warn(`collecting metrics failed: ${(err as Error).message}`);
    plain(res, 500, `collecting metrics failed: ${(err as Error).message}\n`);
  }
}

function plain(res: ServerResponse, code: number, text: string): void {
  res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
