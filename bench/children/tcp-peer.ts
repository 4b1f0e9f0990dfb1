import { createServer, connect, type Socket } from 'node:net';
import { withReadBuffer } from '../../server/bulk-service.js';
import { nowNs, serve } from '../child-rpc.js';

/**
 * One end of the raw loopback TCP baseline. The sink counts the bytes it
 * receives (touching nothing) and answers one byte per transfer; the source
 * writes a whole transfer with one `write` and times it until that byte. The
 * sink reads into one reused buffer, as the shards' bulk transport does
 * (server/bulk-service.ts): with a fresh buffer per read, as plain 'data'
 * events give, raw TCP itself ran at about half the rate (docs/benchmarks.md),
 * and the limit would flatter what is held against it.
 */

let server: ReturnType<typeof createServer> | undefined;
let socket: Socket | undefined;
let payload: Buffer | undefined;

serve(
  {
    /** Sink: listen on a free loopback port. */
    listen: () =>
      new Promise<{ port: number }>((resolve) => {
        server = createServer({ pauseOnConnect: true }, (accepted) => {
          const { socket: s, read } = withReadBuffer(accepted);
          s.setNoDelay(true);
          let expected = 0;
          let got = 0;
          let header = Buffer.alloc(0);
          // Each transfer starts with its length (8 bytes), so the sink needs no side channel.
          read.on = (chunk: Buffer) => {
            let c = chunk;
            while (c.length > 0) {
              if (expected === 0) {
                const need = 8 - header.length;
                header = Buffer.concat([header, c.subarray(0, need)]);
                c = c.subarray(need);
                if (header.length < 8) return;
                expected = Number(header.readBigUInt64LE(0));
                header = Buffer.alloc(0);
                got = 0;
              }
              const take = Math.min(c.length, expected - got);
              got += take;
              c = c.subarray(take);
              if (got === expected) {
                expected = 0;
                s.write(Buffer.from([1]));
              }
            }
          };
        });
        server.listen(0, '127.0.0.1', () => resolve({ port: (server!.address() as { port: number }).port }));
      }),

    /** Source: connect to the sink. */
    connect: ({ port, bytes }: { port: number; bytes: number }) =>
      new Promise<void>((resolve, reject) => {
        payload = Buffer.alloc(bytes, 0x5a);
        socket = connect(port, '127.0.0.1', () => resolve());
        socket.setNoDelay(true);
        socket.once('error', reject);
      }),

    /** Source: one transfer of `bytes`; returns its start and end (ns). */
    send: ({ bytes }: { bytes: number }) =>
      new Promise<{ start: number; end: number }>((resolve) => {
        const s = socket!;
        const header = Buffer.alloc(8);
        header.writeBigUInt64LE(BigInt(bytes));
        const start = nowNs();
        s.once('data', () => resolve({ start, end: nowNs() }));
        s.write(header);
        s.write(payload!.subarray(0, bytes));
      }),
  },
  async () => {
    socket?.destroy();
    server?.close();
  },
);
