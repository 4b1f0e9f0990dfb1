import * as grpc from '@grpc/grpc-js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { NotFoundError, TesseraError } from '../cluster/errors.js';
import { CHANNEL_OPTIONS, deadlineIn } from '../cluster/grpc-client.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { shardAdminService } from '../cluster/proto.js';
import { fromStatus } from '../cluster/status-codec.js';

/** What one shard reported of its checkpoint, and the address it was asked at. */
export interface ShardCheckpoint extends CheckpointInfo {
  address: string;
}

/** One shard's answer: its checkpoint, or the typed error it gave. */
export type CheckpointOutcome = { ok: true; checkpoint: ShardCheckpoint } | { ok: false; shardId: string; address: string; error: TesseraError };

/** How long a shard may take to write its file. Default 10 minutes. */
export const CHECKPOINT_DEADLINE_MS = 600_000;

/**
 * Asks every shard of the map to checkpoint to `directory` (a path on each
 * shard's own host), all at once, and reports each shard's outcome. Each
 * shard's file is a snapshot at one instant of that shard; the shards take
 * theirs at about the same time, not at one common instant (docs/checkpoints.md).
 *
 * @throws NotFoundError when the store holds no map yet.
 */
export async function checkpointCluster(store: MembershipStore, directory: string, deadlineMs = CHECKPOINT_DEADLINE_MS): Promise<CheckpointOutcome[]> {
  const map = await store.getMap();
  if (!map) throw new NotFoundError('the cluster has no shard map yet: no shard has joined, so there is nothing to checkpoint');
  const Ctor = shardAdminService();
  return Promise.all(
    Object.entries(map.addresses).map(async ([shardId, address]): Promise<CheckpointOutcome> => {
      const stub = new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as grpc.Client & {
        checkpoint(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: CheckpointInfo) => void): void;
      };
      try {
        const info = await new Promise<CheckpointInfo>((resolve, reject) =>
          stub.checkpoint({ directory }, { deadline: deadlineIn(deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, address)) : resolve(res!))),
        );
        return { ok: true, checkpoint: { ...info, address } };
      } catch (err) {
        return { ok: false, shardId, address, error: err as TesseraError };
      } finally {
        stub.close();
      }
    }),
  );
}
