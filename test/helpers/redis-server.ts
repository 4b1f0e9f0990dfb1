import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** How long redis-server may take to answer PING after it is spawned. */
const START_TIMEOUT_MS = 10_000;
/** How long a SIGTERM may take before the harness gives up waiting. */
const STOP_TIMEOUT_MS = 5_000;
const RDB_FILE = 'dump.rdb';

/** Every server still running, killed if the test process exits without stopping it. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface RestartOptions {
  /** Keep the data: SAVE to an RDB file in the server's directory before stopping, load it on start. Default false (an empty server, as persistence is off). */
  keepData?: boolean;
}

/**
 * A real `redis-server` for tests, on a free loopback port, persistence off,
 * in its own temporary directory. Start it with {@link RedisServer.start}; stop
 * it with {@link RedisServer.stop} (or {@link RedisServer.dispose} to also remove
 * its directory) in an `after`/`afterEach` hook.
 */
export class RedisServer {
  private child: ChildProcess | null = null;
  private output = '';

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extraArgs: readonly string[],
  ) {}

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Whether the process is running. */
  get running(): boolean {
    return this.child !== null;
  }

  /**
   * Starts a server on a free port and waits until it answers PING. `args` are
   * more redis-server arguments (e.g. `['--user', 'alice', 'on', '>pw', '~*', '&*', '+@all']`).
   * The harness's own commands (PING, SAVE) run as the default user.
   */
  static async start(args: readonly string[] = []): Promise<RedisServer> {
    const binary = findRedisServer();
    let lastError: Error | undefined;
    // The free port could be taken between finding it and binding it: try a few.
    for (let attempt = 0; attempt < 3; attempt++) {
      const server = new RedisServer(await freePort(), mkdtempSync(join(tmpdir(), 'tessera-redis-')), args);
      try {
        await server.spawn(binary);
        return server;
      } catch (err) {
        lastError = err as Error;
        await server.dispose();
      }
    }
    throw lastError!;
  }

  /** SIGTERM, then waits for the process to exit (SIGKILL if it takes too long). With `save`, SAVEs first, so a later `restart({ keepData: true })` finds the data. */
  async stop(options: { save?: boolean } = {}): Promise<void> {
    this.resume();
    if (options.save && this.child) await this.save();
    await this.signal('SIGTERM');
  }

  /** SIGKILL, then waits for the process to exit: Redis vanishes as in a crash. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /**
   * Starts it again on the same port, stopping it first if it runs. Empty by
   * default (persistence is off); with `keepData`, it SAVEs before stopping (if
   * it runs) and loads that RDB file, or the one a `stop({ save: true })` left.
   */
  async restart(options: RestartOptions = {}): Promise<void> {
    await this.stop({ save: options.keepData === true });
    if (!options.keepData) rmSync(join(this.dir, RDB_FILE), { force: true });
    await this.spawn(findRedisServer());
  }

  /** SAVE: writes the data set to the RDB file in the server's directory. */
  async save(): Promise<void> {
    const reply = await this.command('SAVE');
    if (reply !== '+OK') throw new Error(`redis-server on port ${this.port} refused SAVE: ${reply}`);
  }

  /** Freezes the process (SIGSTOP): connections stay open but nothing answers, as in a network partition. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  /** Thaws a paused process (SIGCONT). */
  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Stops the server and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Sends one inline command (no arguments with spaces) and returns the raw reply. */
  command(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.port, '127.0.0.1');
      let reply = '';
      const timer = setTimeout(() => socket.destroy(new Error(`redis-server on port ${this.port} did not answer ${line}`)), 5_000);
      socket.on('connect', () => socket.write(`${line}\r\n`));
      socket.on('data', (chunk) => {
        reply += chunk.toString();
        if (reply.endsWith('\r\n')) {
          clearTimeout(timer);
          socket.end();
          resolve(reply.trim());
        }
      });
      socket.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private async spawn(binary: string): Promise<void> {
    this.output = '';
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.dir,
      '--dbfilename', RDB_FILE,
      '--daemonize', 'no',
      '--loglevel', 'warning',
      ...this.extraArgs,
    ];
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    const keep = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString()).slice(-4_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.once('exit', () => {
      running.delete(child);
      if (this.child === child) this.child = null;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (this.child !== child) throw new Error(`redis-server exited while starting on port ${this.port}:\n${this.output}`);
      // NOAUTH also proves it answers (arguments may have disabled the default user).
      if (/^(\+PONG|-NOAUTH)/.test(await this.command('PING').catch(() => ''))) return;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`redis-server did not answer PING on port ${this.port} within ${START_TIMEOUT_MS} ms:\n${this.output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

/** The path of `redis-server`, or a clear error saying how to install it. */
function findRedisServer(): string {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, 'redis-server'))) return join(dir, 'redis-server');
  }
  throw new Error(
    'redis-server is not on PATH: the Redis membership tests need a real Redis. Install the Debian package redis-server ' +
      '(sudo apt-get install redis-server; ./scripts/test.sh does it) and run the tests again.',
  );
}

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
