import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { status as grpcStatus } from '@grpc/grpc-js';
import { splitHostPort } from '../../cluster/address.js';
import { InvalidArgumentError, NotReadyError, ResourceExhaustedError, TesseraError } from '../../cluster/errors.js';
import { createLogger } from '../../cluster/log.js';
import { ModelNotFoundError } from '../errors.js';
import {
  checkModelName,
  decodeJsonInfer,
  decodePredict,
  encodeJsonInfer,
  encodePredict,
  modelMetadata,
  resolveVersion,
  serverMetadata,
  type InferenceBackend,
  type RequestCounters,
} from './inference-request.js';

const log = createLogger('serve-http');

/** Largest request body unless the server is told otherwise: 8 MiB (about 2 M FP32 values as JSON). */
export const DEFAULT_MAX_BODY_BYTES = 8 << 20;

/**
 * Idle keep-alive connections are kept this long: longer than the 60 s idle
 * timeout of common load balancers, so they, not we, close idle connections
 * (which avoids a request racing our close).
 */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/** The REST edge, listening. */
export interface InferenceHttpServer {
  server: http.Server;
  /** `host:port` actually bound (the port is real when 0 was asked for). */
  address: string;
  /** Stops accepting, lets requests in progress finish for up to `graceMs`, then cuts the rest. */
  close(graceMs?: number): Promise<void>;
}

/** An answer: its status, its JSON body, and for 405 the methods allowed. */
type Reply = { status: number; body: object; allow?: string };
type Handler = (req: http.IncomingMessage, params: string[]) => Promise<Reply>;
interface Route {
  method: 'GET' | 'POST';
  pattern: RegExp;
  handler: Handler;
}

/**
 * Serves the Open Inference Protocol's REST routes (`/v2/...`) and
 * TensorFlow Serving's (`/v1/models/...`) for one model over `node:http`.
 * Every answer is JSON; errors are `{"error": "<message>"}` with 400 (bad
 * input), 404 (unknown model, version or path), 405 (wrong method), 413 (body
 * over `maxBodyBytes`, or more rows than the backend takes), 503 (no version
 * loaded). Bad input never takes the server down.
 */
