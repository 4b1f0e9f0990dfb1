import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ModelLoadError } from '../../../serving/errors.js';
import type { LoadedModel } from '../../../serving/runtime/runtime.js';
import { DirectoryWatcher, ModelRepository } from '../../../serving/serve/model-repository.js';
import type { ServedVersion } from '../../../serving/serve/served-version.js';

/** A model that adds its version to every value, optionally after a delay, and refuses to run once closed. */
function fakeModel(version: number, events: string[] = [], delayMs = 0): LoadedModel & { closed: boolean } {
  const m = {
    format: 'onnx' as const,
    input: { name: 'x', datatype: 'FP32' as const, width: 1 },
    output: { name: 'y', datatype: 'FP32' as const, width: 1 },
    closed: false,
    async run(input: Float32Array | BigInt64Array, rows: number): Promise<Float32Array> {
      if (m.closed) throw new Error(`version ${version} ran after close`);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      if (m.closed) throw new Error(`version ${version} closed during a run`);
      events.push(`run ${version}`);
      return Float32Array.from({ length: rows }, (_, i) => Number(input[i]) + version);
    },
    async close() {
      m.closed = true;
      events.push(`close ${version}`);
    },
  };
  return m;
}

function served(version: number, events?: string[], delayMs?: number): ServedVersion & { model: ReturnType<typeof fakeModel> } {
  return { name: 'm', version, model: fakeModel(version, events, delayMs) };
}

/** One request as the server makes it: hold the current version for the whole run. */
async function request(repo: ModelRepository, x: number): Promise<number> {
  const lease = repo.acquire();
  if (!lease) throw new Error('no version');
  try {
    return (await lease.served.model.run(Float32Array.of(x), 1))[0]!;
  } finally {
    lease.release();
  }
}

