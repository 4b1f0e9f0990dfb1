import { type Redis } from 'ioredis';
import { type ClusterConfig, validateClusterConfig } from '../cluster-config.js';
import { ClusterExistsError, InvalidArgumentError, MapConflictError } from '../errors.js';
import { type ShardMap, validateMap } from '../shard-map.js';
import { RedisLink } from './redis-connection.js';
import { type RedisKeys, redisKeys } from './redis-keys.js';
import { type RedisStoreOptions, type RedisStoreOptionsInput, reconnectDelay, redisStoreWithDefaults } from './redis-options.js';
import { CAS_MAP_2 } from './scripts/cas-map-2.js';
import { CLAIM_WORK_5 } from './scripts/claim-work-5.js';
import { COMPLETE_WORK_2 } from './scripts/complete-work-2.js';
import { LIVE_MEMBERS_N } from './scripts/live-members-n.js';
import { DEFAULT_CLAIM_GRACE_MS, type WorkClaim, type WorkPlan, type WorkProgress, planMismatch, totalItems, validatePlan } from './work-queue.js';
import { type MemberInfo, type MemberKind, type MembershipStore, badMember } from './store.js';

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

/** One watchMap listener and the newest epoch it has been given. */
interface Watcher {
  listener: (map: ShardMap) => void;
  last: number;
}

/**
 * The membership store in Redis, with the semantics of MemoryMembershipStore:
 * the configuration is written once (SET NX), the map changes only by a
 * compare-and-set on its epoch (a Lua script that also announces the new map on
 * a pub/sub channel), members hold leases (keys with a TTL).
 *
 * Every call settles within `commandTimeoutMs`; while Redis is away calls fail
 * with MembershipUnavailableError (retryable), the store reconnects with backoff
 * and logs the outage once. Watchers get every announced map and, after each
 * (re)subscription, the current one, so a change announced while the connection
 * was down is not missed (changes made while a watcher was not subscribed reach
 * it as the newest map only). A watcher is only ever given maps newer than the
 * last one it got.
 */
export class RedisMembershipStore implements MembershipStore {
  readonly options: RedisStoreOptions;
  readonly keys: RedisKeys;
  private readonly link: RedisLink;
  private readonly cmd: Redis;
  private sub: Redis | null = null;
  /** Bumped at every (re)subscription and when the subscriber goes, so a stale re-read stops retrying. */
  private subGeneration = 0;
  private subscribed = false;
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  constructor(input: RedisStoreOptionsInput = {}) {
    this.options = redisStoreWithDefaults(input);
    this.keys = redisKeys(this.options.cluster, this.options.keyPrefix);
    this.link = new RedisLink(this.options);
    this.cmd = this.link.open('command');
    this.cmd.defineCommand(CAS_MAP_2.name, { numberOfKeys: CAS_MAP_2.numberOfKeys, lua: CAS_MAP_2.lua });
    this.cmd.defineCommand(LIVE_MEMBERS_N.name, { lua: LIVE_MEMBERS_N.lua });
    this.cmd.defineCommand(CLAIM_WORK_5.name, { numberOfKeys: CLAIM_WORK_5.numberOfKeys, lua: CLAIM_WORK_5.lua });
    this.cmd.defineCommand(COMPLETE_WORK_2.name, { numberOfKeys: COMPLETE_WORK_2.numberOfKeys, lua: COMPLETE_WORK_2.lua });
  }

  /** Whether Redis is reachable as far as the store knows (false from a dropped connection until it is back). */
  get reachable(): boolean {
    return this.link.reachable;
  }

  async getConfig(): Promise<ClusterConfig | null> {
    const json = await this.run('read the cluster configuration', (c) => c.get(this.keys.config));
    return json === null ? null : (JSON.parse(json) as ClusterConfig);
  }

  async createCluster(config: ClusterConfig, force = false): Promise<void> {
    validateClusterConfig(config);
    if (config.name !== this.options.cluster) {
      throw new InvalidArgumentError(`the configuration names cluster "${config.name}" but this store holds cluster "${this.options.cluster}"; open a store for "${config.name}"`);
    }
    const json = JSON.stringify(config);
    if (force) {
      // Like the embedded store, a forced re-creation also drops the map (and its epoch) and the run's data queue.
      const k = this.keys;
      await this.run('create the cluster', (c) => c.multi().set(k.config, json).del(k.map, k.epoch, k.workPlan, k.workNext, k.workClaims, k.workClaimedAt).exec().then(execResult));
      return;
    }
    const ok = await this.run('create the cluster', (c) => c.set(this.keys.config, json, 'NX'));
    if (ok === null) throw new ClusterExistsError(`cluster "${config.name}" already exists; pass --force to overwrite its configuration`);
  }

