import { readFileSync } from 'node:fs';
import { createLogger } from '../cluster/log.js';
import { RemoteMembershipStore } from '../cluster/membership/remote-store.js';
import { RedisMembershipStore } from '../cluster/membership/redis-store.js';
import { DEFAULT_KEY_PREFIX } from '../cluster/membership/redis-keys.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { DEFAULT_CLUSTER_NAME } from '../cluster/cluster-config.js';
import { type OptionSpec, type ParsedOptions, UsageError } from './args.js';
import { isLoopback } from '../cluster/tls/transport-security.js';
import { TLS_OPTIONS, applyTlsOptions } from './tls-options.js';

const log = createLogger('cli');

/**
 * The options every verb uses to reach the cluster's membership store: Redis
 * (`--redis URL`, or the TESSERA_REDIS_URL environment variable), or the
 * embedded store a `tessera local` serves (`--membership HOST:PORT`).
 */
export const MEMBERSHIP_OPTIONS: readonly OptionSpec[] = [
  { name: 'redis', type: 'string', metavar: 'URL', description: 'Redis holding the membership: redis://[user:password@]host:port[/db], rediss://… for TLS (or set TESSERA_REDIS_URL)' },
  { name: 'membership', type: 'string', metavar: 'HOST:PORT', description: 'instead of Redis: the embedded membership store of a `tessera local`' },
  { name: 'cluster', type: 'string', metavar: 'NAME', default: DEFAULT_CLUSTER_NAME, description: 'cluster name (part of every Redis key)' },
  { name: 'key-prefix', type: 'string', metavar: 'PREFIX', default: DEFAULT_KEY_PREFIX, description: 'first part of every Redis key' },
  { name: 'redis-password-file', type: 'string', metavar: 'FILE', description: "the Redis user's password, read from FILE (or set TESSERA_REDIS_PASSWORD_FILE): never put it on the command line" },
  { name: 'redis-ca', type: 'string', metavar: 'FILE', description: 'PEM CA that signed Redis\'s TLS certificate, for rediss:// (or set TESSERA_REDIS_CA)' },
  { name: 'redis-insecure', type: 'boolean', description: 'reach Redis over plaintext redis:// on a host other than loopback (or set TESSERA_REDIS_INSECURE=1); without it such a URL is refused: use rediss:// on any network you do not trust' },
  ...TLS_OPTIONS,
];

/** Whether the options (or TESSERA_REDIS_INSECURE=1) allow plaintext Redis beyond loopback. */
export function redisInsecure(o: ParsedOptions): boolean {
  return Boolean(o['redis-insecure']) || process.env['TESSERA_REDIS_INSECURE'] === '1';
}

/** The Redis URL given by flag or environment, if any. */
export function redisUrl(o: ParsedOptions): string | undefined {
  return (o['redis'] as string | undefined) ?? process.env['TESSERA_REDIS_URL'] ?? undefined;
}

/** The membership store the options name; the process's TLS (cli/tls-options.ts) is set up first. */
export function openStore(o: ParsedOptions): MembershipStore {
  applyTlsOptions(o);
  const membership = o['membership'] as string | undefined;
  // TESSERA_REDIS_URL is a default: an explicit --membership overrides it (only two flags conflict).
  const redis = membership && !o['redis'] ? undefined : redisUrl(o);
  if (redis && membership) throw new UsageError('give either --redis or --membership, not both');
  if (membership) return new RemoteMembershipStore(membership);
  if (redis) {
    checkRedisUrl(redis, redisInsecure(o));
    if (o['redis'] && passwordIn(redis)) log.warn('the Redis password is on the command line (--redis), where every user of this host can read it; put it in a file (--redis-password-file) or TESSERA_REDIS_URL');
    return new RedisMembershipStore({ url: redis, cluster: o['cluster'] as string, keyPrefix: o['key-prefix'] as string, logger: createLogger('membership'), ...redisSecrets(o) });
  }
  throw new UsageError('say where the cluster lives: --redis redis://HOST:PORT (or TESSERA_REDIS_URL), or --membership HOST:PORT for a `tessera local`');
}

/** The Redis password and CA the options name (files, or the environment's), as the store takes them. */
function redisSecrets(o: ParsedOptions): { password?: string; tls?: { ca: Buffer } } {
  const passwordFile = (o['redis-password-file'] as string | undefined) ?? process.env['TESSERA_REDIS_PASSWORD_FILE'];
  const caFile = (o['redis-ca'] as string | undefined) ?? process.env['TESSERA_REDIS_CA'];
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new UsageError(`cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  return {
    // One trailing newline is what `echo` and Kubernetes Secrets leave; the password is the rest.
    ...(passwordFile ? { password: read(passwordFile, 'the Redis password file').toString('utf8').replace(/\r?\n$/, '') } : {}),
    ...(caFile ? { tls: { ca: read(caFile, 'the Redis CA file') } } : {}),
  };
}

/**
 * Redis holds the shard map and the membership, which every process trusts:
 * over a network it is reached with TLS (`rediss://`). A plaintext `redis://`
 * URL is taken for a loopback host, or when the operator said so.
 * @throws UsageError for a URL that is not a Redis one, or a plaintext URL to another host without the opt-in.
 */
export function checkRedisUrl(url: string, insecure: boolean): void {
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    // not a URL at all: said below
  }
  if (!parsed || (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')) {
    throw new UsageError(`the Redis URL "${url.replace(/\/\/[^@/]*@/, '//…@').slice(0, 80)}" is not one: expected redis://[user@]host:port[/db], or rediss://… for TLS`);
  }
  if (parsed.protocol !== 'redis:' || insecure || isLoopback(parsed.hostname)) return;
  throw new UsageError(
    `Redis at ${parsed.hostname} would be reached without TLS (${parsed.protocol}//): give a rediss:// URL (with --redis-ca for a private CA; docs/security.md), or --redis-insecure (TESSERA_REDIS_INSECURE=1) on a network you trust`,
  );
}

/** Whether a Redis URL carries a password (false for one that does not parse: the store says what is wrong with it). */
function passwordIn(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false;
  }
}
