import { type ModelFormat } from '../runtime/runtime.js';

/** A file of an exported version, relative to the version's directory. */
export interface WrittenFile {
  path: string;
  bytes: Uint8Array;
}

/** What a format writes for a graph, and how its weights were stored. */
export interface FormatOutput {
  format: ModelFormat;
  files: WrittenFile[];
  /** How each weight is stored, in words for the manifest (e.g. "int8, a scale per output channel"). */
  storage: Record<string, string>;
}