  async getMap(): Promise<ShardMap | null> {
    const json = await this.run('read the shard map', (c) => c.get(this.keys.map));
    return json === null ? null : (JSON.parse(json) as ShardMap);
  }

  async casMap(expectedEpoch: number, next: ShardMap): Promise<void> {
    if (!Number.isInteger(expectedEpoch) || expectedEpoch < 0) throw new InvalidArgumentError(`expected epoch must be a non-negative integer, got ${expectedEpoch}`);
    if (!(next.epoch > expectedEpoch)) throw new InvalidArgumentError(`a new shard map must have an epoch above ${expectedEpoch}, got ${next.epoch}`);
    validateMap(next);
    const json = JSON.stringify(next);
    const reply = await this.run('compare-and-set the shard map', (c) =>
      this.script(c, CAS_MAP_2.name)(this.keys.map, this.keys.epoch, expectedEpoch, next.epoch, json, this.keys.mapChannel),
    );
    const [ok, actual] = reply as [number, number];
    if (ok !== 1) throw new MapConflictError(expectedEpoch, actual);
  }

  async register(kind: MemberKind, member: MemberInfo, ttlMs: number): Promise<void> {
    const bad = badMember(member);
    if (bad) throw new InvalidArgumentError(bad);
    if (!(Number.isFinite(ttlMs) && ttlMs > 0)) throw new InvalidArgumentError(`a lease's TTL must be a positive number of ms, got ${ttlMs}`);
    const json = JSON.stringify(member);
    await this.run(`register ${kind} ${member.id}`, (c) =>
      c.multi().set(this.keys.member(kind, member.id), json, 'PX', Math.ceil(ttlMs)).sadd(this.keys.memberIndex(kind), member.id).exec().then(execResult),
    );
  }

  async deregister(kind: MemberKind, id: string): Promise<void> {
    await this.run(`deregister ${kind} ${id}`, (c) => c.multi().del(this.keys.member(kind, id)).srem(this.keys.memberIndex(kind), id).exec().then(execResult));
  }

