import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../cluster/log.js';
import type { ServedVersion, VersionLoader } from './served-version.js';

const log = createLogger('model-repository');

/** How often a {@link DirectoryWatcher} looks for a new version unless told otherwise: 1 s. */
export const DEFAULT_POLL_MS = 1000;

/** Version directories are named by a positive integer, as TensorFlow Serving and Triton lay them out. */
const VERSION_DIR = /^[0-9]+$/;

/** A request's hold on one version: the version is not closed until every lease on it is released. */
export interface VersionLease {
  readonly served: ServedVersion;
  /** Gives the hold back; calling it again does nothing. */
  release(): void;
}

/** A version that could not be loaded, and why (the loader's message). */
export interface VersionFailure {
  version: number;
  message: string;
  /** When it failed, ISO 8601. */
  at: string;
}

/** What the status endpoints show. */
export interface RepositoryStatus {
  name: string;
  /** The version being served, if any. */
  current?: number;
  /** When it became current, ISO 8601. */
  since?: string;
  /** Versions whose last load failed, lowest first. */
  failures: VersionFailure[];
}

interface Entry {
  served: ServedVersion;
  refs: number;
  retired: boolean;
  closing: boolean;
  since: string;
  /** Resolves once the version's model is closed. */
  closed: Promise<void>;
  markClosed(): void;
}

/**
 * Holds the current version of one model name and swaps it without failing a
 * request: each request {@link acquire}s the current version and releases it
 * when answered; {@link swap} makes the next version current at once, and the
 * previous one is closed only when its last in-flight request has released it.
 */
export class ModelRepository {
  private currentEntry: Entry | undefined;
  private readonly failed = new Map<number, VersionFailure>();
  private readonly retiring = new Set<Entry>();
  private closedRepository = false;

  /** @param name the model name this repository serves (for status and logs). */
  constructor(readonly name: string) {}

  /** The version being served, without holding it (for metadata); undefined before the first load. */
  current(): ServedVersion | undefined {
    return this.currentEntry?.served;
  }

  /** Holds the current version for one request; undefined when none is loaded (or the repository is closed). */
  acquire(): VersionLease | undefined {
    const entry = this.currentEntry;
    if (!entry) return undefined;
    entry.refs++;
    let released = false;
    return {
      served: entry.served,
      release: () => {
        if (released) return;
        released = true;
        entry.refs--;
        if (entry.retired && entry.refs === 0) this.closeEntry(entry);
      },
    };
  }

  /**
   * Makes `next` the current version: requests acquired from now on run on
   * it. The previous version is closed once its in-flight requests have
   * released it; the returned promise resolves then (callers need not wait).
   * @throws Error when the repository is closed (`next` is closed too, so nothing leaks).
   */
  async swap(next: ServedVersion): Promise<void> {
    if (this.closedRepository) {
      await next.model.close().catch(() => undefined);
      throw new Error(`model repository "${this.name}" is closed; version ${next.version} was not swapped in`);
    }
    const previous = this.currentEntry;
    if (previous?.served === next) return;
    this.currentEntry = newEntry(next);
    this.failed.delete(next.version);
    log.info(`model ${this.name}: serving version ${next.version}${previous ? ` (was ${previous.served.version}, closed once its ${previous.refs} in-flight request(s) finish)` : ''}`);
    if (previous) await this.retire(previous);
  }

  /** Records that `version` failed to load (shown by {@link status}); the current version keeps serving. */
  reportFailure(version: number, message: string): void {
    this.failed.set(version, { version, message, at: new Date().toISOString() });
  }

  /** Forgets a failure (its directory is gone, or it was fixed). */
  clearFailure(version: number): void {
    this.failed.delete(version);
  }

  /** The current version and the failed ones, for status endpoints (TensorFlow Serving's `GET /v1/models/NAME`). */
  status(): RepositoryStatus {
    const failures = [...this.failed.values()].sort((a, b) => a.version - b.version);
    const entry = this.currentEntry;
    return entry ? { name: this.name, current: entry.served.version, since: entry.since, failures } : { name: this.name, failures };
  }

  /**
   * Stops serving: {@link acquire} returns undefined from now on, and every
   * version is closed once its in-flight requests are done; resolves then.
   */
  async close(): Promise<void> {
    this.closedRepository = true;
    const entry = this.currentEntry;
    this.currentEntry = undefined;
    if (entry) void this.retire(entry);
    await Promise.all([...this.retiring].map((e) => e.closed));
  }

  private retire(entry: Entry): Promise<void> {
    entry.retired = true;
    this.retiring.add(entry);
    if (entry.refs === 0) this.closeEntry(entry);
    return entry.closed;
  }

  private closeEntry(entry: Entry): void {
    if (entry.closing) return;
    entry.closing = true;
    const { version } = entry.served;
    entry.served.model
      .close()
      .then(
        () => log.debug(`model ${this.name}: version ${version} closed`),
        (err: unknown) => log.warn(`model ${this.name}: closing version ${version} failed: ${(err as Error).message}`),
      )
      .finally(() => {
        this.retiring.delete(entry);
        entry.markClosed();
      });
  }
}

function newEntry(served: ServedVersion): Entry {
  let markClosed!: () => void;
  const closed = new Promise<void>((resolve) => (markClosed = resolve));
  return { served, refs: 0, retired: false, closing: false, since: new Date().toISOString(), closed, markClosed };
}

/** Options of a {@link DirectoryWatcher}. */
export interface DirectoryWatcherOptions {
  /** The model's folder, `DIR/NAME/`, holding one sub-folder per version. */
  dir: string;
  /** Turns a version folder into a loaded version (injected: one per deployment's formats and checks). */
  loader: VersionLoader;
  /** Where loaded versions are swapped in. */
  repository: ModelRepository;
  /** Milliseconds between scans; default {@link DEFAULT_POLL_MS}. */
  pollMs?: number;
}