export async function startHttpServer(address: string, backend: InferenceBackend, options: { maxBodyBytes: number }, counters: RequestCounters): Promise<InferenceHttpServer> {
  const routes = routesFor(backend, options.maxBodyBytes);
  const server = http.createServer({ keepAlive: true }, (req, res) => void handle(routes, req, res, counters));
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // A client that goes away mid-request is its problem, not a crash of ours.
  server.on('clientError', (err, socket) => {
    log.debug(`client error: ${err.message}`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  const { host, port } = splitHostPort(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${address}: ${err.message}`)));
    server.listen(port, host || undefined, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const boundHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    server,
    address: `${boundHost}:${bound.port}`,
    close(graceMs = 2000) {
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}

async function handle(routes: Route[], req: http.IncomingMessage, res: http.ServerResponse, counters: RequestCounters): Promise<void> {
  counters.requests++;
  let reply: Reply;
  try {
    reply = await route(routes, req);
  } catch (err) {
    reply = errorReply(err, req);
  }
  if (reply.status >= 400) counters.errors++;
  send(res, reply);
}

async function route(routes: Route[], req: http.IncomingMessage): Promise<Reply> {
  const path = (req.url ?? '/').split('?')[0]!;
  const allowed: string[] = [];
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    if (r.method !== req.method) {
      allowed.push(r.method);
      continue;
    }
    let params: string[];
    try {
      params = m.slice(1).map((p) => (p === undefined ? '' : decodeURIComponent(p)));
    } catch {
      throw new InvalidArgumentError(`the path ${path} is not validly percent-encoded`);
    }
    return r.handler(req, params);
  }
  if (allowed.length) return { status: 405, body: { error: `${req.method} ${path} is not allowed; use ${allowed.join(' or ')}` }, allow: allowed.join(', ') };
  throw new ModelNotFoundError(`no route ${path}; this server answers /v2/... (Open Inference Protocol) and /v1/models/... (TensorFlow Serving)`);
}

function routesFor(backend: InferenceBackend, maxBodyBytes: number): Route[] {
  const name = backend.modelName;
  const json = async (req: http.IncomingMessage): Promise<unknown> => {
    const body = await readBody(req, maxBodyBytes);
    try {
      return JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new InvalidArgumentError(`the request body is not valid JSON: ${(err as Error).message}`);
    }
  };
  const ok = (body: object): Reply => ({ status: 200, body });
  const MODEL = '/v2/models/([^/]+)(?:/versions/([^/]+))?';
  const V1_MODEL = '/v1/models/([^/:]+)(?:/versions/([^/:]+))?';
  return [
    { method: 'GET', pattern: /^\/v2\/health\/live$/, handler: async () => ok({ live: true }) },
    {
      method: 'GET',
      pattern: /^\/v2\/health\/ready$/,
      handler: async () => {
        if (!backend.current()) throw new NotReadyError(`model "${name}" has no version loaded yet`);
        return ok({ ready: true });
      },
    },
    { method: 'GET', pattern: /^\/v2\/?$/, handler: async () => ok(serverMetadata()) },
    { method: 'GET', pattern: new RegExp(`^${MODEL}$`), handler: async (_req, [n, v]) => ok(modelMetadata(name, resolveVersion(name, backend.current(), n!, v))) },
    {
      method: 'GET',
      pattern: new RegExp(`^${MODEL}/ready$`),
      handler: async (_req, [n, v]) => {
        resolveVersion(name, backend.current(), n!, v);
        return ok({ name, ready: true });
      },
    },
    {
      // Tessera's own counters at the statistics extension's path (its body is not Triton's).
      method: 'GET',
      pattern: new RegExp(`^${MODEL}/stats$`),
      handler: async (_req, [n]) => {
        checkModelName(name, n!);
        return ok(backend.statistics());
      },
    },
    {
      method: 'POST',
      pattern: new RegExp(`^${MODEL}/infer$`),
      handler: async (req, [n, v]) => {
        const body = await json(req);
        let id: string | undefined;
        const result = await backend.infer(n!, v, (model) => {
          const decoded = decodeJsonInfer(body, model, backend.maxRows);
          id = decoded.id;
          return decoded.input;
        });
        return ok(encodeJsonInfer(name, result, id));
      },
    },
    {
      method: 'GET',
      pattern: new RegExp(`^${V1_MODEL}$`),
      handler: async (_req, [n, v]) => ok({ model_version_status: versionStatus(backend, n!, v!) }),
    },
    {
      method: 'POST',
      pattern: new RegExp(`^${V1_MODEL}:predict$`),
      handler: async (req, [n, v]) => {
        const body = await json(req);
        let columnar = false;
        const result = await backend.infer(n!, v, (model) => {
          const decoded = decodePredict(body, model, backend.maxRows);
          columnar = decoded.columnar;
          return decoded.input;
        });
        return ok(encodePredict(result, columnar));
      },
    },
  ];
}

/** TensorFlow Serving's version status: the served version AVAILABLE, versions that failed to load END with their error. */
function versionStatus(backend: InferenceBackend, requestedName: string, requestedVersion: string): object[] {
  const name = backend.modelName;
  checkModelName(name, requestedName);
  const { current, failures } = backend.status();
  const list = [
    ...(current !== undefined ? [{ version: String(current), state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }] : []),
    ...failures.map((f) => ({ version: String(f.version), state: 'END', status: { error_code: 'UNKNOWN', error_message: f.message } })),
  ];
  if (requestedVersion) {
    const one = list.filter((s) => s.version === requestedVersion);
    if (one.length === 0) {
      throw new ModelNotFoundError(`version "${requestedVersion}" of model "${name}" is not served; ${current !== undefined ? `the served version is ${current}` : 'no version is loaded yet'}`);
    }
    return one;
  }
  if (list.length === 0) throw new NotReadyError(`model "${name}" has no version loaded yet`);
  return list;
}

/**
 * The request body, refused with ResourceExhaustedError as soon as it passes
 * `max` bytes (at once when Content-Length says so): the rest is never read,
 * and the 413 goes out with `Connection: close` so the socket is dropped.
 */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const tooLarge = (what: string) => new ResourceExhaustedError(`the request body is ${what}; this server takes at most ${max} bytes (its maxBodyBytes option)`);
  return new Promise<Buffer>((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > max) {
      reject(tooLarge(`${declared} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(tooLarge(`over ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}

/** The HTTP status of a typed error: the same codes the gRPC edge sends, in HTTP's words. */
export function httpStatusOf(err: unknown): number {
  if (!(err instanceof TesseraError)) return 500;
  switch (err.code) {
    case grpcStatus.INVALID_ARGUMENT:
      return 400;
    case grpcStatus.NOT_FOUND:
      return 404;
    case grpcStatus.RESOURCE_EXHAUSTED:
      return 413;
    case grpcStatus.UNAVAILABLE:
      return 503;
    default:
      return 500;
  }
}

function errorReply(err: unknown, req: http.IncomingMessage): Reply {
  const status = httpStatusOf(err);
  if (status === 500) {
    log.error(`${req.method} ${req.url} failed: ${(err as Error)?.stack ?? String(err)}`);
    return { status, body: { error: `internal error: ${(err as Error)?.message ?? String(err)}` } };
  }
  return { status, body: { error: (err as Error).message } };
}

function send(res: http.ServerResponse, reply: Reply): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(reply.body);
  const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
  if (reply.allow) headers['allow'] = reply.allow;
  // A request whose body was not read to its end leaves bytes on the socket: drop the connection rather than read them.
  if (!res.req.complete) headers['connection'] = 'close';
  res.writeHead(reply.status, headers);
  res.end(text);
}
