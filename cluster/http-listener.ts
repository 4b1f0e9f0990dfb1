import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createSecureServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { splitHostPort } from './address.js';
import { InvalidArgumentError } from './errors.js';
import { createLogger } from './log.js';
import { type TransportSecurity } from './tls/transport-security.js';

const log = createLogger('http');

/** What a small read-only HTTP listener (metrics, the dashboard) lets its callers hold. */
export interface HttpListenerLimits {
  /** Open connections; more are closed as they are accepted. */
  maxConnections: number;
  /** Milliseconds to receive a request's headers (and the whole request). */
  requestTimeoutMs: number;
  /** Milliseconds an idle kept-alive connection stays open. */
  keepAliveTimeoutMs: number;
  /** Bytes of request headers. */
  maxHeaderBytes: number;
}

/** A bound listener: the server, the port (the one asked for, or the free one port 0 picked), host:port with it, and the scheme. */
export interface HttpListener {
  server: Server;
  port: number;
  address: string;
  scheme: 'http' | 'https';
}

/**
 * Listens on `listen` (host:port; port 0 picks a free one) with `handler`,
 * bounded by `limits`. Under mutual TLS it is HTTPS asking for a client
 * certificate of the cluster CA, taking rotated files without a restart;
 * otherwise plain HTTP. `flag` and `what` name the option and the listener in
 * messages.
 * @throws InvalidArgumentError when the address is malformed or cannot be bound.
 */
export async function startHttpListener(o: { listen: string; flag: string; what: string; limits: HttpListenerLimits; security: TransportSecurity; handler: (req: IncomingMessage, res: ServerResponse) => void }): Promise<HttpListener> {
  const { listen, flag, what, limits, security, handler } = o;
  const { host, port } = splitHostPort(listen);
  if (!listen.includes(':') || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`${flag} takes HOST:PORT (or 127.0.0.1:0 for a free port), got "${listen}"`);
  }
  const options = { maxHeaderSize: limits.maxHeaderBytes, requestTimeout: limits.requestTimeoutMs, headersTimeout: limits.requestTimeoutMs, keepAliveTimeout: limits.keepAliveTimeoutMs };
  let server: Server;
  if (security.kind === 'mtls') {
    const { material } = security;
    const secure = createSecureServer({ ...options, ...material.current, requestCert: true, rejectUnauthorized: true }, handler);
    const stop = material.onChange((files) => secure.setSecureContext({ ...files }));
    secure.on('close', stop);
    secure.on('tlsClientError', (err) => log.debug(`${what}: TLS handshake refused: ${err.message}`));
    server = secure;
  } else {
    server = createServer(options, handler);
  }
  server.maxConnections = limits.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host || undefined, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: Error) => {
    throw new InvalidArgumentError(`cannot serve ${what} on ${listen}: ${err.message}; pick another ${flag} address`);
  });
  server.on('error', (err) => log.warn(`${what} on ${listen}: ${err.message}`));
  const bound = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host || '0.0.0.0';
  return { server, port: bound, address: `${shown}:${bound}`, scheme: security.kind === 'mtls' ? 'https' : 'http' };
}

/** Stops listening and closes every connection, kept-alive ones included. */
export async function closeHttpListener(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}
