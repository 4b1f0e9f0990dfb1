import { readFile } from 'node:fs/promises';
import { UsageError } from './args.js';

/** The bytes of a key file named on the command line (`--sign`, `--public-key`). @throws UsageError naming the file when it cannot be read. */
export async function readKeyFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new UsageError(`cannot read the key ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
