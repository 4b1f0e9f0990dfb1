import { TesseraError } from '../cluster/errors.js';
import { UsageError } from './args.js';

/** Exit codes: 0 ok, 1 the work failed, 2 the command line was wrong, 130 interrupted (Ctrl-C). */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** The one place that turns an error into a message on stderr and an exit code. */
export function handleError(err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`tessera: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof TesseraError) {
    process.stderr.write(`tessera: ${err.message}\n`);
    return EXIT.failed;
  }
  const e = err as Error;
  process.stderr.write(`tessera: ${e?.message ?? String(err)}\n`);
  if (process.env['TESSERA_LOG_LEVEL'] === 'debug' && e?.stack) process.stderr.write(`${e.stack}\n`);
  return EXIT.failed;
}
