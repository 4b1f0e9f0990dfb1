import { InvalidArgumentError, ResourceExhaustedError } from '../cluster/errors.js';
import { type IdGroups, rowCount } from '../cluster/sparse-routing.js';
import { type SparseTable } from './sparse-table.js';

/**
 * The cap on the rows one sparse table holds on one shard (`tessera shard
 * --max-sparse-rows`, docs/security.md "Limits"). Rows are created only by
 * pushes (a pull of a row not held answers its first values and stores
 * nothing), so the cap is checked where a push is admitted: a push that would
 * take a table past it is refused whole, before anything is applied, and
 * pushes to rows already held, and pulls, go on as before.
 *
 * Rows a shard receives from another (a slot move, its log) or reads from a
 * checkpoint are taken whatever the cap: they were pushed, and acknowledged,
 * under the cap of the shard that held them, and refusing them would lose
 * them. A table above the cap that way creates no further rows until slots
 * move away or the cap is raised.
 */

/**
 * Default rows per table per shard. Measured over 1 024 slots: at dim 64
 * under adagrad (values and one state array, 512 bytes a row) a full table
 * holds 4.6 GB, 4.1 GB of it values and state, the rest ids, update counts,
 * the id index and room to grow; at dim 8 (ctr's table) 0.84 GB. One such
 * dim-64 table fits a shard pod of deploy/base (8 GiB limit) beside its dense
 * slice. Just under 2^23 on purpose: a slot's arrays double as they fill, and
 * with a power-of-two number of slots on a shard 8 000 000 rows leave every
 * slot just below a doubling, not just past one (8 000 000 rows of dim 8 hold
 * 0.84 GB, 8 400 000 hold 1.29 GB).
 */
export const DEFAULT_MAX_SPARSE_ROWS = 8_000_000;

/** The flag that sets the cap, named in every refusal. */
export const MAX_SPARSE_ROWS_FLAG = '--max-sparse-rows';

/**
 * Throws if applying a push of the grouped rows `g` to `table` would create
 * rows past `cap`. Slots for which `applied(slot)` is true (they applied this
 * (worker, seq) already) create nothing and are not counted.
 * @throws ResourceExhaustedError naming the table, the shard, the cap and its flag.
 */
export function checkRowCap(table: SparseTable, g: IdGroups, applied: (slot: number) => boolean, cap: number, shardId: string): void {
  const held = table.rows;
  const rows = rowCount(g);
  // Most pushes: even if every row were new, the table stays within the cap.
  if (held + rows <= cap) return;
  let created = 0;
  for (let a = 0; a < rows; ) {
    const s = g.slots[a]!;
    let b = a;
    while (b < rows && g.slots[b] === s) b++;
    if (!applied(s)) {
      const slot = table.slot(s);
      for (let r = a; r < b; r++) if (!slot || slot.find(g.ids[2 * r]!, g.ids[2 * r + 1]!) < 0) created++;
    }
    a = b;
  }
  if (created === 0 || held + created <= cap) return;
  throw new ResourceExhaustedError(
    `sparse table ${table.name} is full on shard ${shardId}: it holds ${held} rows and this push would create ${created} more, over the cap of ${cap} rows per table per shard (${MAX_SPARSE_ROWS_FLAG}); nothing was applied. ` +
      `Pushes to rows it holds, and pulls, still work; raise ${MAX_SPARSE_ROWS_FLAG} or spread the table over more shards`,
  );
}

/**
 * Checks a cap given by an option, once, at start. Returns it.
 * @throws InvalidArgumentError unless it is a whole number of at least 1.
 */
export function validRowCap(cap: number): number {
  if (!(Number.isSafeInteger(cap) && cap >= 1)) throw new InvalidArgumentError(`the cap on rows per sparse table (${MAX_SPARSE_ROWS_FLAG}) must be a whole number of at least 1; got ${cap}`);
  return cap;
}
