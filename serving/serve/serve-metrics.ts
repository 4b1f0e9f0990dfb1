import { Counter, Gauge, type Registry } from 'prom-client';
import { createRegistry } from '../../cluster/metrics/registry.js';
import { type ModelServerStats } from './model-server.js';

/**
 * The Prometheus metrics of `tessera serve` (docs/operations.md): read from
 * the model server's own counters when scraped, so serving pays nothing per
 * request for them. Every series carries `model` (the name served).
 */
export function serveMetrics(model: string, stats: () => ModelServerStats): Registry {
  const registry = createRegistry({ model }, true);
  const protocols = ['http', 'grpc'] as const;
  /** A counter whose value is read from the server's own counts at each scrape; per protocol when `read` gives one count each. */
  const counter = (name: string, help: string, byProtocol: boolean, read: (s: ModelServerStats) => number | Record<(typeof protocols)[number], number>) =>
    new Counter({
      name,
      help,
      labelNames: byProtocol ? ['protocol'] : [],
      registers: [registry],
      collect() {
        const v = read(stats());
        this.reset();
        if (typeof v === 'number') this.inc(v);
        else for (const p of protocols) this.inc({ protocol: p }, v[p]);
      },
    });
  counter('tessera_serve_requests_total', 'Inference requests received, by protocol (http: the REST v1 and v2 routes; grpc: the Open Inference Protocol service).', true, (s) => ({ http: s.http.requests, grpc: s.grpc.requests }));
  counter('tessera_serve_errors_total', 'Inference requests answered with an error, by protocol.', true, (s) => ({ http: s.http.errors, grpc: s.grpc.errors }));
  counter('tessera_serve_batches_total', 'Runs of the model: requests that arrived together are merged into one run (--max-batch, --max-delay-ms).', false, (s) => s.batching.batches);
  counter('tessera_serve_batch_rows_total', 'Rows (examples) run by the model, over every run; divided by tessera_serve_batches_total, the mean batch.', false, (s) => s.batching.rows);
  new Gauge({
    name: 'tessera_serve_largest_batch_rows',
    help: 'Rows of the largest run of the model so far.',
    registers: [registry],
    collect() {
      this.set(stats().batching.largestBatch);
    },
  });
  new Gauge({
    name: 'tessera_serve_model_version',
    help: 'The version being served, as a number (absent before the first is loaded).',
    registers: [registry],
    collect() {
      this.reset();
      const v = stats().version;
      if (v !== undefined) this.set(v);
    },
  });
  return registry;
}
