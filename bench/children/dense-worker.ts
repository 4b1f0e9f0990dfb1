import { setLogLevel } from '../../cluster/log.js';
import { RemoteMembershipStore } from '../../cluster/membership/remote-store.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { mutualTls } from '../../cluster/tls/transport-security.js';
import { nowNs, serve } from '../child-rpc.js';

/**
 * A worker process for the dense benchmarks: pushes a whole-model gradient and
 * pulls the whole model through the typed client, and reports when each
 * operation started and ended on the host's monotonic clock, so the parent can
 * time several workers as one.
 */

setLogLevel('warn');
let client: TesseraClient | undefined;
let store: RemoteMembershipStore | undefined;
let gradient: Float32Array;
let values: Float32Array;

export type DenseOp = 'push' | 'pull' | 'pushpull';

/** Times in ns; `mid` ends the push leg of a push+pull. `cpuMs`: this process's CPU time during the operation. */
export interface OpTiming {
  start: number;
  mid: number;
  end: number;
  cpuMs: number;
  /** Minor page faults during the operation (fresh memory being mapped). */
  faults: number;
  /** Bytes of gradient the push put on the wire (PushStats.wireBytes; after the codec); 0 without a push. */
  wireBytes: number;
}

/** `n` values uniform in [−1e-3, 1e-3), from a fixed seed (a 32-bit LCG: every run pushes the same gradient). */
function randomGradient(n: number): Float32Array {
  const out = new Float32Array(n);
  let state = 7;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = (state / 2 ** 32 - 0.5) * 2e-3;
  }
  return out;
}

serve(
  {
    connect: async ({ membership, workerId, chunkBytes, transport, compression, tlsDir }: { membership: string; workerId: string; chunkBytes?: number; transport?: 'bulk' | 'grpc'; compression?: string; tlsDir?: string }) => {
      store = new RemoteMembershipStore(membership);
      const security = tlsDir ? { security: mutualTls(tlsDir) } : {};
      client = await TesseraClient.connect({ store, workerId, ...(chunkBytes ? { chunkBytes } : {}), ...(transport ? { transport } : {}), ...(compression ? { compression } : {}), ...security });
      // A small constant gradient keeps sgd's values finite however often it is pushed. Under a codec, small
      // seeded random values instead (mean 0, so as finite): a constant would make every int8 block, fp16 value
      // and top-k tie alike, which no real gradient is.
      gradient = compression ? randomGradient(client.elements) : new Float32Array(client.elements).fill(1e-3);
      values = new Float32Array(client.elements);
      return { elements: client.elements };
    },
    run: async ({ op }: { op: DenseOp }): Promise<OpTiming> => {
      const c = client!;
      const cpu0 = process.cpuUsage();
      const faults0 = process.resourceUsage().minorPageFault;
      const start = nowNs();
      let mid = start;
      let wireBytes = 0;
      if (op === 'push' || op === 'pushpull') wireBytes = (await c.push(gradient)).wireBytes;
      mid = nowNs();
      if (op === 'pull' || op === 'pushpull') await c.pull(values);
      const end = nowNs();
      const cpu = process.cpuUsage(cpu0);
      return { start, mid, end, cpuMs: (cpu.user + cpu.system) / 1000, faults: process.resourceUsage().minorPageFault - faults0, wireBytes };
    },
  },
  async () => {
    await client?.close();
    await store?.close();
  },
);
