import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { compressionOfGrpc, slotLengths } from '../cluster/codec-fields.js';
import { toStatus } from '../cluster/status-codec.js';
import { type SlotRange } from '../cluster/slots.js';
import { DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES, copyBytesInto } from '../cluster/wire.js';
import { floatHeap } from './float-heap.js';
import { type Shard } from './shard.js';
import { EncodedPush } from './encoded-push.js';

/** Messages as proto-loader decodes them (see cluster/proto.ts). */
interface PullRequestMsg {
  epoch: number;
  ranges: SlotRange[];
  workerId: string;
  maxChunkBytes: number;
  model: string;
  clocked: boolean;
  clock: number;
  join: boolean;
}
interface PushHeaderMsg {
  epoch: number;
  ranges: SlotRange[];
  workerId: string;
  seq: number;
  codec: string;
  model: string;
  clocked: boolean;
  clock: number;
  topkRatio: number;
  wireBytes: number;
}
interface PushChunkMsg {
  header: PushHeaderMsg | null;
  offset: number;
  values: Buffer;
}

/**
 * How long a clocked pull (ssp, bsp) may wait for slower workers before it is
 * answered with a clock-timeout error: below the client's default deadline
 * (60 s), so the caller learns why rather than just that it timed out.
 */
export const CLOCK_WAIT_MS = 45_000;

/** Bytes of idle push buffers a shard keeps for reuse: enough for two whole-model pushes of a 64 MB model at once. */
export const GRADIENT_POOL_BYTES = 128 << 20;

/**
 * Reusable buffers that pushed gradients are assembled in. A whole-model push
 * of a large model needs tens of MB; allocating them fresh for every push made
 * the kernel map and zero new pages on first touch and V8 collect garbage for
 * the external memory, which together cost more than the copy itself
 * (docs/benchmarks.md). Buffers come from the float heap where there is one,
 * so the optimizers' SIMD kernels read the gradient where it lies. A buffer is
 * reused only once its push is settled, and every element of it is
 * overwritten before a push is applied (chunks must cover the push exactly),
 * so no stale value is ever applied.
 */
export class GradientPool {
  /** Idle buffers, largest first. */
  private idle: Float32Array[] = [];
  private idleBytes = 0;
  /** The whole buffer behind each view handed out. */
  private readonly lent = new WeakMap<Float32Array, Float32Array>();
  /** A view dropped without {@link release} (a call that vanished) gives its heap block back when collected. */
  private readonly lost = new FinalizationRegistry<Float32Array>((whole) => floatHeap()?.free(whole));

  constructor(private readonly maxIdleBytes = GRADIENT_POOL_BYTES) {}

  /** A buffer of exactly `length` floats (a view of a pooled one when one is large enough); contents unspecified. */
  acquire(length: number): Float32Array {
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) if (this.idle[i]!.length >= length) best = i;
    let whole: Float32Array;
    if (best >= 0) {
      whole = this.idle.splice(best, 1)[0]!;
      this.idleBytes -= whole.byteLength;
    } else {
      whole = floatHeap()?.alloc(length, this) ?? new Float32Array(length);
    }
    // Always a distinct object from `whole`, so `lost` can hold `whole` without keeping the view alive.
    const view = whole.subarray(0, length);
    this.lent.set(view, whole);
    this.lost.register(view, whole, view);
    return view;
  }

  /** Gives back a buffer from {@link acquire}; the caller must not touch it afterwards. */
  release(view: Float32Array): void {
    const whole = this.lent.get(view);
    if (!whole) return;
    this.lent.delete(view);
    this.lost.unregister(view);
    this.idle.push(whole);
    this.idleBytes += whole.byteLength;
    // Over budget: drop the smallest idle buffers first, keeping the ones big pushes need.
    this.idle.sort((a, b) => b.length - a.length);
    while (this.idleBytes > this.maxIdleBytes) {
      const dropped = this.idle.pop()!;
      this.idleBytes -= dropped.byteLength;
      floatHeap()?.free(dropped);
    }
  }
}

