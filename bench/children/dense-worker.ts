import { setLogLevel } from '../../cluster/log.js';
import { RemoteMembershipStore } from '../../cluster/membership/remote-store.js';
import { TesseraClient } from '../../client/tessera-client.js';
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
}

serve(
  {
    connect: async ({ membership, workerId, chunkBytes, transport }: { membership: string; workerId: string; chunkBytes?: number; transport?: 'bulk' | 'grpc' }) => {
      store = new RemoteMembershipStore(membership);
      client = await TesseraClient.connect({ store, workerId, ...(chunkBytes ? { chunkBytes } : {}), ...(transport ? { transport } : {}) });
      // A small constant gradient keeps sgd's values finite however often it is pushed.
      gradient = new Float32Array(client.elements).fill(1e-3);
      values = new Float32Array(client.elements);
      return { elements: client.elements };
    },
    run: async ({ op }: { op: DenseOp }): Promise<OpTiming> => {
      const c = client!;
      const cpu0 = process.cpuUsage();
      const faults0 = process.resourceUsage().minorPageFault;
      const start = nowNs();
      let mid = start;
      if (op === 'push' || op === 'pushpull') await c.push(gradient);
      mid = nowNs();
      if (op === 'pull' || op === 'pushpull') await c.pull(values);
      const end = nowNs();
      const cpu = process.cpuUsage(cpu0);
      return { start, mid, end, cpuMs: (cpu.user + cpu.system) / 1000, faults: process.resourceUsage().minorPageFault - faults0 };
    },
  },
  async () => {
    await client?.close();
    await store?.close();
  },
);
