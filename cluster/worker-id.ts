/**
 * What a shard accepts as the worker half of a push's `(worker_id, seq)`, and
 * as the worker a clocked pull counts: a worker id is remembered per slot (the
 * exactly-once record), written into every checkpoint and slot move, and
 * logged, so it is short and printable; a sequence number stays well inside
 * the range where doubles count exactly.
 */

/** Longest worker id a shard accepts. */
export const MAX_WORKER_ID_LENGTH = 128;

/**
 * Largest push sequence number a shard accepts: 2^50. Clients number pushes
 * from the time in milliseconds (≈ 1.8 × 10^12 in 2026), so this leaves room
 * for centuries of pushes, and refuses a number so high that every later push
 * of the worker would look applied already.
 */
export const MAX_SEQ = 2 ** 50;

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
  if (seq > MAX_SEQ) return `push seq ${seq} is above the largest a shard accepts (2^50); number pushes from the time in milliseconds, as the client does`;
  return null;
}
