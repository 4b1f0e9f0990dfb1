import { bulkCodecField } from '../../cluster/wire/codec-fields.js';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { type ShardBatch } from '../../cluster/routing.js';
import { floatBytes } from '../../cluster/wire/dense-values.js';
import { type BulkChannel } from '../bulk-channel.js';
import { type DensePull, type DensePush, type DenseTransport, type PushAck, encodedPayload } from './dense-transport.js';
import { scatterer } from './scatter.js';

/**
 * Dense values over a shard's bulk transport (cluster/wire/bulk-frames.ts): one
 * frame per request, values straight from the caller's vector (push) or
 * straight into it (pull).
 */
export class BulkDenseTransport implements DenseTransport {
  readonly kind = 'bulk';

  constructor(
    readonly channel: BulkChannel,
    private readonly deadlineMs: number,
  ) {}

  async pull(batch: ShardBatch, out: Float32Array, req: DensePull): Promise<void> {
    const scatter = scatterer(batch.ranges, out);
    let received = 0;
    const { at } = req;
    const head = { op: 'pull' as const, epoch: req.epoch, ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })), workerId: req.workerId, model: req.model, ...(at ? { clock: at.clock, join: Boolean(at.join) } : {}) };
    await this.channel.request(head, this.deadlineMs, undefined, (bytes, offset) => {
      scatter(offset, bytes);
      received += bytes.byteLength;
    });
    if (received !== batch.length * 4) throw new InvalidArgumentError(`shard at ${this.channel.shardAddress} sent ${received / 4} of ${batch.length} values`);
  }

  async push(batch: ShardBatch, req: DensePush): Promise<PushAck> {
    const wire = req.encoded ? encodedPayload(batch, req.encoded) : null;
    const wireBytes = wire ? wire.reduce((n, b) => n + b.byteLength, 0) : batch.length * 4;
    const payload = wire ? wire.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)) : batch.ranges.map((r) => floatBytes(req.gradient, r.offset, r.offset + r.length));
    const head = {
      op: 'push' as const,
      epoch: req.epoch,
      ranges: batch.ranges.map(({ begin, end }) => ({ begin, end })),
      workerId: req.workerId,
      model: req.model,
      seq: req.seq,
      length: batch.length,
      ...bulkCodecField(req.compression),
      ...(wire ? { wireBytes } : {}),
      ...(req.clock !== undefined ? { clock: req.clock } : {}),
    };
    const ack = (await this.channel.request(head, this.deadlineMs, payload)) as { appliedSlots: number; duplicateSlots: number };
    return { appliedSlots: ack.appliedSlots, duplicateSlots: ack.duplicateSlots, wireBytes };
  }
}
