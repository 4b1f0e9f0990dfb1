import { status } from '@grpc/grpc-js';

/**
 * Typed errors. Each carries the gRPC status it becomes at a server's edge, a
 * short `reason` tag sent as `tessera-error` metadata, and a message that says
 * what to do. Each reason is registered once ({@link registerError}, at the
 * end of the file that defines the class): how it is rebuilt from a status —
 * so decoding one (`wire/status-codec.ts`) is a lookup — and what a client does
 * about it, the one source of truth for what is retryable.
 */

/**
 * What a client does after a call failed with an error: re-route it on a
 * fresh map, retry it after a backoff (for a bounded time), ask again at once
 * (`wait`: the shard answered, after waiting as long as it may, for others to
 * catch up; a bounded number of times), or give it to the caller.
 */
export type Recovery = 'redirect' | 'retry' | 'wait' | 'fail';

/** A registered reason: how to rebuild its error from a status's message and `tessera-*` metadata, and how a client recovers from it. */
export interface ErrorKind {
  decode(details: string, meta: (key: string) => string): TesseraError;
  recovery: Recovery;
}

const KINDS = new Map<string, ErrorKind>();

/** Registers `reason` (once per reason; a second registration is a programming error). */
export function registerError(reason: string, kind: ErrorKind): void {
  if (KINDS.has(reason)) throw new Error(`error reason "${reason}" is registered twice`);
  KINDS.set(reason, kind);
}

/** The registration of `reason`, if any. */
export function errorKind(reason: string): ErrorKind | undefined {
  return KINDS.get(reason);
}

export abstract class TesseraError extends Error {
  abstract readonly code: status;
  abstract readonly reason: string;
  /** Whether the same request may succeed if sent again (after a map refresh, a backoff…): what its registration says. */
  get retryable(): boolean {
    return (KINDS.get(this.reason)?.recovery ?? 'fail') !== 'fail';
  }
  /** Extra context sent as `tessera-<key>` metadata. */
  context(): Record<string, string> {
    return {};
  }
  override get name(): string {
    return this.constructor.name;
  }
}

/** The request is malformed: wrong length, unknown tensor, NaN/Inf, bad range. */
export class InvalidArgumentError extends TesseraError {
  readonly code = status.INVALID_ARGUMENT;
  readonly reason = 'invalid-argument';
}

/** The caller's identity (its certificate's role and id) may not make this call. */
export class PermissionDeniedError extends TesseraError {
  readonly code = status.PERMISSION_DENIED;
  readonly reason = 'permission-denied';
}

/** The caller presented no usable identity: no client certificate, or one Tessera cannot read. */
export class UnauthenticatedError extends TesseraError {
  readonly code = status.UNAUTHENTICATED;
  readonly reason = 'unauthenticated';
}

/** A message or a request is larger than a documented limit. */
export class ResourceExhaustedError extends TesseraError {
  readonly code = status.RESOURCE_EXHAUSTED;
  readonly reason = 'resource-exhausted';
}

/**
 * The shard's requests hold as many bytes as it lets them at once
 * (`--max-inflight-mib`): nothing of this request was applied; retry after a
 * back-off, as clients do.
 */
export class ShardBusyError extends TesseraError {
  readonly code = status.RESOURCE_EXHAUSTED;
  readonly reason = 'busy';
}

/** The slot is owned by another shard: refresh the map and go there. */
export class MovedError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'moved';
  constructor(
    readonly slot: number,
    readonly epoch: number,
    readonly owner: string,
    readonly ownerAddress: string,
  ) {
    super(`slot ${slot} is owned by shard ${owner || '(unknown)'} at ${ownerAddress || '(unknown)'} (map epoch ${epoch}); refresh the shard map and retry there`);
  }
  override context(): Record<string, string> {
    return { slot: String(this.slot), epoch: String(this.epoch), owner: this.owner, 'owner-address': this.ownerAddress };
  }
}

/** The caller's map is older than the shard's. */
export class StaleEpochError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'stale-epoch';
  constructor(
    readonly requestEpoch: number,
    readonly epoch: number,
  ) {
    super(`request carries shard-map epoch ${requestEpoch} but the shard is at epoch ${epoch}; refresh the shard map and retry`);
  }
  override context(): Record<string, string> {
    return { epoch: String(this.epoch) };
  }
}

/** The shard is starting, has no map yet, or is behind the caller's map. */
export class NotReadyError extends TesseraError {
  readonly code = status.UNAVAILABLE;
  readonly reason = 'not-ready';
}

/** A shard could not be reached in time (connection refused, deadline exceeded). */
export class ShardUnavailableError extends TesseraError {
  readonly code = status.UNAVAILABLE;
  readonly reason = 'unavailable';
  constructor(
    message: string,
    readonly address: string,
  ) {
    super(message);
  }
}

