import * as grpc from '@grpc/grpc-js';
import { type ClusterConfig } from '../cluster-config.js';
import { type ShardMap } from '../shard-map.js';
import { CHANNEL_OPTIONS, unary } from '../grpc-client.js';
import { membershipService } from '../proto.js';
import { createLogger } from '../log.js';
import { type WorkClaim, type WorkPlan, type WorkProgress } from './work-queue.js';
import { type MemberInfo, type MemberKind, type MembershipStore } from './store.js';
import { backoffDelay } from '../backoff.js';

const log = createLogger('membership');

/** Backoff of the map watch's reconnects: 100 ms doubling to 5 s. */
const WATCH_BACKOFF_MIN_MS = 100;
const WATCH_BACKOFF_MAX_MS = 5_000;

/**
 * A MembershipStore living in another process (the embedded store of
 * `tessera local`), reached over `tessera.v1.Membership`.
 */
export class RemoteMembershipStore implements MembershipStore {
  private readonly client: grpc.Client;
  private closed = false;
  private readonly watches = new Set<() => void>();

  constructor(readonly address: string) {
    const Ctor = membershipService();
    this.client = new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  private call<Res>(method: string, req: unknown): Promise<Res> {
    return unary<unknown, Res>(this.client, method, req, undefined, this.address);
  }

  async getConfig(): Promise<ClusterConfig | null> {
    const doc = await this.call<{ configJson: string }>('getCluster', {});
    return doc.configJson ? (JSON.parse(doc.configJson) as ClusterConfig) : null;
  }

  async createCluster(config: ClusterConfig, force = false): Promise<void> {
    await this.call('createCluster', { configJson: JSON.stringify(config), force });
  }

  async getMap(): Promise<ShardMap | null> {
    const doc = await this.call<{ mapJson: string }>('getCluster', {});
    return doc.mapJson ? (JSON.parse(doc.mapJson) as ShardMap) : null;
  }

  async casMap(expectedEpoch: number, next: ShardMap): Promise<void> {
    await this.call('compareAndSetMap', { expectedEpoch, mapJson: JSON.stringify(next) });
  }

  async register(kind: MemberKind, member: MemberInfo, ttlMs: number): Promise<void> {
    await this.call('register', { kind, memberJson: JSON.stringify(member), ttlMs });
  }

  async deregister(kind: MemberKind, id: string): Promise<void> {
    await this.call('deregister', { kind, id });
  }

  async members(kind: MemberKind): Promise<MemberInfo[]> {
    const res = await this.call<{ memberJson: string[] }>('listMembers', { kind });
    return res.memberJson.map((j) => JSON.parse(j) as MemberInfo);
  }

  async claimWork(worker: string, plan: WorkPlan, floor: number, graceMs?: number): Promise<WorkClaim> {
    const res = await this.call<{ kind: string; item: number; handedOut: number }>('claimWork', { workerId: worker, epochs: plan.epochs, blocksPerEpoch: plan.blocksPerEpoch, floor, graceMs: graceMs ?? 0 });
    return res.kind === 'item' ? { kind: 'item', item: res.item, handedOut: res.handedOut } : { kind: res.kind === 'finished' ? 'finished' : 'wait' };
  }

  async completeWork(worker: string, item: number): Promise<boolean> {
    return (await this.call<{ completed: boolean }>('completeWork', { workerId: worker, item })).completed;
  }

  async workProgress(): Promise<WorkProgress | null> {
    const doc = await this.call<{ progressJson: string }>('getWorkProgress', {});
    return doc.progressJson ? (JSON.parse(doc.progressJson) as WorkProgress) : null;
  }

  /** Keeps a WatchMap stream open, reopening it with backoff when it breaks. */
  watchMap(listener: (map: ShardMap) => void): () => void {
    let stream: grpc.ClientReadableStream<{ mapJson: string }> | null = null;
    let stopped = false;
    let failures = 0;
    let timer: NodeJS.Timeout | undefined;
    const open = () => {
      if (stopped || this.closed) return;
      const s = (this.client as unknown as { watchMap(req: object): grpc.ClientReadableStream<{ mapJson: string }> }).watchMap({});
      stream = s;
      s.on('data', (doc: { mapJson: string }) => {
        failures = 0;
        // A document that does not parse, or a listener that throws, must not take the process down.
        try {
          listener(JSON.parse(doc.mapJson) as ShardMap);
        } catch (err) {
          log.warn(`map watch on ${this.address}: a map was not taken (${(err as Error).message})`);
        }
      });
      s.on('error', (err: grpc.ServiceError) => {
        if (stopped || this.closed || err.code === grpc.status.CANCELLED) return;
        const delay = backoffDelay(failures++, { minMs: WATCH_BACKOFF_MIN_MS, maxMs: WATCH_BACKOFF_MAX_MS });
        log.debug(`map watch on ${this.address} broke (${err.details}); reopening in ${delay} ms`);
        timer = setTimeout(open, delay);
        timer.unref();
      });
    };
    open();
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      stream?.cancel();
      this.watches.delete(stop);
    };
    this.watches.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    for (const stop of [...this.watches]) stop();
    this.closed = true;
    this.client.close();
  }
}
