import { setLogLevel } from '../../cluster/log.js';
import { RemoteMembershipStore } from '../../cluster/membership/remote-store.js';
import { ShardServer } from '../../server/shard-server.js';
import { mutualTls } from '../../cluster/tls/transport-security.js';
import { serve } from '../child-rpc.js';

/** A shard server in its own process, as `tessera shard` runs one, reached through the bench's membership store. */

setLogLevel('warn');
let server: ShardServer | undefined;
let store: RemoteMembershipStore | undefined;

serve(
  {
    start: async ({ membership, id, tlsDir, lease }: { membership: string; id: string; tlsDir?: string; lease?: { ttlMs: number; renewMs: number } }) => {
      store = new RemoteMembershipStore(membership);
      server = await ShardServer.start({ id, listen: '127.0.0.1:0', store, ...(tlsDir ? { security: mutualTls(tlsDir) } : {}), ...(lease ? { lease } : {}) });
      return { address: server.address };
    },
    /** CPU time this process has used so far, in ms (user + system), and its minor page faults. */
    cpu: () => {
      const u = process.resourceUsage();
      return { ms: (u.userCPUTime + u.systemCPUTime) / 1000, faults: u.minorPageFault };
    },
    /** The shard's sparse tables and their counters (rows held, rows created, bytes held…). */
    sparse: () => server!.sparse.stats(),
    /** Resolves once the shard serves the map of `epoch` (or a later one). */
    awaitEpoch: async ({ epoch }: { epoch: number }) => {
      const s = server!;
      while (s.shard.epoch < epoch) {
        await s.refresh();
        if (s.shard.epoch < epoch) await new Promise((r) => setTimeout(r, 20));
      }
      return { epoch: s.shard.epoch, elements: s.shard.store.heldElements() };
    },
  },
  async () => {
    await server?.close(500);
    await store?.close();
  },
);