/** The client followed `maxRedirections` redirects without reaching the owner. */
export class TooManyRedirectionsError extends TesseraError {
  readonly code = status.ABORTED;
  readonly reason = 'too-many-redirections';
  constructor(
    readonly redirections: number,
    readonly last: Error,
  ) {
    super(`gave up after ${redirections} redirections (last: ${last.message}); the shard map may be changing quickly: raise the client's maxRedirections option or retry later`);
  }
}

/** A compare-and-set of the shard map lost against another writer. */
export class MapConflictError extends TesseraError {
  readonly code = status.ABORTED;
  readonly reason = 'map-conflict';
  constructor(
    readonly expectedEpoch: number,
    readonly actualEpoch: number,
  ) {
    super(`shard map changed concurrently: expected epoch ${expectedEpoch}, found ${actualEpoch}; re-read the map and try again`);
  }
  override context(): Record<string, string> {
    return { 'expected-epoch': String(this.expectedEpoch), epoch: String(this.actualEpoch) };
  }
}

/** `init` on a cluster that exists. */
export class ClusterExistsError extends TesseraError {
  readonly code = status.ALREADY_EXISTS;
  readonly reason = 'cluster-exists';
}

/** A clocked pull (ssp, bsp) waited longer than its server allows for slower workers. */
export class ClockTimeoutError extends TesseraError {
  readonly code = status.DEADLINE_EXCEEDED;
  readonly reason = 'clock-timeout';
}

/** A bsp push for a step its shard has not opened: the worker skipped the pull at that clock. */
export class StepAheadError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'step-ahead';
}

/**
 * A checkpoint cannot be written (its directory is missing or not writable)
 * or restored (the file is not a checkpoint, is damaged, or belongs to
 * another cluster, model or optimizer).
 */
export class CheckpointError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'checkpoint';
}

/**
 * The map gives the shard a slot it holds no values for (it started without
 * a checkpoint that has the slot): serving it would serve initial values as
 * if they were trained ones, so it is refused until the slot is restored or
 * declared lost on purpose (docs/checkpoints.md, "Slots a shard cannot account for").
 */
export class SlotLostError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'slot-lost';
}

/** Another live shard already serves under this shard's id (two would serve the same slots): this one does not start. */
export class ShardIdTakenError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'shard-id-taken';
}

/** A move of slots between shards cannot start or was called off (docs/migration.md); the slots stay where they were. */
export class MigrationError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'migration';
}

/** The cluster (or a member) does not exist. */
export class NotFoundError extends TesseraError {
  readonly code = status.NOT_FOUND;
  readonly reason = 'not-found';
}

/** Anything else a server reports: kept with its status and message. */
export class RemoteError extends TesseraError {
  readonly reason = 'remote';
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

const fail = (make: (d: string) => TesseraError): ErrorKind => ({ decode: (d) => make(d), recovery: 'fail' });
registerError('invalid-argument', fail((d) => new InvalidArgumentError(d)));
registerError('resource-exhausted', fail((d) => new ResourceExhaustedError(d)));
registerError('permission-denied', fail((d) => new PermissionDeniedError(d)));
registerError('unauthenticated', fail((d) => new UnauthenticatedError(d)));
registerError('moved', { decode: (_d, m) => new MovedError(Number(m('slot')), Number(m('epoch')), m('owner'), m('owner-address')), recovery: 'redirect' });
registerError('stale-epoch', { decode: (d, m) => Object.assign(new StaleEpochError(0, Number(m('epoch'))), { message: d }), recovery: 'redirect' });
registerError('not-ready', { decode: (d) => new NotReadyError(d), recovery: 'retry' });
registerError('busy', { decode: (d) => new ShardBusyError(d), recovery: 'retry' });
registerError('unavailable', { decode: (d) => new ShardUnavailableError(d, ''), recovery: 'retry' });
registerError('too-many-redirections', fail((d) => new RemoteError(status.ABORTED, d)));
registerError('map-conflict', { decode: (_d, m) => new MapConflictError(Number(m('expected-epoch')), Number(m('epoch'))), recovery: 'retry' });
registerError('cluster-exists', fail((d) => new ClusterExistsError(d)));
// A slower worker held a clocked pull back past the shard's wait bound (it may be waiting for the
// membership store): wait again, a few times (client/recovery.ts), before giving up.
registerError('clock-timeout', { decode: (d) => new ClockTimeoutError(d), recovery: 'wait' });
registerError('step-ahead', fail((d) => new StepAheadError(d)));
registerError('checkpoint', fail((d) => new CheckpointError(d)));
registerError('migration', fail((d) => new MigrationError(d)));
registerError('slot-lost', fail((d) => new SlotLostError(d)));
registerError('shard-id-taken', fail((d) => new ShardIdTakenError(d)));
registerError('not-found', fail((d) => new NotFoundError(d)));
