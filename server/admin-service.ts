import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { type CheckpointInfo } from '../cluster/checkpoint-info.js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { toStatus } from '../cluster/wire/status-codec.js';
import { type MoveReport } from './migration.js';
import { type ModelExport, modelPieces } from './model-export.js';
import { type AuthenticatedCall, callerOf } from '../cluster/tls/authorization.js';

/** What the admin plane does, given by the shard server (proto/tessera/v1/admin.proto). */
export interface ShardAdminOperations {
  checkpoint(name: string, atStep: number): Promise<CheckpointInfo>;
  moveSlots(slots: number[], targetId: string, targetAddress: string): Promise<MoveReport>;
  /** A move's payload; `sender`: the shard id in the caller's certificate (null under plaintext), which must own the slots. */
  importSlots(data: Buffer, sender: string | null): number | Promise<number>;
  /** Updates for slots held but not owned: a move's log, or a primary's updates to its backup (server/replication.ts). */
  applyLog(data: Buffer, sender: string | null): number | Promise<number>;
  dropSlots(slots: number[], sender: string | null): number;
  /** The snapshot of the model's values ExportModel streams (server/model-export.ts); `signal` aborts when the call is cancelled. */
  exportModel(atStep: number, signal: AbortSignal): Promise<ModelExport>;
  /** Gives lost slots (all when `slots` is empty) their initial values; returns those reset. */
  resetSlots(slots: number[]): { slots: number[]; epoch: number };
}

/** `tessera.v1.ShardAdmin` over the shard server's own operations: the transport edge, where typed errors become statuses. */
export function shardAdminImplementation(ops: ShardAdminOperations): grpc.UntypedServiceImplementation {
  const answer = <T>(work: () => Promise<T> | T, callback: grpc.sendUnaryData<object>, reply: (v: T) => object) => {
    Promise.resolve()
      .then(work)
      .then(
        (v) => callback(null, reply(v)),
        (err: unknown) => callback(toStatus(err)),
      );
  };
  const bytes = (b: Buffer | undefined) => {
    if (!(b instanceof Uint8Array) || b.byteLength === 0) throw new InvalidArgumentError('the request carries no data');
    return b;
  };
  return {
    checkpoint: (call: grpc.ServerUnaryCall<{ name: string; atStep: number }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.checkpoint(call.request.name, call.request.atStep), callback, (info) => info),
    moveSlots: (call: grpc.ServerUnaryCall<{ slots: number[]; targetId: string; targetAddress: string }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.moveSlots(call.request.slots, call.request.targetId, call.request.targetAddress), callback, (report) => report),
    importSlots: (call: grpc.ServerUnaryCall<{ data: Buffer }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.importSlots(bytes(call.request.data), senderOf(call)), callback, (slots) => ({ slots })),
    applyLog: (call: grpc.ServerUnaryCall<{ data: Buffer }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.applyLog(bytes(call.request.data), senderOf(call)), callback, (entries) => ({ entries })),
    dropSlots: (call: grpc.ServerUnaryCall<{ slots: number[] }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.dropSlots(call.request.slots, senderOf(call)), callback, (slots) => ({ slots })),
    resetSlots: (call: grpc.ServerUnaryCall<{ slots: number[] }, object>, callback: grpc.sendUnaryData<object>) =>
      answer(() => ops.resetSlots(call.request.slots ?? []), callback, (r) => r),
    exportModel: (call: grpc.ServerWritableStream<{ atStep: number }, object>) => {
      const cancelled = new AbortController();
      call.on('cancelled', () => cancelled.abort(new Error('the call was cancelled')));
      if (call.cancelled) cancelled.abort(new Error('the call was cancelled'));
      void (async () => {
        try {
          const image = await ops.exportModel(call.request.atStep, cancelled.signal);
          for (const piece of modelPieces(image)) {
            if (cancelled.signal.aborted) return;
            if (!call.write(piece)) await once(call, 'drain', { signal: cancelled.signal });
          }
          call.end();
        } catch (err) {
          // A cancelled call has no one to answer.
          if (!cancelled.signal.aborted) call.emit('error', toStatus(err));
        }
      })();
    },
  };
}

/** The shard id in a call's certificate (the rules let only shards send a move's payload); null under plaintext. */
function senderOf(call: AuthenticatedCall): string | null {
  return callerOf(call)?.id ?? null;
}
