import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * Loads the wire contract in `proto/tessera/v1/`. Every role uses these
 * definitions, so there is one place that decides how messages map to
 * JavaScript: 64-bit integers as numbers (all counts stay below 2^53), enums as
 * names, `bytes` as Buffers, defaults filled in.
 */

export const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

/** The folder that holds `tessera/v1/*.proto`, found from this file whether run from source or from `dist/`. */
export function protoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'tessera', 'v1', 'shard.proto'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('cannot find proto/tessera/v1/shard.proto above ' + dirname(fileURLToPath(import.meta.url)));
}

export const PROTO_FILES = ['tessera/v1/shard.proto', 'tessera/v1/sparse.proto', 'tessera/v1/admin.proto', 'tessera/v1/membership.proto'];

let cached: { definition: protoLoader.PackageDefinition; pkg: grpc.GrpcObject } | undefined;

/** The package definition (for reflection) and the loaded `tessera.v1` services. */
export function loadProtos(): { definition: protoLoader.PackageDefinition; pkg: grpc.GrpcObject } {
  if (!cached) {
    const definition = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
    cached = { definition, pkg: grpc.loadPackageDefinition(definition) };
  }
  return cached;
}

function service(name: string): grpc.ServiceClientConstructor {
  const v1 = (loadProtos().pkg['tessera'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
  return v1[name] as grpc.ServiceClientConstructor;
}

/** Constructor of a `tessera.v1.Shard` client; its `.service` is the server-side definition. */
export function shardService(): grpc.ServiceClientConstructor {
  return service('Shard');
}

/** Constructor of a `tessera.v1.SparseShard` client (sparse tables); its `.service` is the server-side definition. */
export function sparseShardService(): grpc.ServiceClientConstructor {
  return service('SparseShard');
}

/** Constructor of a `tessera.v1.ShardAdmin` client (checkpoints); its `.service` is the server-side definition. */
export function shardAdminService(): grpc.ServiceClientConstructor {
  return service('ShardAdmin');
}

/** Constructor of a `tessera.v1.Membership` client. */
export function membershipService(): grpc.ServiceClientConstructor {
  return service('Membership');
}

export const SHARD_SERVICE_NAME = 'tessera.v1.Shard';
export const SPARSE_SHARD_SERVICE_NAME = 'tessera.v1.SparseShard';
export const SHARD_ADMIN_SERVICE_NAME = 'tessera.v1.ShardAdmin';
export const MEMBERSHIP_SERVICE_NAME = 'tessera.v1.Membership';
