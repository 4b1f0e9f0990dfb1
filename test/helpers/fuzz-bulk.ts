import * as tls from 'node:tls';
import fc from 'fast-check';
import { type SlotRange, slotStart } from '../../cluster/slots.js';
import { BulkFrameReader, type BulkReply, MAX_BULK_HEADER_BYTES, encodeHead } from '../../cluster/wire/bulk-frames.js';
import { encodedSlotBytes, parseCompression } from '../../cluster/wire/gradient-codec.js';
import { type TransportSecurity } from '../../cluster/tls/transport-security.js';
import { garbage, jsonMutated, mutated } from './fuzz-mutations.js';
import { type FuzzContext, anyNumber, anyText, likely, rangesArb, seqArb, valuesFor } from './fuzz-values.js';

/**
 * Fuzzing a shard's bulk port (cluster/wire/bulk-frames.ts): frames whose
 * JSON headers are right for the cluster, have a field of the wrong type or
 * none, announce a length their payload does not have; frames cut short, run
 * together, mutated byte by byte; garbage. {@link BulkProbe} sends them over
 * a TLS connection and says what came back.
 */

/** The slots of `ranges`, one length each, when they are a valid list for the cluster; null otherwise. */
function slotLengths(ctx: FuzzContext, ranges: SlotRange[]): number[] | null {
  const out: number[] = [];
  for (const r of ranges) {
    if (!(Number.isInteger(r.begin) && Number.isInteger(r.end) && r.begin >= 0 && r.end <= ctx.slots && r.begin < r.end)) return null;
    for (let s = r.begin; s < r.end; s++) out.push(slotStart(s + 1, ctx.elements, ctx.slots) - slotStart(s, ctx.elements, ctx.slots));
  }
  return out;
}

/** Bytes of a gradient for `lengths` under `compression` (float32 without one); 0 where it has no size. */
function wireSize(lengths: number[], compression: string | undefined): number {
  if (compression === undefined) return 4 * lengths.reduce((a, b) => a + b, 0);
  try {
    const c = parseCompression(compression);
    return lengths.reduce((a, n) => a + encodedSlotBytes(c, n), 0);
  } catch {
    return 0;
  }
}

/** `n` bytes of noise from `seed` (xorshift32): drawing them one by one from fast-check would cost more than sending them. */
function noise(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** One bulk request: a pull or a push for the cluster, its header often wrong in one field, as one frame, or mutated, or two frames run together, or garbage. */
export function bulkFrameArb(ctx: FuzzContext): fc.Arbitrary<Buffer> {
  const common = {
    id: fc.nat(),
    epoch: likely(ctx.epoch, anyNumber),
    ranges: rangesArb(ctx.slots),
    workerId: likely(ctx.worker, anyText),
    model: likely(ctx.model, anyText),
    clock: fc.option(anyNumber, { nil: undefined, freq: 4 }),
  };
  const pull = fc.record({ ...common, op: fc.constant('pull'), join: fc.option(fc.boolean(), { nil: undefined, freq: 4 }) }).map((h) => ({ header: h as object, payload: Buffer.alloc(0) }));
  const push = fc
    .record({ ...common, op: fc.constant('push'), seq: seqArb(ctx), compression: fc.option(fc.constantFrom('fp16', 'int8', 'topk:0.1', 'topk:1', 'topk:0', 'none', 'zip'), { nil: undefined, freq: 3 }) })
    .chain((h) => {
      const lengths = slotLengths(ctx, h.ranges) ?? [8];
      const n = lengths.reduce((a, b) => a + b, 0);
      const wire = wireSize(lengths, h.compression);
      const payload = h.compression === undefined ? valuesFor(n) : fc.oneof(fc.integer().map((seed) => noise(wire, seed)), fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)));
      return fc.record({ length: likely(n, anyNumber), wireBytes: likely(wire, anyNumber), payload }).map(({ length, wireBytes, payload }) => ({
        header: { ...h, length, ...(h.compression === undefined ? {} : { wireBytes }) } as object,
        payload,
      }));
    });
  const request = fc.oneof(pull, push);
  const frame = fc.oneof(
    { weight: 5, arbitrary: request.map(({ header, payload }) => Buffer.concat([encodeHead(header), payload])) },
    { weight: 3, arbitrary: request.chain(({ header, payload }) => jsonMutated(header).map((h) => Buffer.concat([encodeHead(h as object), payload]))) },
  );
  return fc.oneof(
    { weight: 6, arbitrary: frame },
    { weight: 3, arbitrary: mutated(frame) },
    { weight: 1, arbitrary: fc.tuple(frame, frame).map(([a, b]) => Buffer.concat([a, b])) },
    { weight: 1, arbitrary: garbage },
  );
}

