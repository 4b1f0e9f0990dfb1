import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The `tessera` command as installed: bin/tessera.js over the compiled dist/. */
export const BIN = fileURLToPath(new URL('../../../bin/tessera.js', import.meta.url));

export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
}

/** A `tessera` child process; its output is collected, `finished` settles on exit. */
export interface Running {
  child: ChildProcess;
  finished: Promise<Finished>;
  kill(signal?: NodeJS.Signals): void;
  /** What it has written to stdout so far. */
  stdout(): string;
  /** What it has written to stderr so far (its log). */
  stderr(): string;
}

/** Starts `tessera <args>` with children logging warnings only; it is killed if it outlives `timeoutMs`. */
export function start(args: string[], timeoutMs = 120_000, env: NodeJS.ProcessEnv = {}): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, TESSERA_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const finished = new Promise<Finished>((resolve) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : -1), stdout, stderr });
    });
  });
  return { child, finished, kill: (signal = 'SIGKILL') => child.kill(signal), stdout: () => stdout, stderr: () => stderr };
}

/** Runs `tessera <args>` to its end. */
export function run(args: string[], timeoutMs = 120_000, env: NodeJS.ProcessEnv = {}): Promise<Finished> {
  return start(args, timeoutMs, env).finished;
}

/** Polls `check` every `everyMs` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
