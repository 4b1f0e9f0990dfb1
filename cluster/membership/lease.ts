import { createLogger } from '../log.js';
import { DEFAULT_LEASE, type LeaseOptions } from './lease-options.js';
import { type MemberInfo, type MemberKind, type MembershipStore } from './store.js';

export { DEFAULT_LEASE, type LeaseOptions } from './lease-options.js';

const log = createLogger('lease');

/**
 * Holds a member's lease: registers it, renews it on a timer (publishing the
 * latest `info`), logs a failed renewal once and keeps trying, and drops it on
 * `close()`.
 */
export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private info: MemberInfo;

  constructor(
    private readonly store: MembershipStore,
    private readonly kind: MemberKind,
    info: MemberInfo,
    private readonly options: LeaseOptions = DEFAULT_LEASE,
  ) {
    this.info = { ...info };
  }

  async start(): Promise<void> {
    await this.store.register(this.kind, this.info, this.options.ttlMs);
    this.timer = setInterval(() => void this.renew(), this.options.renewMs);
    this.timer.unref();
  }

  /** Publishes new fields with the next renewal. */
  update(fields: Partial<MemberInfo>): void {
    this.info = { ...this.info, ...fields };
  }

  async renew(): Promise<void> {
    try {
      await this.store.register(this.kind, this.info, this.options.ttlMs);
      if (this.failing) log.info(`${this.kind} ${this.info.id}: lease renewed again`);
      this.failing = false;
    } catch (err) {
      if (!this.failing) log.warn(`${this.kind} ${this.info.id}: cannot renew lease (${(err as Error).message}); retrying every ${this.options.renewMs} ms`);
      this.failing = true;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.store.deregister(this.kind, this.info.id).catch(() => undefined);
  }
}
