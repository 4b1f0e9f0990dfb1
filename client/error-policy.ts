import { type Recovery, TesseraError, errorKind } from '../cluster/errors.js';

export { type Recovery } from '../cluster/errors.js';

/**
 * What the client does after a failed call to one shard, in the manner of
 * ioredis's cluster client (MOVED / ASK / TRYAGAIN handlers with a budget):
 * what the error's reason is registered with (cluster/errors.ts — moved and
 * stale-epoch redirect; not-ready, unavailable, clock-timeout retry; the rest
 * fail). client/recovery.ts carries it out.
 */
export function recoveryFor(err: unknown): Recovery {
  return err instanceof TesseraError ? (errorKind(err.reason)?.recovery ?? 'fail') : 'fail';
}
