import type * as grpc from '@grpc/grpc-js';
import { decodeSlots } from '../../cluster/wire/gradient-codec.js';
import { MovedError, ShardUnavailableError, type TesseraError } from '../../cluster/errors.js';
import { type ShardBatch } from '../../cluster/routing.js';
import { type ShardMap } from '../../cluster/shard-map.js';
import { slotStart } from '../../cluster/slots.js';
import { type DensePull, type DensePush, type DenseTransport, type PushAck, type TransportProvider, encodedPayload } from '../../client/transport/dense-transport.js';

/**
 * An in-memory stand-in for the shards, for unit tests of the client's logic
 * (routing, recovery, codecs): one flat vector of values; a shard answers for
 * the slots the current map gives it and redirects the rest; pushes apply
 * plain sgd with learning rate 1; failures can be injected per address.
 */
export class MemoryShards implements TransportProvider {
  readonly values: Float32Array;
  /** Per address: errors to throw on the next calls, in order. */
  readonly faults = new Map<string, TesseraError[]>();
  /** Calls made, per address and kind ("pull", "push", "failed"). */
  readonly calls: { address: string; kind: string; slots?: number }[] = [];
  map: ShardMap;

  constructor(
    map: ShardMap,
    readonly elements: number,
  ) {
    this.map = map;
    this.values = new Float32Array(elements);
  }

  private check(address: string, batch: ShardBatch): void {
    const fault = this.faults.get(address)?.shift();
    if (fault) throw fault;
    const id = Object.entries(this.map.addresses).find(([, a]) => a === address)?.[0];
    if (id === undefined) throw new ShardUnavailableError(`no shard at ${address}`, address);
    for (const r of batch.ranges) {
      for (let s = r.begin; s < r.end; s++) {
        const owner = this.map.owners[s]!;
        if (owner !== id) throw new MovedError(s, this.map.epoch, owner, this.map.addresses[owner] ?? '');
      }
    }
  }

  async dense(address: string): Promise<DenseTransport> {
    const shards = this;
    return {
      kind: 'memory',
      async pull(batch: ShardBatch, out: Float32Array, _req: DensePull): Promise<void> {
        shards.calls.push({ address, kind: 'pull' });
        shards.check(address, batch);
        for (const r of batch.ranges) {
          const start = slotStart(r.begin, shards.elements, shards.map.slots);
          out.set(shards.values.subarray(start, start + r.length), r.offset);
        }
      },
      async push(batch: ShardBatch, req: DensePush): Promise<PushAck> {
        shards.check(address, batch);
        let wireBytes = batch.length * 4;
        let gradient: Float32Array;
        if (req.encoded) {
          const bytes = Buffer.concat(encodedPayload(batch, req.encoded));
          wireBytes = bytes.byteLength;
          gradient = new Float32Array(batch.length);
          const lengths: number[] = [];
          for (const r of batch.ranges) for (let s = r.begin; s < r.end; s++) lengths.push(slotStart(s + 1, shards.elements, shards.map.slots) - slotStart(s, shards.elements, shards.map.slots));
          decodeSlots(req.compression, bytes, 0, lengths, gradient);
        } else {
          gradient = new Float32Array(batch.length);
          let at = 0;
          for (const r of batch.ranges) {
            gradient.set(req.gradient.subarray(r.offset, r.offset + r.length), at);
            at += r.length;
          }
        }
        let at = 0;
        for (const r of batch.ranges) {
          const start = slotStart(r.begin, shards.elements, shards.map.slots);
          for (let i = 0; i < r.length; i++) shards.values[start + i] = shards.values[start + i]! - gradient[at + i]!;
          at += r.length;
        }
        const slots = batch.ranges.reduce((n, r) => n + r.end - r.begin, 0);
        shards.calls.push({ address, kind: 'push', slots });
        return { appliedSlots: slots, duplicateSlots: 0, wireBytes };
      },
    };
  }

  sparse(): grpc.Client {
    throw new Error('the in-memory shards hold no sparse tables');
  }

  async describe(): Promise<{ clock: number; bulkAddress: string }> {
    return { clock: 0, bulkAddress: '' };
  }

  failed(address: string): void {
    this.calls.push({ address, kind: 'failed' });
  }

  prune(): void {}

  close(): void {}
}