/** `tessera.v1.Shard` over a {@link Shard}: the transport edge, where typed errors become statuses. */
export function shardImplementation(shard: Shard, describe: () => object, pool = new GradientPool()): grpc.UntypedServiceImplementation {
  return {
    pull: (call: grpc.ServerWritableStream<PullRequestMsg, object>) => {
      void (async () => {
        try {
          const req = call.request;
          shard.check(req.epoch, req.ranges, req.model);
          if (req.clocked) {
            await shard.gate.beforePull(req.workerId || call.getPeer(), req.clock, req.join, CLOCK_WAIT_MS);
            if (call.cancelled) return;
            // The map may have moved on while the pull waited.
            shard.check(req.epoch, req.ranges, req.model);
          }
          const maxBytes = Math.min(req.maxChunkBytes || DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES - 1024);
          const total = shard.lengthOf(req.ranges);
          const epoch = shard.epoch;
          // Snapshot-consistent: the chunks are produced without yielding to
          // pushes only while the socket keeps up; a push between chunks is
          // visible in later chunks (async consistency reads latest values).
          for (const { offset, bytes } of shard.pullChunks(req.ranges, maxBytes)) {
            if (call.cancelled) return;
            const ok = call.write(offset === 0 ? { offset, values: bytes, total, epoch } : { offset, values: bytes });
            if (!ok) await once(call, 'drain');
          }
          call.end();
        } catch (err) {
          call.emit('error', toStatus(err));
        }
      })();
    },

    push: (call: grpc.ServerReadableStream<PushChunkMsg, object>, callback: grpc.sendUnaryData<object>) => {
      let header: PushHeaderMsg | null = null;
      let gradient: Float32Array | null = null;
      // Every codec but float32: the encoded bytes, decoded at the end.
      let encoded: EncodedPush | null = null;
      let received = 0;
      let failed = false;
      const settle = () => {
        if (gradient) pool.release(gradient);
        gradient = null;
        encoded = null;
      };
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        settle();
        callback(toStatus(err));
      };
      call.on('data', (msg: PushChunkMsg) => {
        if (failed) return;
        try {
          if (!header) {
            if (!msg.header) throw new InvalidArgumentError('the first message of a push must carry its header');
            header = msg.header;
            const compression = compressionOfGrpc(header.codec, header.topkRatio);
            // Reject before allocating: ownership, ranges, epoch and the encoded size first.
            shard.check(header.epoch, header.ranges, header.model);
            if (compression.kind !== 'none') encoded = new EncodedPush(compression, slotLengths(header.ranges, shard.elements, shard.config.slots), header.wireBytes);
            gradient = pool.acquire(shard.lengthOf(header.ranges));
          } else if (msg.header) {
            throw new InvalidArgumentError('a push carries its header on its first message only');
          }
          const bytes = msg.values;
          if (encoded) {
            encoded.write(bytes, msg.offset);
            received += bytes.byteLength;
            return;
          }
          if (bytes.byteLength % 4 !== 0) throw new InvalidArgumentError(`push chunk at offset ${msg.offset} has ${bytes.byteLength} bytes, not a whole number of float32 values`);
          if (msg.offset !== received) throw new InvalidArgumentError(`push chunk at offset ${msg.offset} arrived where offset ${received} was expected; send chunks in order`);
          const n = bytes.byteLength / 4;
          if (received + n > gradient!.length) {
            throw new InvalidArgumentError(`push carries more than the ${gradient!.length} values its slots hold`);
          }
          copyBytesInto(bytes, gradient!, received);
          received += n;
        } catch (err) {
          fail(err);
        }
      });
      call.on('end', () => {
        if (failed) return;
        try {
          if (!header || !gradient) throw new InvalidArgumentError('empty push: no header was sent');
          let wireBytes: number;
          if (encoded) {
            encoded.decodeInto(gradient);
            wireBytes = encoded.wireBytes;
          } else {
            if (received !== gradient.length) throw new InvalidArgumentError(`push carries ${received} values but its slots hold ${gradient.length}`);
            wireBytes = received * 4;
          }
          const h = header;
          const res = shard.push({ epoch: h.epoch, ranges: h.ranges, workerId: h.workerId, seq: h.seq, model: h.model, ...(h.clocked ? { clock: h.clock } : {}) }, gradient);
          settle();
          callback(null, { ...res, wireBytes });
        } catch (err) {
          fail(err);
        }
      });
      // The call itself broke (cancelled, oversized message): grpc-js has already
      // answered the client; make sure nothing is applied.
      call.on('error', () => {
        failed = true;
        settle();
      });
      call.on('cancelled', () => {
        failed = true;
        settle();
      });
    },

    describe: (_call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
      callback(null, describe());
    },
  };
}
