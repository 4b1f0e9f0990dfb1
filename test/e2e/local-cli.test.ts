import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { expect } from 'chai';
import { BIN, alive, run, start } from '../helpers/cli.js';

describe('e2e: tessera local', function () {
  this.timeout(120_000);

  it('--json trains a real model through separate processes and prints one JSON object', async () => {
    const r = await run(['local', '--json', '--epochs', '2', '--shards', '2', '--workers', '2']);
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).to.have.length(1);
    const out = JSON.parse(lines[0]!) as Record<string, unknown>;
    for (const k of ['test_accuracy', 'steps', 'samples_per_sec', 'wall_s', 'shards', 'workers', 'backend']) expect(out).to.have.property(k);
    expect(out['shards']).to.equal(2);
    expect(out['workers']).to.equal(2);
    expect(out['backend']).to.equal('wasm');
    // Two epochs of 8,000 examples, in blocks of 512 (the last of 320) cut into batches of 64: 2 × (15 × 8 + 5) steps, whatever the workers.
    expect(out['steps']).to.equal(250);
    expect(out['consistency']).to.equal('async');
    expect(out['test_accuracy'] as number).to.be.greaterThan(0.85);
  });

  it('a wrong command line gets a clear message and exit code 2', async () => {
    const bad = await run(['local', '--shards', 'two']);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.match(/--shards must be a non-negative integer; got "two"/);
    const unknown = await run(['local', '--shardz', '2']);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.match(/unknown option --shardz .*tessera local --help/);
    const optimizer = await run(['local', '--optimizer', 'lion']);
    expect(optimizer.code).to.equal(2);
    expect(optimizer.stderr).to.match(/--optimizer must be one of sgd, momentum, adagrad, adam/);
    const consistency = await run(['local', '--consistency', 'ssp']);
    expect(consistency.code).to.equal(2);
    expect(consistency.stderr).to.match(/--consistency: unknown consistency "ssp"; use async, bsp, or ssp:K/);
    const model = await run(['local', '--model', 'nosuch']);
    expect(model.code, 'an unknown model is a wrong command line').to.equal(2);
    expect(model.stderr).to.match(/unknown model "nosuch"; built-in models: mnist-mlp/);
    const replicas = await run(['local', '--replicas', '2', '--shards', '2']);
    expect(replicas.code).to.equal(2);
    expect(replicas.stderr).to.match(/--replicas 2 needs at least 3 shards/);
    const bspReplicas = await run(['local', '--replicas', '1', '--shards', '2', '--consistency', 'bsp']);
    expect(bspReplicas.code).to.equal(2);
    expect(bspReplicas.stderr).to.match(/--replicas needs --consistency async or ssp:K/);
    const url = await run(['status', '--redis', '127.0.0.1:6379']);
    expect(url.code, 'a Redis URL without its scheme is a wrong command line').to.equal(2);
    expect(url.stderr).to.match(/the Redis URL "127\.0\.0\.1:6379" is not one: expected redis:\/\//);
    const version = await run(['--version']);
    expect(version.code).to.equal(0);
    expect(version.stdout).to.match(/^tessera \d+\.\d+\.\d+\n$/);
  });

  it('a model module with a syntax error is named with its file, line and column', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-bad-model-'));
    try {
      const file = join(dir, 'bad-model.mjs');
      writeFileSync(file, 'export default (tf) => ({\n  name: "bad",,\n});\n');
      const bad = await run(['local', '--model', file]);
      expect(bad.code).to.equal(1);
      expect(bad.stderr).to.include(`cannot load model module ${file}:2:15: Unexpected token ','`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('with --redis at an address where nothing listens: a clear message and exit 1, at once', async () => {
    const began = Date.now();
    const r = await run(['local', '--redis', 'redis://127.0.0.1:1', '--epochs', '1'], 30_000);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/cannot use Redis at redis:\/\/127\.0\.0\.1:1 .*; start it, or leave out --redis: tessera local runs its own membership store/);
    expect(Date.now() - began, 'it gives up rather than wait for ever').to.be.below(20_000);
    // It takes --key-prefix with --redis, as every verb that joins a cluster does.
    const prefixed = await run(['local', '--redis', 'redis://127.0.0.1:1', '--key-prefix', 'team-a', '--epochs', '1'], 30_000);
    expect(prefixed.code).to.equal(1);
    expect(prefixed.stderr).to.match(/cannot use Redis at/);
  });

  it('npm start builds only when a source is newer than the last build (a fresh clone builds once, in npm ci)', () => {
    const script = join(dirname(BIN), '..', 'scripts', 'build-if-needed.mjs');
    const stamp = join(dirname(BIN), '..', 'dist', '.built-by-start');
    const before = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
    execFileSync(process.execPath, [script], { stdio: 'ignore' });
    expect(existsSync(stamp) ? statSync(stamp).mtimeMs : 0, 'dist is up to date: nothing built').to.equal(before);
  });

  it('run through npm (npx tessera local &), it stops with the wrapper that started it, and so do its shards and workers', async () => {
    // A stand-in for npm's wrapper: it starts tessera as npm does (npm_execpath set) and passes no signal on.
    const wrapper = spawn(process.execPath, ['-e', `require('node:child_process').spawn(process.execPath, ${JSON.stringify([BIN, 'local', '--epochs', '50'])}, { stdio: 'ignore' }); setInterval(() => {}, 1000);`], {
      env: { ...process.env, npm_execpath: 'npm-cli.js' },
      stdio: 'ignore',
    });
    const pids = (ppid: number) => {
      try {
        return execFileSync('ps', ['-o', 'pid=', '--ppid', String(ppid)]).toString().trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        return [];
      }
    };
    let local = 0;
    let children: number[] = [];
    for (let i = 0; i < 100 && children.length < 4; i++) {
      await new Promise((r) => setTimeout(r, 200));
      local = pids(wrapper.pid!)[0] ?? 0;
      children = local ? pids(local) : [];
    }
    expect(children, 'tessera local and its 4 children started').to.have.length(4);
    wrapper.kill('SIGKILL');
    for (let i = 0; i < 75 && [local, ...children].some(alive); i++) await new Promise((r) => setTimeout(r, 200));
    for (const pid of [local, ...children]) expect(alive(pid), `${pid} still running after its wrapper was killed`).to.equal(false);
  });

  it('Ctrl-C stops every process it started and exits 130', async () => {
    const local = start(['local', '--epochs', '50']);
    const child = local.child;
    // Wait until the workers have started (4 children: 2 shards, 2 workers).
    let children: number[] = [];
    for (let i = 0; i < 100 && children.length < 4; i++) {
      await new Promise((r) => setTimeout(r, 200));
      try {
        children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(child.pid)]).toString().trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        children = [];
      }
    }
    expect(children).to.have.length(4);
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    const done = await local.finished;
    expect(done.code).to.equal(130);
    expect(done.stderr, 'a clean shutdown reports no failed calls').to.not.match(/No connection established|unavailable/i);
    for (const pid of children) expect(alive(pid), `child ${pid} still running`).to.equal(false);
  });
});
