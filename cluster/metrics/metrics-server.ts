import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createSecureServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { type Registry } from 'prom-client';
import { InvalidArgumentError } from '../errors.js';
import { splitHostPort } from '../address.js';
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
    const { host, port } = splitHostPort(listen);
    if (!listen.includes(':') || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new InvalidArgumentError(`--metrics takes HOST:PORT (e.g. 0.0.0.0:9400, or 127.0.0.1:0 for a free port), got "${listen}"`);
    }
    const options = { maxHeaderSize: METRICS_LIMITS.maxHeaderBytes, requestTimeout: METRICS_LIMITS.requestTimeoutMs, headersTimeout: METRICS_LIMITS.requestTimeoutMs, keepAliveTimeout: METRICS_LIMITS.keepAliveTimeoutMs };
    const handler = (req: IncomingMessage, res: ServerResponse) => void answer(registry, req, res);
    let server: Server;
    if (security.kind === 'mtls') {
      const { material } = security;
      const secure = createSecureServer({ ...options, ...material.current, requestCert: true, rejectUnauthorized: true }, handler);
      const stop = material.onChange((files) => secure.setSecureContext({ ...files }));
      secure.on('close', stop);
      secure.on('tlsClientError', (err) => log.debug(`metrics TLS handshake refused: ${err.message}`));
      server = secure;
    } else {
      server = createServer(options, handler);
    }
    server.maxConnections = METRICS_LIMITS.maxConnections;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host || undefined, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: Error) => {
      throw new InvalidArgumentError(`cannot serve metrics on ${listen}: ${err.message}; pick another --metrics address`);
    });
    server.on('error', (err) => log.warn(`metrics listener on ${listen}: ${err.message}`));
    const bound = (server.address() as AddressInfo).port;
    const shown = host.includes(':') ? `[${host}]` : host || '0.0.0.0';
    return new MetricsServer(server, bound, `${shown}:${bound}`, security.kind === 'mtls' ? 'https' : 'http');
  }

  /** Stops listening and closes every connection, kept-alive ones included. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
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
