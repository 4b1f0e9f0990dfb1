/** What a shard reports of a checkpoint it wrote (`tessera.v1.CheckpointInfo`, proto/tessera/v1/admin.proto). */
export interface CheckpointInfo {
  shardId: string;
  /** The file written, as the shard's host names it. */
  path: string;
  /** The shard's map epoch when the snapshot was taken. */
  epoch: number;
  /** Dense slots and sparse rows in the file. */
  slots: number;
  rows: number;
  bytes: number;
  /** Under bsp: the steps applied. */
  closedSteps: number;
  /** How long serving paused for the snapshot, and the whole call. */
  snapshotMs: number;
  totalMs: number;
}
