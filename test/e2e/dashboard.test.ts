import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { type ClusterStatus } from '../../cli/cluster-status.js';
import { type DashboardHistory } from '../../cli/dashboard/history.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { type Running, run, start, waitFor } from '../helpers/cli.js';
import { RedisServer } from '../helpers/redis-server.js';

/** The screenshot docs/operations.md shows. */
/**
 * Where the screenshot goes: a temporary file, or with TESSERA_UPDATE_SCREENSHOT=1 the one
 * docs/operations.md shows (docs/images/dashboard.png), so a test run leaves the tree as it was.
 */
const SCREENSHOT = process.env['TESSERA_UPDATE_SCREENSHOT'] === '1' ? fileURLToPath(new URL('../../../docs/images/dashboard.png', import.meta.url)) : join(tmpdir(), `tessera-dashboard-${process.pid}.png`);

/** Debian's chromium, which the test drives; scripts/test.sh installs it. */
function chromium(): string {
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('which', [name], { encoding: 'utf8' }).trim();
    } catch {
      // try the next name
    }
  }
  throw new Error('no chromium on the PATH: the dashboard test drives a real headless browser; install it with `apt-get install -y chromium` (scripts/test.sh does)');
}

/** What the page shows, read off its data-testid attributes. */
interface Shown {
  at: number;
  cluster: string;
  epoch: number;
  slots: number;
  shards: { id: string; slots: number }[];
  workers: { id: string; step: number }[];
  cells: number;
  events: number;
  /** What the page says went wrong with its last refresh; empty when nothing. */
  error: string;
}

/**
 * `tessera dashboard` over a real cluster of processes (a real Redis, two
 * shards, a worker's run frozen mid-way, a checkpoint), opened in headless chromium:
 * what the page shows is what `tessera status --json` says, the heat map
 * has a cell per slot, the history has the run's curves and the checkpoint
 * as an event; the screenshot (TESSERA_UPDATE_SCREENSHOT=1: docs/images/dashboard.png). And the same page
 * served by `tessera local --dashboard` while its cluster runs.
 */
