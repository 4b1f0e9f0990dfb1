/**
 * What a shard accepts as the worker half of a push's `(worker_id, seq)`, and
 * as the worker a clocked pull counts: a worker id is remembered per slot (the
 * exactly-once record), written into every checkpoint and slot move, and
 * logged, so it is short and printable; a sequence number is never more
 * than a day ahead of the clock that clients number pushes from, so no push
 * can make a worker's later ones look applied.
 */

/** Longest worker id a shard accepts. */
export const MAX_WORKER_ID_LENGTH = 128;

/**
 * Sequence numbers a client takes per millisecond of its clock: it numbers
 * its pushes from `Date.now() × 256` on ({@link firstSeq}), so a worker
 * restarted under the same id starts above every number it used before,
 * unless it had averaged more than 256 pushes a millisecond since it started
 * (each push is a round trip to a shard; none comes near).
 */
export const SEQ_PER_MS = 256;

/** How far ahead of a shard's clock a push's sequence number may be: one day (clock skew between hosts is far less). */
export const SEQ_AHEAD_MS = 86_400_000;

/** Where a client starts numbering its pushes at time `now` (ms): {@link SEQ_PER_MS} per millisecond since 1970. */
export function firstSeq(now = Date.now()): number {
  return now * SEQ_PER_MS;
}

/** The highest sequence number a shard accepts at time `now`: what a client would number a day from now. */
export function maxSeq(now = Date.now()): number {
  return (now + SEQ_AHEAD_MS) * SEQ_PER_MS;
}

/** Why `id` cannot be a worker id, or null when it can. */
export function badWorkerId(id: unknown): string | null {
  if (typeof id !== 'string' || id.length === 0) return `a worker id must be a non-empty string, got ${typeof id === 'string' ? 'an empty one' : typeof id}`;
  if (id.length > MAX_WORKER_ID_LENGTH) return `a worker id is at most ${MAX_WORKER_ID_LENGTH} characters, got ${id.length}`;
  if (!/^[\x21-\x7e]+$/.test(id)) return `worker id "${id.slice(0, 40).replace(/[^\x21-\x7e]/g, '?')}" may hold only printable ASCII characters, no spaces`;
  return null;
}

/** Why `seq` cannot be a push sequence number, or null when it can. */
export function badSeq(seq: unknown): string | null {
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return `push seq must be a non-negative integer, got ${String(seq).slice(0, 40)}`;
  if (seq > maxSeq()) return `push seq ${seq} is more than a day ahead of this shard's clock (at most ${maxSeq()}); number pushes from the time, milliseconds × ${SEQ_PER_MS}, as the client does: a number that high would make every later push of the worker look applied already`;
  return null;
}