describe('serving/serve model-repository', () => {
  describe('ModelRepository', () => {
    it('serves nothing until a first swap, then the swapped version', async () => {
      const repo = new ModelRepository('m');
      expect(repo.acquire()).to.equal(undefined);
      expect(repo.status()).to.deep.equal({ name: 'm', failures: [] });
      const v1 = served(1);
      await repo.swap(v1);
      expect(repo.current()).to.equal(v1);
      expect(repo.status()).to.include({ name: 'm', current: 1 });
      await repo.close();
      expect(v1.model.closed).to.equal(true);
    });

    it('closes the old version only once its last in-flight request releases it', async () => {
      const repo = new ModelRepository('m');
      const v1 = served(1);
      const v2 = served(2);
      await repo.swap(v1);
      const a = repo.acquire()!;
      const b = repo.acquire()!;
      let closed = false;
      const swapped = repo.swap(v2).then(() => (closed = true));
      const c = repo.acquire()!;
      expect(c.served, 'new requests get the new version at once').to.equal(v2);
      c.release();
      a.release();
      a.release(); // a second release is a no-op, not a second count
      await new Promise((r) => setImmediate(r));
      expect(v1.model.closed).to.equal(false);
      expect(closed).to.equal(false);
      b.release();
      await swapped;
      expect(v1.model.closed).to.equal(true);
      expect(v2.model.closed).to.equal(false);
      await repo.close();
    });

    it('never fails a request because of swaps while requests are in flight', async () => {
      const repo = new ModelRepository('m');
      const events: string[] = [];
      await repo.swap(served(1, events, 5));
      const requests: Promise<number>[] = [];
      const swaps: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) {
        requests.push(request(repo, i));
        if (i % 10 === 5) swaps.push(repo.swap(served(2 + i, events, 5)));
        await new Promise((r) => setTimeout(r, 1));
      }
      const results = await Promise.all(requests);
      await Promise.all(swaps);
      expect(results).to.have.length(40);
      // Each answer came from some version, added to its input (no failures, no runs after close).
      results.forEach((y, i) => expect(y - i).to.be.oneOf([1, 7, 17, 27, 37]));
      // Every retired version was closed after its last run.
      for (const v of [1, 7, 17, 27]) {
        const closeAt = events.indexOf(`close ${v}`);
        expect(closeAt, `version ${v} closed`).to.be.greaterThan(-1);
        expect(events.lastIndexOf(`run ${v}`)).to.be.lessThan(closeAt);
      }
      expect(events).to.not.include('close 37');
      await repo.close();
      expect(events).to.include('close 37');
    });

    it('close() stops handing out versions and waits for in-flight requests', async () => {
      const repo = new ModelRepository('m');
      const v1 = served(1);
      await repo.swap(v1);
      const lease = repo.acquire()!;
      const closing = repo.close();
      expect(repo.acquire()).to.equal(undefined);
      expect(v1.model.closed).to.equal(false);
      lease.release();
      await closing;
      expect(v1.model.closed).to.equal(true);
      const late = served(2);
      let err: Error | undefined;
      await repo.swap(late).catch((e: Error) => (err = e));
      expect(err?.message).to.match(/is closed/);
      expect(late.model.closed, 'a version swapped into a closed repository is closed, not leaked').to.equal(true);
    });

    it('records failures for the status endpoints and forgets one when that version loads', async () => {
      const repo = new ModelRepository('m');
      repo.reportFailure(3, 'bad bytes');
      repo.reportFailure(2, 'no manifest');
      expect(repo.status().failures.map((f) => [f.version, f.message])).to.deep.equal([
        [2, 'no manifest'],
        [3, 'bad bytes'],
      ]);
      await repo.swap(served(3));
      expect(repo.status().failures.map((f) => f.version)).to.deep.equal([2]);
      repo.clearFailure(2);
      expect(repo.status().failures).to.deep.equal([]);
      await repo.close();
    });
  });

  describe('DirectoryWatcher', () => {
    let root: string;
    let repo: ModelRepository;
    let watcher: DirectoryWatcher | undefined;
    let loads: number[];
    const events: string[] = [];

    /** Loads a version folder; one that holds a file named "broken" fails like a damaged export. */
    const loader = async (dir: string, version: number): Promise<ServedVersion> => {
      loads.push(version);
      if (existsSync(join(dir, 'broken'))) throw new ModelLoadError(`${join(dir, 'model.onnx')} is damaged`);
      return served(version, events);
    };
    const addVersion = (name: string, broken = false) => {
      mkdirSync(join(root, name), { recursive: true });
      if (broken) writeFileSync(join(root, name, 'broken'), '');
    };

    beforeEach(() => {
      root = mkdtempSync(join(tmpdir(), 'tessera-repo-'));
      repo = new ModelRepository('m');
      loads = [];
      events.length = 0;
    });
    afterEach(async () => {
      await watcher?.close();
      watcher = undefined;
      await repo.close();
      rmSync(root, { recursive: true, force: true });
    });

    it('loads the highest positive-integer folder, ignoring temporary folders, files, 0 and names that are not numbers', async () => {
      addVersion('1');
      addVersion('2');
      addVersion('.tmp-9-abc');
      addVersion('10a');
      addVersion('0');
      writeFileSync(join(root, '11'), 'a file, not a version');
      watcher = new DirectoryWatcher({ dir: root, loader, repository: repo, pollMs: 60_000 });
      await watcher.poll();
      expect(loads).to.deep.equal([2]);
      expect(repo.current()?.version).to.equal(2);
      await watcher.poll();
      expect(loads, 'the served version is not loaded again').to.deep.equal([2]);
    });

    it('swaps in a new version and closes the old one', async () => {
      addVersion('1');
      watcher = new DirectoryWatcher({ dir: root, loader, repository: repo, pollMs: 60_000 });
      await watcher.poll();
      addVersion('3');
      await watcher.poll();
      expect(repo.current()?.version).to.equal(3);
      await new Promise((r) => setImmediate(r));
      expect(events).to.include('close 1');
    });

    it('keeps the old version when a new one fails, says why, and retries only once its folder changes', async () => {
      addVersion('1');
      watcher = new DirectoryWatcher({ dir: root, loader, repository: repo, pollMs: 60_000 });
      await watcher.poll();
      addVersion('2', true);
      await watcher.poll();
      expect(repo.current()?.version).to.equal(1);
      expect(repo.status().failures).to.have.length(1);
      expect(repo.status().failures[0]).to.include({ version: 2 });
      expect(repo.status().failures[0]!.message).to.match(/model\.onnx is damaged/);
      expect(watcher.state()).to.deep.include({ current: 1 });
      expect(watcher.state().failed.map((f) => f.version)).to.deep.equal([2]);

      await watcher.poll();
      await watcher.poll();
      expect(loads, 'not retried while its folder is unchanged').to.deep.equal([1, 2]);

      // The export is fixed in place: a file removed changes the folder's mtime.
      rmSync(join(root, '2', 'broken'));
      const later = new Date(Date.now() + 5000);
      utimesSync(join(root, '2'), later, later); // whatever the file system's mtime resolution
      await watcher.poll();
      expect(loads).to.deep.equal([1, 2, 2]);
      expect(repo.current()?.version).to.equal(2);
      expect(repo.status().failures).to.deep.equal([]);
      expect(watcher.state().failed).to.deep.equal([]);
    });

    it('forgets a failure whose folder is removed', async () => {
      addVersion('1');
      addVersion('2', true);
      watcher = new DirectoryWatcher({ dir: root, loader, repository: repo, pollMs: 60_000 });
      await watcher.poll();
      expect(repo.current(), 'nothing served when the only candidate fails').to.equal(undefined);
      expect(repo.status().failures.map((f) => f.version)).to.deep.equal([2]);
      rmSync(join(root, '2'), { recursive: true });
      await watcher.poll();
      expect(repo.status().failures).to.deep.equal([]);
      expect(repo.current()?.version).to.equal(1);
    });

    it('survives a missing folder and starts serving once it appears', async () => {
      const dir = join(root, 'later');
      watcher = new DirectoryWatcher({ dir, loader, repository: repo, pollMs: 10 });
      await watcher.start();
      expect(watcher.state().scanError).to.match(/ENOENT/);
      mkdirSync(join(dir, '4'), { recursive: true });
      // Polled on its own timer: wait (bounded) for it to notice.
      for (let i = 0; i < 500 && !repo.current(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(repo.current()?.version).to.equal(4);
      expect(watcher.state().scanError).to.equal(undefined);
    });

    it('closes a version that finishes loading after the watcher was closed instead of serving it', async () => {
      addVersion('1');
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let late: ServedVersion | undefined;
      watcher = new DirectoryWatcher({
        dir: root,
        repository: repo,
        pollMs: 60_000,
        loader: async (_dir, version) => {
          await gate;
          late = served(version);
          return late;
        },
      });
      const polling = watcher.poll();
      const closing = watcher.close();
      release();
      await Promise.all([polling, closing]);
      expect(repo.current()).to.equal(undefined);
      expect((late!.model as ReturnType<typeof fakeModel>).closed).to.equal(true);
    });

    it('refuses a pollMs that is not positive', () => {
      expect(() => new DirectoryWatcher({ dir: root, loader, repository: repo, pollMs: 0 })).to.throw(/pollMs must be a positive number/);
    });
  });
});
