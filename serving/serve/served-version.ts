import type { LoadedModel } from '../runtime/runtime.js';

/**
 * One loaded version of a served model: what the repository swaps in and out
 * and what each request runs on.
 */
export interface ServedVersion {
  /** The model's name as its files declare it (the server answers under its own configured name). */
  name: string;
  /** The version: the positive integer its directory is named after. */
  version: number;
  /** The runtime that answers requests; closed by the repository once no request holds it. */
  model: LoadedModel;
  /** The version's manifest, if it has one (shown as is; the serving layer reads nothing in it). */
  manifest?: Record<string, unknown>;
}

/**
 * Turns a version directory (`DIR/NAME/<version>/`) into a loaded version.
 * Rejects with an error whose message says what is wrong with the files
 * (serving/errors.ts ModelLoadError, VerificationError); the directory
 * watcher logs that message and keeps the previous version serving.
 */
export type VersionLoader = (versionDir: string, version: number) => Promise<ServedVersion>;
