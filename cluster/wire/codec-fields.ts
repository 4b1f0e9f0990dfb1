import { type Compression, formatCompression, parseCompression } from './gradient-codec.js';
import { InvalidArgumentError } from '../errors.js';
import { type SlotRange, slotStart } from '../slots.js';

/**
 * How a push names its codec on each transport: gRPC's `PushHeader.codec`
 * enum with `topk_ratio`, the bulk header's `compression` text
 * (`fp16`, `int8`, `topk:0.01`). One mapping for the client and the shard.
 */

const GRPC_CODECS = { none: 'CODEC_FLOAT32', fp16: 'CODEC_FP16', int8: 'CODEC_INT8', topk: 'CODEC_TOPK' } as const;

/** The gRPC header fields of a codec. */
export function grpcCodecFields(c: Compression): { codec: string; topkRatio: number } {
  return { codec: GRPC_CODECS[c.kind], topkRatio: c.kind === 'topk' ? c.ratio : 0 };
}

/** The codec a gRPC push header names. @throws InvalidArgumentError for an unknown codec or a ratio outside (0, 1]. */
export function compressionOfGrpc(codec: string | undefined, topkRatio: number | undefined): Compression {
  switch (codec ?? 'CODEC_FLOAT32') {
    case 'CODEC_FLOAT32':
      return { kind: 'none' };
    case 'CODEC_FP16':
      return { kind: 'fp16' };
    case 'CODEC_INT8':
      return { kind: 'int8' };
    case 'CODEC_TOPK':
      return parseCompression(`topk:${topkRatio}`);
    default:
      throw new InvalidArgumentError(`push codec ${codec} is not known; send CODEC_FLOAT32, CODEC_FP16, CODEC_INT8 or CODEC_TOPK`);
  }
}

/** The bulk header's `compression`, absent for float32. */
export function bulkCodecField(c: Compression): { compression?: string } {
  return c.kind === 'none' ? {} : { compression: formatCompression(c) };
}

/** The codec a bulk push header names. */
export function compressionOfBulk(compression: unknown): Compression {
  if (compression === undefined || compression === null || compression === '') return { kind: 'none' };
  if (typeof compression !== 'string') throw new InvalidArgumentError('a bulk push names its compression as text (fp16, int8, topk:R)');
  return parseCompression(compression);
}

/** The element count of each slot of `ranges`, in order: what a codec encodes one by one. */
export function slotLengths(ranges: readonly SlotRange[], elements: number, slots: number): number[] {
  const out: number[] = [];
  for (const r of ranges) for (let s = r.begin; s < r.end; s++) out.push(slotStart(s + 1, elements, slots) - slotStart(s, elements, slots));
  return out;
}
