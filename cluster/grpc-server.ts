import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import { loadProtos } from './proto.js';
import { createLogger } from './log.js';
import { DEFAULT_LISTENER_LIMITS, type ListenerLimits } from './listener-limits.js';
import { type ServiceRules, guardService } from './tls/authorization.js';
import { type TransportSecurity, processSecurity, serverCredentials } from './tls/transport-security.js';
import { FLOW_CONTROL_WINDOW_BYTES, MAX_MESSAGE_BYTES, withWireEncoders } from './wire/dense-values.js';
import { refuseMalformedRequests, withRequestDecodeCheck } from './wire/malformed-requests.js';

const log = createLogger('grpc-server');

/** How long a keepalive ping the server sends may go unanswered before the connection is cut: gRPC's own default, or the idle time where that is shorter. */
const KEEPALIVE_TIMEOUT_MS = 20_000;

/**
 * A gRPC server as every Tessera role runs it: message limits set on purpose,
 * HTTP/2 flow-control windows raised, hot responses encoded by cluster/wire/dense-values.ts,
 * the standard `grpc.health.v1.Health` service and server reflection served
 * beside the role's own services.
 */
export interface TesseraGrpcServer {
  server: grpc.Server;
  health: HealthImplementation;
  /** The port actually bound (useful with port 0). */
  port: number;
  /** Marks a service (and the whole server, '') as serving or not. */
  setServing(services: string[], serving: ServingStatus): void;
  close(graceMs?: number): Promise<void>;
}

/** Channel options shared by servers and clients: 16 MiB messages, keepalive without calls. */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
};

/** A service a server hosts; under mTLS each call is first checked against `rules` (cluster/tls/authorization.ts). */
export interface HostedService {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
  name: string;
  rules: ServiceRules;
}

/**
 * Starts a server on `address` with `services`, secured as `security` says
 * (plaintext, or mutual TLS: every client shows a certificate of the cluster
 * CA, and each call is checked against its service's rules; health and
 * reflection need a certificate, any role).
 */
export async function startGrpcServer(address: string, services: HostedService[], security: TransportSecurity = processSecurity(), limits: ListenerLimits = DEFAULT_LISTENER_LIMITS): Promise<TesseraGrpcServer> {
  // A request that does not decode is refused INVALID_ARGUMENT, not answered INTERNAL (cluster/wire/malformed-requests.ts).
  const server = new grpc.Server({
    ...SERVER_OPTIONS,
    'grpc.max_connection_idle_ms': limits.idleMs,
    'grpc.max_concurrent_streams': limits.maxStreamsPerConnection,
    // A connection with a call open is never idle to grpc-js: a ping every
    // idleMs, cut when unanswered, ends one whose client has gone mid-call
    // (half-open), which held what its calls held for ever.
    'grpc.keepalive_time_ms': limits.idleMs,
    'grpc.keepalive_timeout_ms': Math.min(limits.idleMs, KEEPALIVE_TIMEOUT_MS),
    interceptors: [refuseMalformedRequests],
  });
  raiseFlowControlWindows(server, FLOW_CONTROL_WINDOW_BYTES, limits);
  for (const s of services) server.addService(withWireEncoders(withRequestDecodeCheck(s.definition)), guardService(s.name, s.definition, s.implementation, s.rules, security));
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(services.map((s) => [s.name, 'NOT_SERVING' as const])) });
  health.addToServer(server);
  new ReflectionService(loadProtos().definition).addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, serverCredentials(security), (err, p) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(p))),
  );
  return {
    server,
    health,
    port,
    setServing(names, serving) {
      for (const n of ['', ...names]) health.setStatus(n, serving);
    },
    close(graceMs = 2000) {
      return shutdown(server, graceMs);
    },
  };
}

/** Stops `server`: calls in progress get `graceMs` to finish, then the rest are cut off. */
export function shutdown(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    timer.unref();
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Raises the HTTP/2 flow-control windows of the connections `server` accepts,
 * and, through the same hook, caps how many it keeps open and cuts those
 * whose peer never closes ({@link cutOnceEnded}).
 *
 * Why: a pushed gradient flows client → server, so the server's receive window
 * paces it. HTTP/2 starts every stream and connection at 64 KiB, and on a
 * 2-core loopback host that held a 64 MB push to ≈ 150–300 MB/s; clients
 * raise their own window with `grpc-node.flow_control_window`, but grpc-js
 * 1.14 has no server option for it.
 *
 * How (a contained workaround over grpc-js internals, checked at run time):
 * grpc-js passes its private `commonServerOptions` to `http2.createServer`, so
 * its `settings.initialWindowSize` sets every stream's window; the connection
 * window is raised per session with `setLocalWindowSize`, on each http2 server
 * grpc-js creates through its `createHttp2Server` method. If a grpc-js upgrade
 * renames either, the server keeps working with HTTP/2's default windows and
 * says so at debug level. Remove once grpc-js exposes a server window option.
 */
function raiseFlowControlWindows(server: grpc.Server, windowBytes: number, limits: ListenerLimits): void {
  const internals = server as unknown as {
    commonServerOptions?: http2.ServerOptions;
    createHttp2Server?: (...args: unknown[]) => http2.Http2Server;
  };
  const create = internals.createHttp2Server;
  if (typeof internals.commonServerOptions !== 'object' || typeof create !== 'function') {
    log.debug('grpc-js internals changed: server flow-control windows stay at the HTTP/2 default of 64 KiB');
    return;
  }
  internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: windowBytes };
  internals.createHttp2Server = (...args: unknown[]) => {
    const h2 = create.apply(server, args);
    // The connection cap (ListenerLimits): grpc-js has no option for it; its HTTP/2 server is a net.Server.
    h2.maxConnections = limits.maxConnections;
    h2.on(h2 instanceof tls.Server ? 'secureConnection' : 'connection', (socket: net.Socket) => cutOnceEnded(socket, limits.idleMs));
    h2.on('session', (session: http2.ServerHttp2Session) => {
      try {
        session.setLocalWindowSize(windowBytes);
      } catch (err) {
        log.debug(`cannot raise a connection's flow-control window: ${(err as Error).message}`);
      }
    });
    return h2;
  };
}

/**
 * Destroys `socket` once this side has ended it and the peer has not closed
 * its own within `idleMs`. grpc-js closes an idle connection gracefully, and
 * Node then ends the socket and waits for the peer to close: for ever, from a
 * client that has gone or never reads, and the connection stays counted
 * against the cap. Checked every `idleMs`, as the socket's own timer does not
 * see the traffic Node's HTTP/2 session reads and writes on it.
 */
function cutOnceEnded(socket: net.Socket, idleMs: number): void {
  socket.setTimeout(idleMs);
  socket.on('timeout', () => {
    if (socket.writableEnded) socket.destroy();
    else socket.setTimeout(idleMs);
  });
}
