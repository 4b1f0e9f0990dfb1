import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { grpcCodecFields } from '../../cluster/wire/codec-fields.js';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { deadlineIn } from '../../cluster/grpc-client.js';
import { type ShardBatch } from '../../cluster/routing.js';
import { fromStatus } from '../../cluster/wire/status-codec.js';
import { chunkBounds, floatBytes } from '../../cluster/wire/dense-values.js';
import { type DensePull, type DensePush, type DenseTransport, type PushAck, encodedPayload } from './dense-transport.js';
import type { PullChunk__Output } from '../../cluster/wire/proto-types/tessera/v1/PullChunk.js';
import type { PushAck__Output } from '../../cluster/wire/proto-types/tessera/v1/PushAck.js';
import type { PushChunk } from '../../cluster/wire/proto-types/tessera/v1/PushChunk.js';
import type { PushHeader } from '../../cluster/wire/proto-types/tessera/v1/PushHeader.js';
import type { ShardClient } from '../../cluster/wire/proto-types/tessera/v1/Shard.js';
import { scatterer } from './scatter.js';

// The stub and messages as typed from proto/ (scripts/gen-proto-types.mjs).
type Ack = PushAck__Output;
type ShardStub = ShardClient;

/**
 * Dense values as `tessera.v1.Shard` streams (shard.proto): pulls as a
 * server stream of chunks, pushes as a client stream whose first message
 * carries the header; chunks of at most `chunkBytes`.
 */
export class GrpcDenseTransport implements DenseTransport {
  readonly kind = 'grpc';

  constructor(
    private readonly stub: grpc.Client,
    private readonly address: string,
    private readonly o: { deadlineMs: number; chunkBytes: number },
  ) {}

  pull(batch: ShardBatch, out: Float32Array, req: DensePull): Promise<void> {
    const { at } = req;
    const call = (this.stub as ShardStub).pull(
      { epoch: req.epoch, ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })), workerId: req.workerId, maxChunkBytes: this.o.chunkBytes, model: req.model, ...(at ? { clocked: true, clock: at.clock, join: Boolean(at.join) } : {}) },
      { deadline: deadlineIn(this.o.deadlineMs) },
    );
    const scatter = scatterer(batch.ranges, out);
    let received = 0;
    return new Promise<void>((resolve, reject) => {
      call.on('data', (chunk: PullChunk__Output) => {
        scatter(chunk.offset * 4, chunk.values);
        received += chunk.values.byteLength / 4;
      });
      call.on('error', (err: grpc.ServiceError) => reject(fromStatus(err, this.address)));
      call.on('end', () => {
        if (received !== batch.length) reject(new InvalidArgumentError(`shard at ${this.address} sent ${received} of ${batch.length} values`));
        else resolve();
      });
    });
  }

  async push(batch: ShardBatch, req: DensePush): Promise<PushAck> {
    const wire = req.encoded ? encodedPayload(batch, req.encoded) : null;
    const wireBytes = wire ? wire.reduce((n, b) => n + b.byteLength, 0) : batch.length * 4;
    let call!: grpc.ClientWritableStream<PushChunk>;
    const done = new Promise<Ack>((resolve, reject) => {
      call = (this.stub as ShardStub).push({ deadline: deadlineIn(this.o.deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, this.address)) : resolve(res!)));
    });
    const header: PushHeader = {
      epoch: req.epoch,
      ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })),
      workerId: req.workerId,
      seq: req.seq,
      ...(grpcCodecFields(req.compression) as Pick<PushHeader, 'codec' | 'topkRatio'>),
      ...(wire ? { wireBytes } : {}),
      model: req.model,
      ...(req.clock !== undefined ? { clocked: true, clock: req.clock } : {}),
    };
    let first = true;
    const send = async (offset: number, values: Buffer) => {
      const msg = { header: first ? header : null, offset, values };
      first = false;
      if (!call.write(msg)) await Promise.race([once(call, 'drain'), done]);
    };
    if (wire) {
      // The encoded gradient, cut into chunks by bytes; offsets are byte offsets in it.
      const all = Buffer.concat(wire);
      for (let at = 0; at < all.length || first; at += this.o.chunkBytes) await send(at, all.subarray(at, at + this.o.chunkBytes));
    } else {
      let batchOffset = 0;
      for (const r of batch.ranges) {
        for (const [a, b] of chunkBounds(r.length, this.o.chunkBytes)) await send(batchOffset + a, floatBytes(req.gradient, r.offset + a, r.offset + b));
        batchOffset += r.length;
      }
    }
    call.end();
    const ack = await done;
    return { appliedSlots: ack.appliedSlots, duplicateSlots: ack.duplicateSlots, wireBytes };
  }
}
