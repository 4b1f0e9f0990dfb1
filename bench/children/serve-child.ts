import { setLogLevel } from '../../cluster/log.js';
import { loadOnnx } from '../../serving/runtime/onnx-runtime.js';
import { ModelRepository } from '../../serving/serve/model-repository.js';
import { startModelServer, type ModelServer, type ModelServerStats } from '../../serving/serve/model-server.js';
import { serve } from '../child-rpc.js';

/**
 * `tessera serve`'s model server in its own process, as a deployment runs it,
 * so the load generator (the bench's process) does not share its event loop.
 * The bench sends the ONNX model once (base64, a control message: setup, not
 * measured traffic) and asks for one server per batching setting, all on the
 * same loaded version; `stats` gives each server's counters, so the bench can
 * take the mean batch size of every run from their difference.
 */

setLogLevel('warn');
let repository: ModelRepository | undefined;
const servers = new Map<string, ModelServer>();

interface ServerConfig {
  key: string;
  maxBatch: number;
  maxDelayMs: number;
}

serve(
  {
    start: async ({ name, onnxBase64, configs }: { name: string; onnxBase64: string; configs: ServerConfig[] }) => {
      const model = await loadOnnx(Buffer.from(onnxBase64, 'base64'));
      repository = new ModelRepository(name);
      await repository.swap({ name, version: 1, model });
      const addresses: Record<string, { http: string; grpc: string }> = {};
      for (const c of configs) {
        const server = await startModelServer({ name, http: '127.0.0.1:0', grpc: '127.0.0.1:0', maxBatch: c.maxBatch, maxDelayMs: c.maxDelayMs, source: { repository } });
        servers.set(c.key, server);
        addresses[c.key] = { http: server.httpAddress!, grpc: server.grpcAddress! };
      }
      return addresses;
    },
    /** Every server's counters, by key. */
    stats: () => {
      const out: Record<string, ModelServerStats> = {};
      for (const [key, s] of servers) out[key] = s.stats();
      return out;
    },
    /** CPU time this process has used so far, in ms (user + system). */
    cpu: () => {
      const u = process.resourceUsage();
      return { ms: (u.userCPUTime + u.systemCPUTime) / 1000 };
    },
  },
  async () => {
    await Promise.all([...servers.values()].map((s) => s.close()));
    await repository?.close();
  },
);
