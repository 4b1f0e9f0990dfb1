import type { PeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { PermissionDeniedError, type TesseraError, UnauthenticatedError } from '../errors.js';
import { toStatus } from '../wire/status-codec.js';
import { type Identity, type Role, aRole, describeIdentity } from './identity.js';
import { type TransportSecurity, identityOfPeer } from './transport-security.js';

/**
 * Who may call what, by the role in the caller's certificate
 * (docs/security.md has the table). Under plaintext (a loopback listener, or
 * `--insecure`) there is no identity and every call is allowed: the network
 * is the boundary then.
 */

/** The roles allowed to call each method of a service, by method name as in the .proto; a method not listed is refused. */
export type ServiceRules = Readonly<Record<string, readonly Role[]>>;

export const ANY_ROLE: readonly Role[] = ['shard', 'worker', 'admin', 'reader'];

/** tessera.v1.Shard and tessera.v1.SparseShard: workers push (as themselves); workers, readers, operators and shards pull. */
export const DATA_RULES: ServiceRules = { Pull: ANY_ROLE, Push: ['worker'], Describe: ANY_ROLE };

/** tessera.v1.ShardAdmin: operators and shards run checkpoints and moves; the moved slots come only from a shard; readers may export. */
export const ADMIN_RULES: ServiceRules = {
  Checkpoint: ['admin', 'shard'],
  MoveSlots: ['admin', 'shard'],
  ImportSlots: ['shard'],
  ApplyLog: ['shard'],
  DropSlots: ['shard'],
  ExportModel: ['admin', 'reader', 'shard'],
  ResetSlots: ['admin'],
};

/** tessera.v1.Membership: anyone reads; operators and shards change the cluster; workers hold leases and claim data. */
export const MEMBERSHIP_RULES: ServiceRules = {
  GetCluster: ANY_ROLE,
  ListMembers: ANY_ROLE,
  WatchMap: ANY_ROLE,
  GetWorkProgress: ANY_ROLE,
  CreateCluster: ['admin', 'shard'],
  CompareAndSetMap: ['admin', 'shard'],
  Register: ['admin', 'shard', 'worker'],
  Deregister: ['admin', 'shard', 'worker'],
  ClaimWork: ['worker', 'admin'],
  CompleteWork: ['worker', 'admin'],
};

/** What a server call says of its peer (grpc-js's `getAuthContext`). */
export interface AuthenticatedCall {
  getAuthContext?(): { sslPeerCertificate?: PeerCertificate } | null;
}

/** The identity of a call's peer; null on a plaintext listener. */
export function callerOf(call: AuthenticatedCall): Identity | null {
  return identityOfPeer(call.getAuthContext?.()?.sslPeerCertificate);
}

/**
 * Refuses `caller` unless it may act as worker `workerId`: a worker only as
 * itself (the `worker_id` of its pushes, and of pulls that count it under
 * ssp/bsp). Other roles are checked by the method rules alone.
 * @throws PermissionDeniedError naming both ids.
 */
export function checkActsAs(caller: Identity | null, workerId: string, what: string): void {
  if (caller?.role === 'worker' && caller.id !== workerId) {
    throw new PermissionDeniedError(`${what} as worker "${String(workerId).slice(0, 80)}" refused: the caller's certificate is for worker "${caller.id}"; a worker acts only under its own id`);
  }
}

/**
 * A clocked pull (ssp, bsp) counts its caller as a live worker at the clock
 * gate: under mTLS only a worker may send one, and only as itself (a reader
 * re-joining as a worker would hold every step back).
 * @throws PermissionDeniedError naming the caller.
 */
export function checkClockedPull(caller: Identity | null, workerId: string): void {
  if (caller && caller.role !== 'worker') throw new PermissionDeniedError(`a clocked pull counts its sender as a training worker; the caller is ${describeIdentity(caller)}: pull without a clock`);
  checkActsAs(caller, workerId, 'a clocked pull');
}

/** Refuses a caller that is not one of `roles` (or of another cluster). */
export function checkRole(caller: Identity | null, security: TransportSecurity, roles: readonly Role[], what: string): void {
  if (security.kind === 'plaintext') return;
  if (!caller) throw new UnauthenticatedError(`${what} needs a client certificate carrying a Tessera identity (spiffe://tessera/<cluster>/<role>/<id>)`);
  const cluster = security.material.identity.cluster;
  if (caller.cluster !== cluster) throw new PermissionDeniedError(`${what} refused: the caller is ${describeIdentity(caller)}, and this is cluster "${cluster}"`);
  if (!roles.includes(caller.role)) throw new PermissionDeniedError(`${what} needs ${roles.map((r, i) => (i === 0 ? aRole(r) : r)).join(' or ')} certificate; the caller is ${describeIdentity(caller)}`);
}

type Handler = (call: AuthenticatedCall, callback?: grpc.sendUnaryData<unknown>) => void;

/**
 * `implementation` with every method checked against `rules` before it runs:
 * a refused call is answered PERMISSION_DENIED (UNAUTHENTICATED without an
 * identity) and never reaches the service. Under plaintext it is returned as it is.
 */
export function guardService(service: string, definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation, rules: ServiceRules, security: TransportSecurity): grpc.UntypedServiceImplementation {
  if (security.kind === 'plaintext') return implementation;
  const guarded: grpc.UntypedServiceImplementation = { ...implementation };
  for (const [name, method] of Object.entries(definition)) {
    const key = name in implementation ? name : method.originalName;
    if (!key || !(key in implementation)) continue;
    const run = implementation[key] as unknown as Handler;
    const roles = rules[name] ?? [];
    const what = `${service}/${name}`;
    guarded[key] = ((call: AuthenticatedCall, callback?: grpc.sendUnaryData<unknown>) => {
      try {
        checkRole(callerOf(call), security, roles, what);
      } catch (err) {
        return refuse(call, callback, err as TesseraError, method.responseStream);
      }
      return run(call, callback);
    }) as unknown as grpc.UntypedHandleCall;
  }
  return guarded;
}

function refuse(call: AuthenticatedCall, callback: grpc.sendUnaryData<unknown> | undefined, err: TesseraError, streamsOut: boolean): void {
  const status = toStatus(err);
  if (!streamsOut && callback) {
    callback(status);
    return;
  }
  (call as unknown as { emit(e: string, s: unknown): void }).emit('error', status);
}
