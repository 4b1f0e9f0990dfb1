import { InvalidArgumentError } from '../errors.js';
import { type MemberKind } from './store.js';

/**
 * Every Redis key and channel Tessera uses, built here and nowhere else.
 *
 * All of one cluster's keys share the prefix `<prefix>:{<cluster>}:`. The braces
 * are a Redis Cluster hash tag: every key of a cluster hashes to one slot, so a
 * Lua script or a MULTI may touch several of them together.
 *
 * | key | type | holds |
 * | --- | --- | --- |
 * | `…:config` | string | the ClusterConfig, JSON |
 * | `…:map` | string | the ShardMap, JSON |
 * | `…:epoch` | string | the map's epoch (an integer), written with the map |
 * | `…:member:<kind>:<id>` | string with a TTL | a member's lease: its MemberInfo, JSON |
 * | `…:members:<kind>` | set | ids that may hold a lease (pruned lazily when listed) |
 * | `…:map-announce` | pub/sub channel | each new map's JSON, published by the CAS script |
 * | `…:work:plan` | string | the run's data plan, `epochs:blocksPerEpoch` (work-queue.ts) |
 * | `…:work:next` | string | the next never-claimed item |
 * | `…:work:claims` | hash | item → the worker holding it |
 * | `…:work:claimed-at` | hash | item → when it was claimed (ms, Redis's clock) |
 */

/** The default first part of every key. */
export const DEFAULT_KEY_PREFIX = 'tessera';

const CLUSTER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
// A brace in the prefix would move the hash tag; whitespace and ':' make keys hard to read in redis-cli.
const KEY_PREFIX = /^[A-Za-z0-9_.-]{1,64}$/;

export interface RedisKeys {
  /** `<prefix>:{<cluster>}:`: what every key below starts with (use `${base}*` to SCAN them). */
  readonly base: string;
  readonly config: string;
  readonly map: string;
  readonly epoch: string;
  /** Channel on which each new map is announced (JSON). */
  readonly mapChannel: string;
  /** A member's lease key. */
  member(kind: MemberKind, id: string): string;
  /** The set of ids of one kind that may hold a lease. */
  memberIndex(kind: MemberKind): string;
  readonly workPlan: string;
  readonly workNext: string;
  readonly workClaims: string;
  readonly workClaimedAt: string;
}

/** The keys of cluster `cluster`; throws InvalidArgumentError on a name that would break the layout. */
export function redisKeys(cluster: string, prefix: string = DEFAULT_KEY_PREFIX): RedisKeys {
  if (!CLUSTER_NAME.test(cluster)) throw new InvalidArgumentError(`cluster name "${cluster}" must be 1–64 letters, digits, '.', '_' or '-'`);
  if (!KEY_PREFIX.test(prefix)) throw new InvalidArgumentError(`Redis key prefix "${prefix}" must be 1–64 letters, digits, '.', '_' or '-' (no braces: they would move the hash tag)`);
  const base = `${prefix}:{${cluster}}:`;
  return {
    base,
    config: `${base}config`,
    map: `${base}map`,
    epoch: `${base}epoch`,
    mapChannel: `${base}map-announce`,
    member: (kind, id) => `${base}member:${kind}:${id}`,
    memberIndex: (kind) => `${base}members:${kind}`,
    workPlan: `${base}work:plan`,
    workNext: `${base}work:next`,
    workClaims: `${base}work:claims`,
    workClaimedAt: `${base}work:claimed-at`,
  };
}
