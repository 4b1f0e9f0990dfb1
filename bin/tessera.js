#!/usr/bin/env node
// The `tessera` command. The TypeScript sources are compiled to dist/ by `npm install` (prepare) or `npm run build`.
import { main } from '../dist/cli/index.js';

// A reader that stops early (`tessera status --json | head -1`) closes the pipe: stop quietly.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
