#!/usr/bin/env node
// The `tessera` command. The TypeScript sources are compiled to dist/ by `npm install` (prepare) or `npm run build`.
import { main } from '../dist/cli/index.js';

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