  async members(kind: MemberKind): Promise<MemberInfo[]> {
    const what = `list ${kind} members`;
    const deadline = this.link.deadline();
    const index = this.keys.memberIndex(kind);
    const ids = await this.run(what, (c) => c.smembers(index), deadline);
    if (ids.length === 0) return [];
    // Reads the leases and prunes the expired ids from the index in one atomic step.
    const keys = ids.map((id) => this.keys.member(kind, id));
    const values = (await this.run(what, (c) => this.script(c, LIVE_MEMBERS_N.name)(1 + keys.length, index, ...keys, ...ids), deadline)) as string[];
    const out: MemberInfo[] = [];
    for (const v of values) {
      try {
        out.push(JSON.parse(v) as MemberInfo);
      } catch {
        this.options.logger.warn(`ignoring a ${kind} lease in ${index} that is not JSON: ${v.slice(0, 80)}`);
      }
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  async claimWork(worker: string, plan: WorkPlan, floor: number, graceMs = DEFAULT_CLAIM_GRACE_MS): Promise<WorkClaim> {
    validatePlan(plan);
    if (!worker) throw new InvalidArgumentError('a work claim needs a worker id');
    const k = this.keys;
    const reply = (await this.run(`claim work for ${worker}`, (c) =>
      this.script(c, CLAIM_WORK_5.name)(k.workPlan, k.workNext, k.workClaims, k.member('worker', ''), k.workClaimedAt, worker, `${plan.epochs}:${plan.blocksPerEpoch}`, totalItems(plan), floor, Math.max(0, Math.round(graceMs))),
    )) as [string, (number | string)?, number?];
    switch (reply[0]) {
      case 'item':
        return { kind: 'item', item: Number(reply[1]), handedOut: Number(reply[2]) };
      case 'wait':
        return { kind: 'wait' };
      case 'finished':
        return { kind: 'finished' };
      default: {
        const [epochs, blocksPerEpoch] = String(reply[1]).split(':').map(Number);
        throw planMismatch({ epochs: epochs!, blocksPerEpoch: blocksPerEpoch! }, plan);
      }
    }
  }

  async completeWork(worker: string, item: number): Promise<boolean> {
    const done = await this.run(`complete work item ${item} of ${worker}`, (c) => this.script(c, COMPLETE_WORK_2.name)(this.keys.workClaims, this.keys.workClaimedAt, item, worker));
    return done === 1;
  }

  async workProgress(): Promise<WorkProgress | null> {
    const k = this.keys;
    const [plan, next, claims] = await this.run('read the work queue', (c) =>
      c.multi().get(k.workPlan).get(k.workNext).hgetall(k.workClaims).exec().then((res) => {
        execResult(res);
        return res!.map(([, v]) => v) as [string | null, string | null, Record<string, string>];
      }),
    );
    if (plan === null) return null;
    const [epochs, blocksPerEpoch] = plan.split(':').map(Number);
    // Keyed by worker id, which may be any text ("constructor", "__proto__"): no inherited keys.
    const held = Object.create(null) as Record<string, number[]>;
    for (const [item, w] of Object.entries(claims).sort((a, b) => Number(a[0]) - Number(b[0]))) (held[w] ??= []).push(Number(item));
    return { plan: { epochs: epochs!, blocksPerEpoch: blocksPerEpoch! }, handedOut: Number(next ?? 0), held };
  }

  watchMap(listener: (map: ShardMap) => void): () => void {
    if (this.closed) return () => undefined;
    const watcher: Watcher = { listener, last: 0 };
    this.watchers.add(watcher);
    if (!this.sub) this.subscribe();
    // Already subscribed: this watcher still needs the current map. (Otherwise the
    // re-read that follows the subscription gives it.)
    else if (this.subscribed) void this.resync([watcher], this.subGeneration);
    return () => {
      if (!this.watchers.delete(watcher)) return;
      if (this.watchers.size === 0) this.unsubscribe();
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watchers.clear();
    this.subGeneration++;
    this.sub = null;
    await this.link.close();
  }

  private run<T>(what: string, fn: (c: Redis) => Promise<T>, deadline?: number): Promise<T> {
    return this.link.run(this.cmd, what, fn, deadline);
  }

  private script(c: Redis, name: string): ScriptCall {
    return (c as unknown as Record<string, ScriptCall>)[name]!.bind(c);
  }

  /** Opens the subscriber connection; at each (re)connection it subscribes, then re-reads the map. */
  private subscribe(): void {
    const sub = this.link.open('subscriber');
    this.sub = sub;
    sub.on('message', (channel: string, json: string) => {
      if (channel === this.keys.mapChannel) this.announce(json);
    });
    sub.on('close', () => {
      if (this.sub === sub) this.subscribed = false;
    });
    sub.on('ready', () => {
      sub.subscribe(this.keys.mapChannel).then(
        () => {
          if (this.sub !== sub) return;
          this.subscribed = true;
          // Maps announced while unsubscribed were missed: re-read the current one.
          void this.resync([...this.watchers], ++this.subGeneration);
        },
        // The connection dropped again (its next 'ready' retries), or an ACL forbids the channel.
        (err: Error) => this.options.logger.warn(`cannot subscribe to ${this.keys.mapChannel} at ${this.link.where}: ${err.message}`),
      );
    });
  }

  private unsubscribe(): void {
    const sub = this.sub;
    if (!sub) return;
    this.sub = null;
    this.subscribed = false;
    this.subGeneration++;
    this.link.release(sub);
  }

  /** Reads the current map for `targets`, retrying with backoff until it succeeds or a newer subscription takes over. */
  private async resync(targets: Watcher[], generation: number): Promise<void> {
    for (let attempt = 1; !this.closed && generation === this.subGeneration; attempt++) {
      try {
        const json = await this.run('re-read the shard map', (c) => c.get(this.keys.map));
        if (json !== null) for (const w of targets) this.deliver(w, json);
        return;
      } catch (err) {
        this.options.logger.debug(`cannot re-read the shard map after subscribing (${(err as Error).message}); retrying`);
        await new Promise((resolve) => setTimeout(resolve, reconnectDelay(attempt, this.options.reconnectMinDelayMs, this.options.reconnectMaxDelayMs)).unref());
      }
    }
  }

  private announce(json: string): void {
    for (const w of [...this.watchers]) this.deliver(w, json);
  }

  /** Gives `w` its own copy of the map in `json` if it is newer than the last one it got. */
  private deliver(w: Watcher, json: string): void {
    if (!this.watchers.has(w)) return;
    let map: ShardMap;
    try {
      map = JSON.parse(json) as ShardMap;
      validateMap(map);
    } catch (err) {
      this.options.logger.warn(`ignoring a shard map on ${this.keys.mapChannel} that is not valid: ${(err as Error).message}`);
      return;
    }
    if (map.epoch <= w.last) return;
    w.last = map.epoch;
    try {
      w.listener(map);
    } catch (err) {
      this.options.logger.error(`a shard map listener threw: ${(err as Error).stack ?? String(err)}`);
    }
  }
}

/** Throws the first error of a MULTI's replies (or if it was aborted). */
function execResult(res: [Error | null, unknown][] | null): void {
  if (res === null) throw new Error('Redis aborted the transaction');
  for (const [err] of res) if (err) throw err;
}