/** What the watcher knows, for status endpoints and logs. */
export interface WatcherState {
  dir: string;
  current?: number;
  /** Versions that failed, with the directory mtime they failed at (not retried until it changes). */
  failed: { version: number; message: string; mtimeMs: number }[];
  /** Why the last scan could not read `dir`, if it could not. */
  scanError?: string;
}

/**
 * Serves the highest version found in `DIR/NAME/`: polls the folder every
 * `pollMs` (fs.watch misses changes on network and container volumes), loads
 * the highest positive-integer sub-folder when it is not the one served, and
 * swaps it in. A load that fails is logged with the loader's message, the
 * current version keeps serving, and that version is not tried again until
 * its folder's mtime changes (a file added, removed or renamed in it; a
 * rewrite in place of an existing file does not change it). Entries that are
 * not positive integers — a `.tmp-…` folder being written, then renamed into
 * place — are ignored.
 */
export class DirectoryWatcher {
  private readonly pollMs: number;
  private readonly failed = new Map<number, { message: string; mtimeMs: number }>();
  private scanError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly options: DirectoryWatcherOptions) {
    this.pollMs = options.pollMs ?? DEFAULT_POLL_MS;
    if (!(this.pollMs > 0)) throw new Error(`pollMs must be a positive number of milliseconds, got ${options.pollMs}`);
  }

  /** Scans once (so a server starts with a version when one is there), then every `pollMs`. */
  async start(): Promise<void> {
    await this.poll();
    this.schedule();
  }

  /** One scan, and a load if there is a new highest version; concurrent calls share one scan. */
  poll(): Promise<void> {
    this.polling ??= this.scan().finally(() => (this.polling = undefined));
    return this.polling;
  }

  /** What the watcher knows now: the folder, the served version, failed versions and why, a scan problem. */
  state(): WatcherState {
    const failed = [...this.failed].map(([version, f]) => ({ version, ...f })).sort((a, b) => a.version - b.version);
    const current = this.options.repository.current()?.version;
    return { dir: this.options.dir, ...(current !== undefined ? { current } : {}), failed, ...(this.scanError ? { scanError: this.scanError } : {}) };
  }

  /** Stops polling and waits for a scan in progress; a version it was loading is closed, not swapped in. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.polling;
  }

  private schedule(): void {
    if (this.closed) return;
    // The next scan is timed from the end of this one, so a slow load never overlaps another.
    this.timer = setTimeout(() => void this.poll().finally(() => this.schedule()), this.pollMs);
    this.timer.unref();
  }

  private async scan(): Promise<void> {
    if (this.closed) return;
    const { dir, repository } = this.options;
    let found: Map<number, string>;
    try {
      found = await listVersions(dir);
      this.scanError = undefined;
    } catch (err) {
      const message = (err as Error).message;
      // Once per distinct problem: a missing folder would otherwise log every second.
      if (message !== this.scanError) log.warn(`cannot read model folder ${dir}: ${message}; still looking every ${this.pollMs} ms`);
      this.scanError = message;
      return;
    }
    for (const version of this.failed.keys()) {
      if (!found.has(version)) {
        this.failed.delete(version);
        repository.clearFailure(version);
      }
    }
    const highest = found.size ? Math.max(...found.keys()) : undefined;
    const current = repository.current()?.version;
    if (highest === undefined || highest === current) return;

    const versionDir = join(dir, found.get(highest)!);
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(versionDir)).mtimeMs;
    } catch {
      return; // removed between the listing and now: the next scan sees what is left
    }
    if (this.failed.get(highest)?.mtimeMs === mtimeMs) return;

    log.info(`model ${repository.name}: loading version ${highest} from ${versionDir}`);
    let served: ServedVersion;
    try {
      served = await this.options.loader(versionDir, highest);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.failed.set(highest, { message, mtimeMs });
      repository.reportFailure(highest, message);
      log.warn(
        `model ${repository.name}: version ${highest} failed to load: ${message}; ` +
          `${current === undefined ? 'no version is served' : `still serving version ${current}`}; ` +
          `not retried until ${versionDir} changes`,
      );
      return;
    }
    // The folder names the version: a loader that reads another number from a manifest must not make us reload forever.
    if (served.version !== highest) {
      log.debug(`model ${repository.name}: loader reported version ${served.version} for ${versionDir}; serving it as ${highest}`);
      served = { ...served, version: highest };
    }
    if (this.closed) {
      await served.model.close().catch(() => undefined);
      return;
    }
    this.failed.delete(highest);
    repository.swap(served).catch((err: unknown) => log.warn(`model ${repository.name}: ${(err as Error).message}`));
  }
}

/** The positive-integer sub-folders of `dir` (following links): version → folder name ("7", or "007"). */
async function listVersions(dir: string): Promise<Map<number, string>> {
  const entries = await readdir(dir, { withFileTypes: true });
  const versions = new Map<number, string>();
  for (const e of entries) {
    if (!VERSION_DIR.test(e.name)) continue;
    const version = Number(e.name);
    if (version < 1 || !Number.isSafeInteger(version)) continue;
    let isDir = e.isDirectory();
    if (!isDir && e.isSymbolicLink()) isDir = await stat(join(dir, e.name)).then((s) => s.isDirectory(), () => false);
    // "7" and "007" naming the same version is a mistake on disk; whichever the file system lists first is used.
    if (isDir && !versions.has(version)) versions.set(version, e.name);
  }
  return versions;
}
