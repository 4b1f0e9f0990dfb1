import { type ConnectionOptions as TlsOptions } from 'node:tls';
import { DEFAULT_CLUSTER_NAME } from '../cluster-config.js';
import { InvalidArgumentError } from '../errors.js';
import { type Logger, createLogger } from '../log.js';
import { DEFAULT_KEY_PREFIX } from './redis-keys.js';
import { backoffDelay } from '../backoff.js';

/** Options of {@link RedisMembershipStore}; every default is in {@link DEFAULT_REDIS_STORE_OPTIONS}. */
export interface RedisStoreOptions {
  /**
   * Where Redis listens: `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS,
   * with an ACL user and password in the userinfo. Default `redis://127.0.0.1:6379`.
   */
  url: string;
  /** The cluster whose keys this store reads and writes (`<keyPrefix>:{<cluster>}:…`). Default `default`. */
  cluster: string;
  /** First part of every key. Default `tessera`. */
  keyPrefix: string;
  /** How long one connection attempt (TCP, TLS, AUTH) may take before it is retried. Default 5 000 ms. */
  connectTimeoutMs: number;
  /**
   * Bound on every call (getMap, casMap, register…), waiting for a connection
   * included: past it the call rejects with MembershipUnavailableError. A call
   * made while Redis is known to be unreachable rejects at once. Default 2 000 ms.
   */
  commandTimeoutMs: number;
  /** First delay before reconnecting to a Redis that went away; doubled at each failure (with jitter). Default 100 ms. */
  reconnectMinDelayMs: number;
  /** Cap of the reconnect delay, so a returning Redis is found within about this long. Default 2 000 ms. */
  reconnectMaxDelayMs: number;
  /** TLS settings (a private CA, a client certificate) for `rediss://`; setting them also turns TLS on for `redis://`. Default none. */
  tls?: TlsOptions;
  /** The password for the URL's user (or Redis's default user), when it is not in the URL: read from a file or the environment, so it is on no command line. Default none. */
  password?: string;
  /** Where the store logs (one warning when Redis becomes unreachable, one line when it is back). Default the `membership` logger. */
  logger: Logger;
}

export type RedisStoreOptionsInput = Partial<RedisStoreOptions>;

export const DEFAULT_REDIS_STORE_OPTIONS: Readonly<Omit<RedisStoreOptions, 'tls' | 'logger' | 'password'>> = Object.freeze({
  url: 'redis://127.0.0.1:6379',
  cluster: DEFAULT_CLUSTER_NAME,
  keyPrefix: DEFAULT_KEY_PREFIX,
  connectTimeoutMs: 5_000,
  commandTimeoutMs: 2_000,
  reconnectMinDelayMs: 100,
  reconnectMaxDelayMs: 2_000,
});

/** Fills every option not given with its default and checks them once. */
export function redisStoreWithDefaults(input: RedisStoreOptionsInput = {}): RedisStoreOptions {
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as RedisStoreOptionsInput;
  const o: RedisStoreOptions = { ...DEFAULT_REDIS_STORE_OPTIONS, logger: createLogger('membership'), ...defined };
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new InvalidArgumentError(`Redis URL "${redactUrl(o.url)}" is not a URL; expected redis://[user:password@]host:port[/db] or rediss://… for TLS`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new InvalidArgumentError(`Redis URL "${redactUrl(o.url)}" must start with redis:// (or rediss:// for TLS)`);
  }
  for (const k of ['connectTimeoutMs', 'commandTimeoutMs', 'reconnectMinDelayMs', 'reconnectMaxDelayMs'] as const) {
    if (!(Number.isInteger(o[k]) && o[k] > 0)) throw new InvalidArgumentError(`Redis store option ${k} must be a positive integer (ms), got ${o[k]}`);
  }
  if (o.reconnectMinDelayMs > o.reconnectMaxDelayMs) {
    throw new InvalidArgumentError(`reconnectMinDelayMs (${o.reconnectMinDelayMs}) must not exceed reconnectMaxDelayMs (${o.reconnectMaxDelayMs})`);
  }
  return o;
}

/** The URL with its password masked, fit for logs and error messages. */
export function redactUrl(raw: string): string {
  try {
    const url = new URL(raw);
    if (url.password) url.password = '***';
    return url.toString().replace(/\/$/, '');
  } catch {
    return raw.replace(/\/\/([^@/]*):[^@/]*@/, '//$1:***@');
  }
}

/** Reconnect delay after `attempt` failures: doubling from min to max, with equal jitter so many clients do not return in step. */
export function reconnectDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  return backoffDelay(attempt - 1, { minMs, maxMs, jitter: true }, random);
}
