import type * as grpc from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { compressionOfGrpc } from '../cluster/wire/codec-fields.js';
import { toStatus } from '../cluster/wire/status-codec.js';
import { DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES } from '../cluster/wire/dense-values.js';
import type { PullRequest__Output } from '../cluster/wire/proto-types/tessera/v1/PullRequest.js';
import type { PushChunk__Output } from '../cluster/wire/proto-types/tessera/v1/PushChunk.js';
import { callerOf, checkActsAs, checkClockedPull } from '../cluster/tls/authorization.js';
import { admitPull } from './admission.js';
import { GradientPool } from './gradient-pool.js';
import { BudgetCharge } from './inflight-budget.js';
import { PushAssembler } from './push-assembler.js';
import { type Shard, whenReplicated } from './shard.js';
import { type ShardMetrics, noMeter } from './shard-metrics.js';

// Messages as proto-loader decodes them (cluster/proto.ts), typed from proto/ (scripts/gen-proto-types.mjs).
type PullRequestMsg = PullRequest__Output;
type PushChunkMsg = PushChunk__Output;

/**
 * `tessera.v1.Shard` over a {@link Shard}: the transport edge, where typed
 * errors become statuses. `metrics`: each push and pull is counted there
 * (shard-metrics.ts), once, as it is answered.
 */
export function shardImplementation(shard: Shard, describe: () => object, pool = new GradientPool(), metrics?: ShardMetrics): grpc.UntypedServiceImplementation {
  return {
    pull: (call: grpc.ServerWritableStream<PullRequestMsg, object>) => {
      const meter = metrics?.request('pull', 'grpc') ?? noMeter();
      const held = new BudgetCharge(pool.budget, 'a pull’s reply');
      // A cancelled call's writes may never complete: what it held comes back as it closes.
      const closed = new Promise<void>((resolve) => call.once('close', resolve)).then(() => {
        held.giveAll();
        meter.end(status.CANCELLED);
      });
      void (async () => {
        try {
          const req = call.request;
          if (req.clocked) checkClockedPull(callerOf(call), req.workerId);
          const waited = await admitPull(shard, { epoch: req.epoch, ranges: req.ranges, model: req.model, workerId: req.workerId || call.getPeer(), join: req.join, ...(req.clocked ? { clock: req.clock } : {}) });
          if (req.clocked) metrics?.clockWaited(waited);
          if (call.cancelled) return meter.end(status.CANCELLED);
          const maxBytes = Math.min(req.maxChunkBytes || DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES - 1024);
          const total = shard.lengthOf(req.ranges);
          const epoch = shard.epoch;
          // Snapshot-consistent: the chunks are produced without yielding to
          // pushes only while the socket keeps up; a push between chunks is
          // visible in later chunks (async consistency reads latest values).
          // Each chunk is copied as it is serialized: its bytes count in the shard's budget until
          // grpc-js has sent them, and a call has at most two chunks queued (one being sent, the next).
          let before: Promise<unknown> = Promise.resolve();
          let sentBytes = 0;
          for (const { offset, bytes } of shard.pullChunks(req.ranges, maxBytes)) {
            if (call.cancelled) return meter.end(status.CANCELLED);
            held.take(bytes.byteLength);
            sentBytes += bytes.byteLength;
            const sent = new Promise<void>((resolve) => {
              call.write(offset === 0 ? { offset, values: bytes, total, epoch } : { offset, values: bytes }, () => {
                held.give(bytes.byteLength);
                resolve();
              });
            });
            await Promise.race([before, closed]);
            before = sent;
          }
          call.end();
          meter.end(status.OK, sentBytes, req.ranges);
        } catch (err) {
          const s = toStatus(err);
          meter.end(s.code);
          call.emit('error', s);
        }
      })();
    },

    push: (call: grpc.ServerReadableStream<PushChunkMsg, object>, callback: grpc.sendUnaryData<object>) => {
      const meter = metrics?.request('push', 'grpc') ?? noMeter();
      let push: PushAssembler | null = null;
      let failed = false;
      const settle = () => push?.release();
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        settle();
        const s = toStatus(err);
        meter.end(s.code);
        callback(s);
      };
      call.on('data', (msg: PushChunkMsg) => {
        if (failed) return;
        try {
          if (!push) {
            if (!msg.header) throw new InvalidArgumentError('the first message of a push must carry its header');
            const h = msg.header;
            checkActsAs(callerOf(call), h.workerId, 'a push');
            const compression = compressionOfGrpc(h.codec, h.topkRatio);
            push = new PushAssembler(shard, pool, { epoch: h.epoch, ranges: h.ranges, workerId: h.workerId, seq: h.seq, model: h.model, ...(h.clocked ? { clock: h.clock } : {}), compression, wireBytes: h.wireBytes }, 'element');
          } else if (msg.header) {
            throw new InvalidArgumentError('a push carries its header on its first message only');
          }
          push.write(msg.values, msg.offset);
        } catch (err) {
          fail(err);
        }
      });
      call.on('end', () => {
        if (failed) return;
        try {
          if (!push) throw new InvalidArgumentError('empty push: no header was sent');
          const res = push.apply();
          settle();
          const { header, applySeconds } = push;
          // Acknowledged once every backup of its slots holds it (replication.ts).
          whenReplicated(shard, () => {
            meter.end(status.OK, res.wireBytes, header.ranges, applySeconds);
            callback(null, res);
          }, fail);
        } catch (err) {
          fail(err);
        }
      });
      // The call itself broke (cancelled, oversized message): grpc-js has already
      // answered the client; the slots already applied stay, nothing more is.
      call.on('error', () => {
        failed = true;
        settle();
        meter.end(status.CANCELLED);
      });
      call.on('cancelled', () => {
        failed = true;
        settle();
        meter.end(status.CANCELLED);
      });
    },

    describe: (_call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
      callback(null, describe());
    },
  };
}
