import type * as grpc from '@grpc/grpc-js';
import { toStatus } from '../wire/status-codec.js';
import { type ShardMap } from '../shard-map.js';
import { InvalidArgumentError } from '../errors.js';
import { parseUntrustedJson } from '../wire/untrusted-json.js';
import { type MemberKind, type MembershipStore } from './store.js';

/**
 * Serves a MembershipStore as `tessera.v1.Membership`, so that roles in other
 * processes share the embedded store of the process that hosts it.
 */

function kindOf(kind: string): MemberKind {
  if (kind === 'shard' || kind === 'worker') return kind;
  throw new InvalidArgumentError(`unknown member kind "${String(kind).slice(0, 80)}"; expected "shard" or "worker"`);
}

function parse<T>(json: string, what: string): T {
  try {
    return parseUntrustedJson(json) as T;
  } catch {
    throw new InvalidArgumentError(`${what} is not valid JSON`);
  }
}

/** Wraps an async handler so any throw becomes a gRPC status. */
function handle<Req, Res>(fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toStatus(err)),
    );
  };
}

export function membershipImplementation(store: MembershipStore): grpc.UntypedServiceImplementation {
  return {
    getCluster: handle(async () => {
      const [config, map] = await Promise.all([store.getConfig(), store.getMap()]);
      return { configJson: config ? JSON.stringify(config) : '', mapJson: map ? JSON.stringify(map) : '' };
    }),
    createCluster: handle(async (req: { configJson: string; force: boolean }) => {
      await store.createCluster(parse(req.configJson, 'cluster configuration'), req.force);
      return {};
    }),
    compareAndSetMap: handle(async (req: { expectedEpoch: number; mapJson: string }) => {
      await store.casMap(req.expectedEpoch, parse(req.mapJson, 'shard map'));
      return {};
    }),
    register: handle(async (req: { kind: string; memberJson: string; ttlMs: number }) => {
      await store.register(kindOf(req.kind), parse(req.memberJson, 'member'), req.ttlMs);
      return {};
    }),
    deregister: handle(async (req: { kind: string; id: string }) => {
      await store.deregister(kindOf(req.kind), req.id);
      return {};
    }),
    listMembers: handle(async (req: { kind: string }) => {
      const members = await store.members(kindOf(req.kind));
      return { memberJson: members.map((m) => JSON.stringify(m)) };
    }),
    claimWork: handle(async (req: { workerId: string; epochs: number; blocksPerEpoch: number; floor: number; graceMs: number }) => {
      const claim = await store.claimWork(req.workerId, { epochs: req.epochs, blocksPerEpoch: req.blocksPerEpoch }, req.floor, req.graceMs || undefined);
      return claim.kind === 'item' ? claim : { kind: claim.kind };
    }),
    completeWork: handle(async (req: { workerId: string; item: number }) => ({ completed: await store.completeWork(req.workerId, req.item) })),
    getWorkProgress: handle(async () => {
      const progress = await store.workProgress();
      return { progressJson: progress ? JSON.stringify(progress) : '' };
    }),
    watchMap: (call: grpc.ServerWritableStream<unknown, { mapJson: string }>) => {
      const unsubscribe = store.watchMap((map: ShardMap) => call.write({ mapJson: JSON.stringify(map) }));
      const stop = () => unsubscribe();
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },
  };
}
