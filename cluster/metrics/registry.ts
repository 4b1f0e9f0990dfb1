import { Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Buckets (seconds) of the request-latency histograms: from half a
 * millisecond (a small pull on loopback) to a minute (a clocked pull may wait
 * 45 s at the clock gate, server/admission.ts). Fifteen buckets: one series
 * each per label set, so they are kept few.
 */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60];

/**
 * A registry of Prometheus metrics for one role in a process (one shard, one
 * worker), never prom-client's global one: a test that runs several shards in
 * one process gets a registry each, told apart by `labels` (`shard`, `worker`),
 * which every series of the registry carries.
 *
 * `processMetrics`: also the standard process and Node.js metrics
 * (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
 * `nodejs_eventloop_lag_seconds`, `nodejs_heap_size_used_bytes`, …). Only for
 * the registry a process serves on `--metrics`: they describe the whole
 * process, and collecting them costs an event-loop monitor.
 */
export function createRegistry(labels: Record<string, string>, processMetrics: boolean): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  if (processMetrics) {
    collectDefaultMetrics({ register: registry });
    for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }
  return registry;
}

/**
 * prom-client's default gauges whose names end in `_total`, which
 * Prometheus keeps for counters (`promtool check metrics` says so). The same
 * counts are there by type, under the names without the suffix
 * (`nodejs_active_handles{type}`, …).
 */
const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];
