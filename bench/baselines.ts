import { Child } from './child-rpc.js';
import { type Figure, MB, rateFigure } from './figures.js';

/**
 * The limits every data-path figure is held against, measured in the same run:
 * raw loopback TCP between two Node processes moving the same bytes, and
 * memory copy bandwidth. On a shared, noisy host a limit measured minutes
 * earlier says little, so the benchmarks interleave one limit measurement with
 * each repetition of the figure it bounds and take the ratio of the medians.
 */

/**
 * Raw TCP between two processes: a source writes a transfer with one `write`,
 * a sink counts the bytes (touching nothing) and answers one byte. Both stay
 * up, idle, between transfers.
 */
export class TcpPair {
  private constructor(
    private readonly sink: Child,
    private readonly source: Child,
  ) {}

  static async start(maxBytes: number): Promise<TcpPair> {
    const sink = Child.start('tcp-sink', 'tcp-peer');
    const source = Child.start('tcp-source', 'tcp-peer');
    const { port } = await sink.call<{ port: number }>('listen');
    await source.call('connect', { port, bytes: maxBytes });
    const pair = new TcpPair(sink, source);
    await pair.transfer(maxBytes); // warm-up
    return pair;
  }

  /** One transfer of `bytes`; MB/s of payload, one way. */
  async transfer(bytes: number): Promise<number> {
    const t = await this.source.call<{ start: number; end: number }>('send', { bytes });
    return bytes / MB / ((t.end - t.start) / 1e9);
  }

  async close(): Promise<void> {
    await Promise.all([this.source.stop(), this.sink.stop()]);
  }
}

/**
 * The gRPC transport alone (children/grpc-peer.ts): grpc-js streaming raw
 * bytes between two processes with Tessera's server and channel settings,
 * without protobuf or shard work. Tessera's dense figures can be no better.
 */
export class GrpcPair {
  private constructor(
    private readonly server: Child,
    private readonly client: Child,
    private readonly chunk: number,
  ) {}

  static async start(chunk: number): Promise<GrpcPair> {
    const server = Child.start('grpc-server', 'grpc-peer');
    const client = Child.start('grpc-client', 'grpc-peer');
    const { port } = await server.call<{ port: number }>('listen', { chunk });
    await client.call('connect', { port, chunk });
    return new GrpcPair(server, client, chunk);
  }

  /** One streamed transfer of `bytes` (client → server for push, back for pull); MB/s. */
  async transfer(op: 'push' | 'pull', bytes: number): Promise<number> {
    const t = await this.client.call<{ start: number; end: number }>(op, { bytes, chunk: this.chunk });
    return bytes / MB / ((t.end - t.start) / 1e9);
  }

  async close(): Promise<void> {
    await Promise.all([this.client.stop(), this.server.stop()]);
  }
}

/**
 * `Buffer.copy` between two buffers of `bytes`, far larger than any cache. MB/s
 * copied; each copied byte is read once and written once, so the memory
 * traffic is twice this (the convention STREAM's "Copy" uses).
 */
export class Memcpy {
  private readonly src: Buffer;
  private readonly dst: Buffer;

  constructor(readonly bytes: number) {
    this.src = Buffer.alloc(bytes, 1);
    this.dst = Buffer.alloc(bytes, 2);
    this.once();
  }

  /** One copy; MB/s copied. */
  once(): number {
    const t0 = process.hrtime.bigint();
    this.src.copy(this.dst);
    const ns = Number(process.hrtime.bigint() - t0);
    return this.bytes / MB / (ns / 1e9);
  }
}

/** A baseline figure from interleaved samples. */
export function limitFigure(name: string, rates: number[], bytes: number, traffic = false): Figure {
  const f = rateFigure(name, 'MB/s', rates);
  f.detail = traffic ? { bytes, traffic_MBps: 2 * f.value } : { bytes };
  return f;
}
