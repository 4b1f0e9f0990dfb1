import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import { loadProtos } from './proto.js';
import { MAX_MESSAGE_BYTES } from './wire.js';

/**
 * A gRPC server as every Tessera role runs it: message limits set on purpose,
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

export async function startGrpcServer(
  address: string,
  services: { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation; name: string }[],
): Promise<TesseraGrpcServer> {
  const server = new grpc.Server(SERVER_OPTIONS);
  for (const s of services) server.addService(s.definition, s.implementation);
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(services.map((s) => [s.name, 'NOT_SERVING' as const])) });
  health.addToServer(server);
  new ReflectionService(loadProtos().definition).addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(p))),
  );
  return {
    server,
    health,
    port,
    setServing(names, serving) {
      for (const n of ['', ...names]) health.setStatus(n, serving);
    },
    close(graceMs = 2000) {
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
    },
  };
}