describe('e2e: tessera dashboard in a real browser', function () {
  this.timeout(180_000);
  let redis: RedisServer;
  let store: RedisMembershipStore;
  let browser: Browser | null = null;
  const procs: Running[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-dashboard-'));
  const at = (args: string[]) => [...args, '--redis', redis.url, '--cluster', 'dash'];

  before(async () => {
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: 'dash' });
  });
  after(async () => {
    await browser?.close();
    for (const p of procs) p.kill('SIGKILL');
    await store.close();
    await redis.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs in the page (the project compiles without the DOM's types, so the reader is a string). */
  const READ_PAGE = `(() => {
    const q = (id, root = document) => root.querySelector('[data-testid="' + id + '"]');
    const text = (id, root) => q(id, root).textContent;
    return {
      at: Number(q('root').dataset.at),
      cluster: text('cluster'),
      epoch: Number(text('epoch')),
      slots: Number(text('slots')),
      shards: [...document.querySelectorAll('tr[data-shard]')].map((r) => ({ id: text('shard-id', r), slots: Number(text('shard-slots', r)) })),
      workers: [...document.querySelectorAll('tr[data-worker]')].map((r) => ({ id: text('worker-id', r), step: Number(text('worker-step', r)) })),
      cells: Number(q('heatmap').dataset.cells),
      error: text('error'),
      events: document.querySelectorAll('[data-testid="events"] li').length,
    };
  })()`;
  const shown = (page: Page) => page.evaluate(READ_PAGE) as Promise<Shown>;

  it('shows what `tessera status --json` says, a cell per slot, the curves and the events', async () => {
    const executablePath = chromium();
    const init = await run(at(['init', '--model', 'logreg', '--shards', '2', '--slots', '64']));
    expect(init.code, init.stderr).to.equal(0);
    const ckpt = join(dir, 'ckpt');
    mkdirSync(ckpt);
    for (const id of ['shard-0', 'shard-1']) procs.push(start(at(['shard', '--id', id, '--checkpoint-dir', ckpt, '--checkpoint-every-s', '0']), 170_000));
    await waitFor('2 shards serving', async () => (await store.members('shard')).filter((m) => m.state === 'serving').length === 2, 30_000);

    const dashboard = start(at(['dashboard', '--listen', '127.0.0.1:0', '--every-s', '0.5']), 170_000);
    procs.push(dashboard);
    const url = await waitFor('the dashboard to print its URL', () => /on (http:\/\/\S+)/.exec(dashboard.stdout())?.[1], 20_000);

    // A long run, frozen (SIGSTOP) once the history has its curves: its lease (15 s) outlives the comparison, and its numbers stand still.
    const worker = start(at(['worker', '--id', 'w0', '--model', 'logreg', '--epochs', '200', '--eval', '--lease-ttl-ms', '15000']), 170_000);
    procs.push(worker);
    await waitFor('the history to hold the worker\'s loss and held-out curves', async () => {
      const h = (await (await fetch(`${url}api/history`)).json()) as DashboardHistory;
      const w0 = h.samples.map((x) => x.workers['w0']).filter((w) => w?.held_out);
      return new Set(w0.map((w) => w!.step)).size >= 2;
    }, 90_000, 250);
    worker.kill('SIGSTOP');
    const ck = await run(at(['checkpoint', '--name', 'shown']));
    expect(ck.code, ck.stderr).to.equal(0);

    browser = await puppeteer.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    page.on('response', (r) => r.status() >= 400 && errors.push(`${r.url()}: HTTP ${r.status()}`));
    await page.setViewport({ width: 1200, height: 800 });
    await page.goto(url, { waitUntil: 'load' });

    // The worker is frozen and the map still: nothing the page compares changes, so its first refresh after `status` read shows the same.
    const status = JSON.parse((await run(at(['status', '--json']))).stdout) as ClusterStatus;
    const readAt = Date.now();
    const history = await waitFor('the history to hold the checkpoint', async () => {
      const h = (await (await fetch(`${url}api/history`)).json()) as DashboardHistory;
      return h.events.some((e) => e.kind === 'checkpoint') ? h : undefined;
    }, 20_000, 250);
    const seen = await waitFor('the page to draw a status read after `tessera status`', async () => {
      const s = await shown(page);
      if (errors.length > 0 || s.error) throw new Error([...errors, s.error].join('; '));
      return s.at > readAt ? s : undefined;
    }, 20_000, 200);

    expect(errors, 'errors on the page').to.deep.equal([]);
    expect(seen.cluster).to.equal(status.cluster);
    expect(seen.epoch).to.equal(status.epoch);
    expect(seen.slots).to.equal(status.slots);
    expect(seen.shards).to.deep.equal(status.shards.map((x) => ({ id: x.id, slots: x.slots })));
    expect(seen.shards.map((x) => x.slots)).to.deep.equal([32, 32]);
    expect(seen.workers).to.deep.equal(status.workers.map((w) => ({ id: w.id, step: w.step })));
    expect(seen.cells, 'one heat-map cell per slot').to.equal(64);

    // The curves: the history saw the worker train and the shards carry its traffic.
    expect(seen.workers.map((w) => w.id)).to.deep.equal(['w0']);
    expect(seen.workers[0]!.step, 'steps trained').to.be.greaterThan(0);
    expect(history.samples.some((x) => Object.values(x.shards).some((v) => v > 0)), 'some shard traffic').to.equal(true);
    expect(history.events.filter((e) => e.kind === 'checkpoint').map((e) => e.text.split(' ')[0]).sort()).to.include.members(['shard-0', 'shard-1']);
    await waitFor('the events on the page', async () => (await shown(page)).events >= 2, 10_000, 200);

    await page.screenshot({ path: SCREENSHOT, type: 'png' });
    expect(statSync(SCREENSHOT).size).to.be.greaterThan(10_000);

    worker.kill('SIGKILL');
    dashboard.kill('SIGTERM');
    expect((await dashboard.finished).code).to.equal(0);
  });

  it('tessera local --dashboard serves the page while the cluster runs', async () => {
    const local = start(['local', '--model', 'logreg', '--epochs', '1', '--shards', '2', '--workers', '1', '--slots', '32', '--dashboard', '0', '--stay'], 120_000);
    procs.push(local);
    let stderr = '';
    local.child.stderr!.on('data', (d) => (stderr += d));
    const url = await waitFor('local to print the dashboard\'s URL', () => /dashboard: (http:\/\/\S+)/.exec(stderr)?.[1], 60_000, 100);
    const page = await fetch(url);
    expect(page.status).to.equal(200);
    expect(await page.text()).to.match(/data-testid="heatmap"/);
    // It serves from before the shards start: their map comes a moment later.
    const status = await waitFor('the shards on /api/status', async () => {
      const s = (await (await fetch(`${url}api/status`)).json()) as ClusterStatus & { owners: string[] };
      return s.shards.length === 2 && s.owners.length > 0 ? s : undefined;
    }, 30_000, 200);
    expect(status.cluster).to.equal('local');
    expect(status.shards.map((x) => x.slots)).to.deep.equal([16, 16]);
    expect(status.owners).to.have.length(32);
    await waitFor('training to end', () => /the cluster stays up/.test(stderr), 90_000, 200);
    local.kill('SIGINT');
    expect((await local.finished).code).to.equal(0);
  });
});
