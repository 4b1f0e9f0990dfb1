import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * The child processes of `tessera local`: each role runs as its own
 * `tessera <verb>` process, so the OS spreads them over every core. They are
 * stopped together, politely (SIGTERM) and then firmly (SIGKILL).
 */
export class RoleProcesses {
  private readonly children = new Map<string, ChildProcess>();
  private readonly exits = new Map<string, Promise<number>>();

  constructor(private readonly env: NodeJS.ProcessEnv) {}

  /** Starts `tessera <args…>`; `onLine` gets each stdout line. */
  start(name: string, args: string[], onLine?: (line: string) => void): ChildProcess {
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
      stdio: ['ignore', onLine ? 'pipe' : 'ignore', 'inherit'],
      env: this.env,
    });
    if (onLine && child.stdout) createInterface({ input: child.stdout }).on('line', onLine);
    this.children.set(name, child);
    this.exits.set(
      name,
      new Promise<number>((resolve) => {
        child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
        child.on('error', () => resolve(127));
      }),
    );
    return child;
  }

  /** Resolves with the exit code of `name`. */
  exited(name: string): Promise<number> {
    return this.exits.get(name) ?? Promise.resolve(0);
  }

  /** Rejects as soon as any of `names` exits with a non-zero code. */
  failureOf(names: string[]): Promise<never> {
    return new Promise((_, reject) => {
      for (const n of names) {
        void this.exited(n).then((code) => {
          if (code !== 0) reject(new Error(`${n} exited with code ${code}; its log is above`));
        });
      }
    });
  }

  /**
   * SIGTERM to all still running, SIGKILL to those alive after `graceMs`.
   * `first`: those stopped (and waited for) before the others, so that clients
   * are gone before the servers they call (no failed calls in a clean stop).
   */
  async stopAll(graceMs = 5_000, first?: (name: string) => boolean): Promise<void> {
    if (first) {
      await this.stopSome(graceMs, first);
      return this.stopSome(graceMs, () => true);
    }
    return this.stopSome(graceMs, () => true);
  }

  private async stopSome(graceMs: number, which: (name: string) => boolean): Promise<void> {
    const running = [...this.children].filter(([n, c]) => which(n) && c.exitCode === null && c.signalCode === null);
    for (const [, c] of running) c.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const [, c] of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, graceMs);
    await Promise.all(running.map(([n]) => this.exited(n)));
    clearTimeout(timer);
  }
}
