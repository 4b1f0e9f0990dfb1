import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Benchmarks put every role in its own process, as a deployment would. The
 * parent drives its children with a tiny request/reply protocol over Node's
 * IPC channel: control messages only, never the data being measured.
 */

interface Request {
  id: number;
  cmd: string;
  args: unknown;
}
interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** Extra flags for every child's node (e.g. `--cpu-prof`); set by the bench entry. */
let childExecArgv: string[] = [];
export function setChildExecArgv(flags: string[]): void {
  childExecArgv = flags;
}

/** The parent's handle on one child. */
export class Child {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly exited: Promise<number>;

  private constructor(
    readonly name: string,
    private readonly proc: ChildProcess,
  ) {
    proc.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${name}: ${m.error}`));
    });
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        for (const p of this.pending.values()) p.reject(new Error(`${name} exited (${code ?? signal}) with a request pending`));
        this.pending.clear();
        resolve(code ?? 128);
      });
    });
  }

  /** Forks `dist/bench/children/<script>.js`; its stdout and stderr go to our stderr (stdout stays for results). */
  static start(name: string, script: string, env: NodeJS.ProcessEnv = {}): Child {
    const file = fileURLToPath(new URL(`./children/${script}.js`, import.meta.url));
    const proc = fork(file, [], { execArgv: childExecArgv, env: { ...process.env, ...env }, stdio: ['ignore', 2, 'inherit', 'ipc'] });
    return new Child(name, proc);
  }

  /** The child's process id (for attaching a profiler). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  call<T>(cmd: string, args: unknown = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, cmd, args } satisfies Request);
    });
  }

  /** SIGKILL, as in a crash; resolves once it has exited. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** Asks the child to exit cleanly; kills it if it has not within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    this.call('exit').catch(() => undefined);
    await this.exited;
    clearTimeout(timer);
  }
}

/** The child's side: answers requests with `handlers`; `exit` runs `onExit` and leaves. */
export function serve(handlers: Record<string, (args: never) => unknown>, onExit: () => Promise<void> = async () => undefined): void {
  if (!process.send) throw new Error('a bench child must be started by the bench (it needs an IPC channel)');
  process.on('message', (m: Request) => {
    const reply = (r: Omit<Reply, 'id'>) => process.send!({ id: m.id, ...r });
    if (m.cmd === 'exit') {
      void onExit().finally(() => {
        reply({ ok: true });
        process.disconnect();
        // Let stdio and any profile flush; the event loop empties once the channels close.
        setTimeout(() => process.exit(0), 2_000).unref();
      });
      return;
    }
    const h = handlers[m.cmd];
    if (!h) return reply({ ok: false, error: `unknown command ${m.cmd}` });
    Promise.resolve()
      .then(() => h(m.args as never))
      .then(
        (result) => reply({ ok: true, result }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) }),
      );
  });
}

/** Now, in ns, on the monotonic clock every process of this host shares. */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}
