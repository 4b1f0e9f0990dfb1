/**
 * What a shard applies to slots it is handing to another shard, recorded in
 * the order it applies it, so the receiving shard can apply the same updates
 * in the same order to its copy of the slots' snapshot (docs/migration.md).
 * One entry per slot per push: the (worker, seq) that makes it idempotent and
 * the gradient the slot received — for a dense slot its part of the vector,
 * for a sparse table's slot the rows it updated (ids as lo/hi halves, one
 * summed gradient per row).
 */
export type LogEntry =
  | { kind: 'dense'; slot: number; worker: string; seq: number; gradient: Float32Array }
  | { kind: 'sparse'; table: string; slot: number; worker: string; seq: number; ids: Uint32Array; gradient: Float32Array };

/** What a shard tells of each update it applies to chosen slots: a move's log, or a primary's stream to its backups (replication.ts). */
export interface UpdateRecorder {
  /** Whether updates of slot `s` are recorded. */
  has(s: number): boolean;
  /** A dense slot's part of a push (a view: the recorder copies what it keeps). */
  dense(slot: number, worker: string, seq: number, gradient: Float32Array): void;
  /** A sparse slot's rows of a push (views, as for dense). */
  sparse(table: string, slot: number, worker: string, seq: number, ids: Uint32Array, gradient: Float32Array): void;
}

export class MigrationLog implements UpdateRecorder {
  private entries: LogEntry[] = [];

  constructor(readonly slots: ReadonlySet<number>) {}

  /** Whether updates of slot `s` are recorded. */
  has(s: number): boolean {
    return this.slots.has(s);
  }

  dense(slot: number, worker: string, seq: number, gradient: Float32Array): void {
    this.entries.push({ kind: 'dense', slot, worker, seq, gradient: gradient.slice() });
  }

  sparse(table: string, slot: number, worker: string, seq: number, ids: Uint32Array, gradient: Float32Array): void {
    this.entries.push({ kind: 'sparse', table, slot, worker, seq, ids: ids.slice(), gradient: gradient.slice() });
  }

  /** Entries recorded since the last take, oldest first. */
  take(): LogEntry[] {
    const out = this.entries;
    this.entries = [];
    return out;
  }

  get pending(): number {
    return this.entries.length;
  }
}
