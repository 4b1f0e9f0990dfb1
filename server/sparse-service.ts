import type * as grpc from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { callerOf, checkActsAs, checkClockedPull } from '../cluster/tls/authorization.js';
import { toStatus } from '../cluster/wire/status-codec.js';
import { bytesToF32, bytesToIdHalves, f32Bytes } from '../cluster/wire/sparse-values.js';
import { admitSparsePull } from './admission.js';
import { type ClockGate } from './clock-gate.js';
import { type ShardMetrics, noMeter } from './shard-metrics.js';
import { whenReplicated } from './shard.js';
import { type SparseStore } from './sparse-store.js';
import type { SparsePullRequest__Output } from '../cluster/wire/proto-types/tessera/v1/SparsePullRequest.js';
import type { SparsePushRequest__Output } from '../cluster/wire/proto-types/tessera/v1/SparsePushRequest.js';

// Messages as proto-loader decodes them (cluster/proto.ts), typed from proto/ (scripts/gen-proto-types.mjs).
type SparsePullMsg = SparsePullRequest__Output;
type SparsePushMsg = SparsePushRequest__Output;

/**
 * `tessera.v1.SparseShard` over a {@link SparseStore}: the transport edge,
 * where bytes become aligned arrays and typed errors become statuses. A
 * clocked pull waits at the shard's clock gate first, as a dense pull does.
 * `metrics`: each push and pull is counted there (shard-metrics.ts).
 */
export function sparseShardImplementation(store: SparseStore, gate: ClockGate, describe: () => object, metrics?: ShardMetrics): grpc.UntypedServiceImplementation {
  return {
    pull: async (call: grpc.ServerUnaryCall<SparsePullMsg, object>, callback: grpc.sendUnaryData<object>) => {
      const meter = metrics?.sparseRequest('pull') ?? noMeter();
      try {
        const req = call.request;
        const caller = callerOf(call);
        if (req.clocked) checkClockedPull(caller, req.workerId);
        // read_only is not looked at: no pull creates a row (SparseStore.pull), so every pull is read-only.
        const input = { epoch: req.epoch, model: req.model, table: req.table, workerId: req.workerId, ids: bytesToIdHalves(bytesOf(req.ids, 'ids')) };
        const waited = await admitSparsePull(store, gate, { ...input, workerId: req.workerId || call.getPeer(), join: req.join, ...(req.clocked ? { clock: req.clock } : {}) });
        if (req.clocked) metrics?.clockWaited(waited);
        // store.pull checks again: the map may have moved on while the pull waited.
        const res = store.pull(input);
        store.countBytes(req.table, req.ids.byteLength, res.values.byteLength);
        meter.end(status.OK, req.ids.byteLength + res.values.byteLength);
        // rows_created stays 0: a pull creates no row.
        callback(null, { epoch: res.epoch, dim: res.dim, values: f32Bytes(res.values), rowsCreated: 0 });
      } catch (err) {
        const s = toStatus(err);
        meter.end(s.code);
        callback(s);
      }
    },

    push: (call: grpc.ServerUnaryCall<SparsePushMsg, object>, callback: grpc.sendUnaryData<object>) => {
      const meter = metrics?.sparseRequest('push') ?? noMeter();
      try {
        const req = call.request;
        checkActsAs(callerOf(call), req.workerId, 'a sparse push');
        const ids = bytesToIdHalves(bytesOf(req.ids, 'ids'));
        const gradients = bytesToF32(bytesOf(req.gradients, 'gradients'), 'gradients');
        const res = store.push({ epoch: req.epoch, model: req.model, table: req.table, workerId: req.workerId, seq: req.seq, ids, gradients, ...(req.clocked ? { clock: req.clock } : {}) });
        store.countBytes(req.table, req.ids.byteLength + req.gradients.byteLength, 0);
        // Acknowledged once every backup of its slots holds it (replication.ts).
        whenReplicated(store, () => {
          meter.end(status.OK, req.ids.byteLength + req.gradients.byteLength);
          callback(null, res);
        }, refuse);
      } catch (err) {
        refuse(err);
      }
      function refuse(err: unknown): void {
        const s = toStatus(err);
        meter.end(s.code);
        callback(s);
      }
    },

    describe: (_call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
      callback(null, describe());
    },
  };
}

function bytesOf(b: Buffer | undefined, field: string): Buffer {
  if (!(b instanceof Uint8Array)) throw new InvalidArgumentError(`sparse request field ${field} is missing`);
  return b;
}