/**
 * Whether a shard reads `frame` as exactly one whole request, as
 * server/bulk-service.ts frames them: a header it parses, then exactly the
 * payload that header announces. Only then does it answer and wait for the
 * next request on the same connection; any other bytes end with the
 * connection closed, or with the shard waiting for bytes that never come.
 */
export function readsWhole(frame: Buffer): boolean {
  if (frame.length < 4) return false;
  const len = frame.readUInt32LE(0);
  if (len > MAX_BULK_HEADER_BYTES || frame.length < 4 + len) return false;
  let h: { op?: unknown; length?: unknown; compression?: unknown; wireBytes?: unknown } | null;
  try {
    h = JSON.parse(frame.toString('utf8', 4, 4 + len)) as typeof h;
  } catch {
    return false;
  }
  const rest = frame.length - 4 - len;
  if (h?.op === 'pull') return rest === 0;
  const length = h?.length;
  if (h?.op !== 'push' || !(Number.isSafeInteger(length) && (length as number) >= 0 && (length as number) <= 2 ** 31)) return false;
  const wire = h.compression ? h.wireBytes : (length as number) * 4;
  return Number.isSafeInteger(wire) && rest === wire;
}

/** What the shard did with one frame: its replies, and whether it closed the connection. */
export interface BulkOutcome {
  replies: BulkReply[];
  closed: boolean;
  /** Neither answered nor closed in time. */
  timedOut: boolean;
}

/**
 * A TLS connection to a bulk port that sends one frame at a time. A frame
 * the shard reads whole is answered and the connection kept for the next;
 * after any other bytes the probe ends its side at once (the shard sees the
 * request cut short, if it was still reading one) and waits for the close.
 * The TLS session is resumed on the next connection, to keep handshakes cheap.
 */
export class BulkProbe {
  private socket: tls.TLSSocket | null = null;
  private session: Buffer | undefined;
  private replies: BulkReply[] = [];
  private closed = true;
  private wake: (() => void) | null = null;

  constructor(
    private readonly address: string,
    private readonly security: TransportSecurity,
  ) {}

  async send(frame: Buffer, timeoutMs: number): Promise<BulkOutcome> {
    if (this.closed) await this.connect();
    const socket = this.socket!;
    const whole = readsWhole(frame);
    this.replies = [];
    socket.write(frame);
    if (!whole) socket.end();
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && (!whole || this.replies.length === 0) && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, Math.max(1, deadline - Date.now())).unref();
      });
    }
    const timedOut = !this.closed && (!whole || this.replies.length === 0);
    if (timedOut) {
      socket.destroy();
      this.closed = true;
    }
    return { replies: this.replies, closed: this.closed, timedOut };
  }

  close(): void {
    this.socket?.destroy();
  }

  private async connect(): Promise<void> {
    if (this.security.kind !== 'mtls') throw new Error('the bulk probe speaks TLS only');
    const i = this.address.lastIndexOf(':');
    const socket = tls.connect({
      host: this.address.slice(0, i),
      port: Number(this.address.slice(i + 1)),
      secureContext: this.security.material.secureContext,
      servername: 'tessera',
      checkServerIdentity: () => undefined,
      ...(this.session ? { session: this.session } : {}),
    });
    socket.setNoDelay(true);
    socket.on('session', (s: Buffer) => (this.session = s));
    const reader = new BulkFrameReader(
      (h) => {
        const reply = h as BulkReply;
        this.replies.push(reply);
        return reply.ok && 'total' in reply ? reply.total * 4 : 0;
      },
      () => undefined,
      () => this.wake?.(),
    );
    socket.on('data', (d: Buffer) => reader.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.closed = true;
      this.wake?.();
    });
    this.socket = socket;
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    this.closed = false;
  }
}
