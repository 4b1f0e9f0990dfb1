import { type OptionSpec, type ParsedOptions } from './args.js';

/** One verb of the `tessera` command: its options, declared once, and what it does. */
export interface Command {
  name: string;
  summary: string;
  options: readonly OptionSpec[];
  /** Resolves with the process exit code. */
  run(options: ParsedOptions): Promise<number>;
}
