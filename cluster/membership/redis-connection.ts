import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { TesseraError } from '../errors.js';
import { MembershipUnavailableError } from './membership-errors.js';
import { type RedisStoreOptions, reconnectDelay, redactUrl } from './redis-options.js';

/**
 * Reply errors that mean "Redis cannot serve this now" rather than "this
 * request is wrong": a replica promoted or demoted, a dataset loading, a
 * script running long, a cluster reconfiguring.
 */
const TRANSIENT_REPLIES = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

/**
 * A store's connections to one Redis, with what ioredis leaves to its user:
 *
 * - every call settles within `commandTimeoutMs`, connecting included, and
 *   fails fast while Redis is known to be down (no offline queue: a command is
 *   never held back and sent later, after its caller was told it failed);
 * - in-flight commands fail when their connection drops and are not resent;
 * - reconnection runs in the background with capped, jittered backoff;
 * - an outage is logged once when the first connection drops and once when
 *   every connection is back, however many calls fail in between;
 * - failures become MembershipUnavailableError (retryable).
 */
export class RedisLink {
  /** The URL with its password masked. */
  readonly where: string;
  private readonly conns = new Set<Redis>();
  /** Connections that dropped and have not been ready since. */
  private readonly down = new Set<Redis>();
  private outageSince: number | null = null;
  private lastError: Error | undefined;
  private closing = false;

  constructor(private readonly o: RedisStoreOptions) {
    this.where = redactUrl(o.url);
  }

  /** Whether no connection is known to be down. */
  get reachable(): boolean {
    return this.outageSince === null;
  }

  /** Opens a connection (it connects at once, in the background). */
  open(role: string): Redis {
    const options: RedisOptions = {
      connectTimeout: this.o.connectTimeoutMs,
      commandTimeout: this.o.commandTimeoutMs,
      // Fail rather than queue while disconnected: the caller decides whether to retry.
      enableOfflineQueue: false,
      // On a dropped connection, reject the commands in flight at once…
      maxRetriesPerRequest: 0,
      // …and never replay them on the next connection: their callers were told they failed.
      autoResendUnfulfilledCommands: false,
      // The store subscribes again itself, so it knows when to re-read what it missed.
      autoResubscribe: false,
      retryStrategy: (attempt) => reconnectDelay(attempt, this.o.reconnectMinDelayMs, this.o.reconnectMaxDelayMs),
      ...(this.o.tls ? { tls: this.o.tls } : {}),
    };
    const conn = this.o.password !== undefined ? new Redis(withoutUser(this.o.url), { ...options, ...userOf(this.o.url), password: this.o.password }) : new Redis(this.o.url, options);
    this.conns.add(conn);
    conn.on('error', (err: Error) => {
      this.lastError = err;
      this.o.logger.debug(`Redis ${role} connection to ${this.where}: ${err.message}`);
    });
    conn.on('close', () => this.lost(conn));
    conn.on('ready', () => this.regained(conn));
    return conn;
  }

  /** Closes a connection and forgets it (its outage, if any, included). */
  release(conn: Redis): void {
    if (!this.conns.delete(conn)) return;
    conn.disconnect();
    this.regained(conn);
  }

