#!/usr/bin/env node
// Builds (npm run build) unless dist/ is already newer than every source: `npm ci` builds once
// (the `prepare` script), and `npm start` right after it should not build a second time.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCES = ['cli', 'server', 'client', 'worker', 'cluster', 'serving', 'bench', 'test', 'proto'];
const BUILT = [join(root, 'dist', '.tsbuildinfo'), join(root, 'dist', 'worker', 'models', 'tfjs-gradients.cjs')];

function newest(path) {
  const s = statSync(path, { throwIfNoEntry: false });
  if (!s) return 0;
  if (!s.isDirectory()) return s.mtimeMs;
  let most = s.mtimeMs;
  for (const entry of readdirSync(path)) most = Math.max(most, newest(join(path, entry)));
  return most;
}

// What each part of the build is made from: the compiled TypeScript from the sources, the
// gradients bundle from the installed packages and its script.
const mtime = (f) => statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0;
const sources = Math.max(...SOURCES.map((d) => newest(join(root, d))), mtime(join(root, 'tsconfig.json')), mtime(join(root, 'package.json')));
const bundleInputs = Math.max(mtime(join(root, 'package-lock.json')), mtime(join(root, 'scripts', 'build-gradients.mjs')));
// When the last build was: what tsc last wrote (it writes nothing for a source touched but not
// changed), or this script's own stamp after a build it ran.
const STAMP = join(root, 'dist', '.built-by-start');
const compiled = Math.max(mtime(BUILT[0]), mtime(BUILT[0]) > 0 ? mtime(STAMP) : 0);
const bundled = mtime(BUILT[1]);
const stale = compiled < sources || bundled === 0 || bundled < bundleInputs;
if (stale) {
  execFileSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' });
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
}
