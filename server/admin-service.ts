import type * as grpc from '@grpc/grpc-js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { toStatus } from '../cluster/status-codec.js';

/** `tessera.v1.ShardAdmin` over the shard server's own operations: the transport edge, where typed errors become statuses. */
export function shardAdminImplementation(checkpoint: (directory: string) => Promise<CheckpointInfo>): grpc.UntypedServiceImplementation {
  return {
    checkpoint: (call: grpc.ServerUnaryCall<{ directory: string }, object>, callback: grpc.sendUnaryData<object>) => {
      checkpoint(call.request.directory).then(
        (info) => callback(null, info),
        (err: unknown) => callback(toStatus(err)),
      );
    },
  };
}
