import { type OptionSpec } from './args.js';

/** `--metrics HOST:PORT` of `tessera shard` and `tessera worker` (docs/operations.md, "Metrics"). */
export const METRICS_OPTION: OptionSpec = {
  name: 'metrics',
  type: 'string',
  metavar: 'HOST:PORT',
  description:
    'serve Prometheus metrics on http://HOST:PORT/metrics (plain HTTP, read-only: counts, timings and losses, never the model’s values; keep it on loopback or behind a network policy that admits only the scraper; docs/operations.md) (default: off)',
};
