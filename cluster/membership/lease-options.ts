/**
 * A lease's timing, apart from the Lease class so that modules which only need
 * the defaults (the work queue's claim grace) do not depend on lease.ts and,
 * through it, on the store interface (that was an import cycle:
 * store.ts → work-queue.ts → lease.ts → store.ts). Imports nothing.
 */
export interface LeaseOptions {
  /** How long the lease lives without renewal. Default 10 000 ms. */
  ttlMs: number;
  /** How often it is renewed. Default 3 000 ms (a third of the TTL leaves two tries). */
  renewMs: number;
}

export const DEFAULT_LEASE: LeaseOptions = { ttlMs: 10_000, renewMs: 3_000 };
