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

const sources = Math.max(...SOURCES.map((d) => newest(join(root, d))), newest(join(root, 'tsconfig.json')), newest(join(root, 'package.json')), newest(join(root, 'scripts', 'build-gradients.mjs')));
// When the last build was: what tsc last wrote (it writes nothing for a source touched but not
// changed), or this script's own stamp after a build it ran.
const STAMP = join(root, 'dist', '.built-by-start');
const mtime = (f) => statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0;
const built = Math.max(Math.min(...BUILT.map(mtime)), BUILT.every((f) => mtime(f) > 0) ? mtime(STAMP) : 0);
if (built < sources) {
  execFileSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' });
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
}