  /**
   * Runs `fn` on `conn` once it is ready, rejecting with MembershipUnavailableError
   * if Redis is down or if the whole call passes `deadline`.
   */
  async run<T>(conn: Redis, what: string, fn: (conn: Redis) => Promise<T>, deadline = this.deadline()): Promise<T> {
    await this.whenReady(conn, what, deadline);
    let timer: NodeJS.Timeout | undefined;
    const expiry = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.timedOut(what)), Math.max(0, deadline - Date.now()));
    });
    try {
      return await Promise.race([fn(conn), expiry]);
    } catch (err) {
      throw this.classify(what, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The deadline of a call starting now. */
  deadline(): number {
    return Date.now() + this.o.commandTimeoutMs;
  }

  /** Quits every connection (politely when it is up, within the command timeout). */
  async close(): Promise<void> {
    this.closing = true;
    const conns = [...this.conns];
    this.conns.clear();
    await Promise.all(
      conns.map(async (conn) => {
        if (conn.status === 'ready') {
          let timer: NodeJS.Timeout | undefined;
          const expiry = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.o.commandTimeoutMs)));
          await Promise.race([conn.quit().catch(() => undefined), expiry]);
          clearTimeout(timer);
        }
        conn.disconnect();
      }),
    );
    this.down.clear();
  }

  private whenReady(conn: Redis, what: string, deadline: number): Promise<void> {
    if (conn.status === 'ready') return Promise.resolve();
    if (this.closing || !this.conns.has(conn) || conn.status === 'end') {
      return Promise.reject(new Error(`${what}: the Redis membership store for ${this.where} is closed`));
    }
    if (this.down.has(conn)) return Promise.reject(this.unreachable(what));
    // First connection still being set up: wait for it, within the deadline.
    return new Promise<void>((resolve, reject) => {
      const settle = (err?: Error) => {
        clearTimeout(timer);
        conn.off('ready', onReady);
        conn.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => settle();
      const onClose = () => settle(this.unreachable(what));
      const timer = setTimeout(() => settle(this.timedOut(what)), Math.max(0, deadline - Date.now()));
      conn.once('ready', onReady);
      conn.once('close', onClose);
    });
  }

  private classify(what: string, err: unknown): Error {
    if (err instanceof TesseraError) return err;
    if (err instanceof (ReplyError as new () => Error) && !TRANSIENT_REPLIES.test(err.message)) return err;
    return this.unreachable(what, err instanceof Error ? err : new Error(String(err)));
  }

  private unreachable(what: string, cause: Error | undefined = this.lastError): MembershipUnavailableError {
    const why = cause ? ` (${cause.message})` : '';
    return new MembershipUnavailableError(
      `${what}: Redis at ${this.where} is unavailable${why}; the store reconnects in the background (every ≤ ${this.o.reconnectMaxDelayMs} ms, reconnectMaxDelayMs): retry later`,
      cause ? { cause } : undefined,
    );
  }

  private timedOut(what: string): MembershipUnavailableError {
    const last = this.lastError && !this.reachable ? ` (last error: ${this.lastError.message})` : '';
    return new MembershipUnavailableError(
      `${what}: Redis at ${this.where} did not answer within ${this.o.commandTimeoutMs} ms${last}; retry later, or raise commandTimeoutMs if Redis is slow rather than down`,
    );
  }

  private lost(conn: Redis): void {
    if (this.closing || !this.conns.has(conn)) return;
    this.down.add(conn);
    if (this.outageSince !== null) return;
    this.outageSince = Date.now();
    const why = this.lastError ? ` (${this.lastError.message})` : '';
    this.o.logger.warn(
      `Redis at ${this.where} is unreachable${why}; membership calls fail with MembershipUnavailableError and map changes wait, ` +
        `while every role keeps serving on its cached map; reconnecting with backoff up to ${this.o.reconnectMaxDelayMs} ms`,
    );
  }

  private regained(conn: Redis): void {
    this.down.delete(conn);
    if (this.outageSince === null || this.down.size > 0 || this.closing) return;
    const seconds = ((Date.now() - this.outageSince) / 1000).toFixed(1);
    this.outageSince = null;
    this.o.logger.info(`Redis at ${this.where} is reachable again (after ${seconds} s)`);
  }
}

/**
 * A password given apart from the URL goes with the URL's user: the user is
 * passed as an option and taken out of the URL, since ioredis fills its
 * options from the URL first (an empty password there would win).
 */
function withoutUser(url: string): string {
  const u = new URL(url);
  u.username = '';
  u.password = '';
  return u.toString();
}

/** The user named in a Redis URL, as ioredis's `username` option. */
function userOf(url: string): { username?: string } {
  const user = decodeURIComponent(new URL(url).username);
  return user ? { username: user } : {};
}
