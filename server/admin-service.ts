import type * as grpc from '@grpc/grpc-js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { toStatus } from '../cluster/status-codec.js';

/** `tessera.v1.ShardAdmin` over the shard server's own operations: the transport edge, where typed errors become statuses. */
export function shardAdminImplementation(checkpoint: (directory: string, atStep: number) => Promise<CheckpointInfo>): grpc.UntypedServiceImplementation {
  return {
    checkpoint: (call: grpc.ServerUnaryCall<{ directory: string; atStep: number }, object>, callback: grpc.sendUnaryData<object>) => {
      checkpoint(call.request.directory, call.request.atStep).then(
        (info) => callback(null, info),
        (err: unknown) => callback(toStatus(err)),
      );
    },
  };
}
