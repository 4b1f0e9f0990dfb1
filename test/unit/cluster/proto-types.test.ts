import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect } from 'chai';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

/** The message types in cluster/wire/proto-types are what proto/ generates today: regenerate after changing a .proto (npm run proto:types). */
describe('cluster/wire/proto-types', function () {
  this.timeout(30_000);
  it('match what scripts/gen-proto-types.mjs writes from proto/', async () => {
    const { generate } = (await import(pathToFileURL(join(ROOT, 'scripts', 'gen-proto-types.mjs')).href)) as { generate(out: string): void };
    const out = mkdtempSync(join(tmpdir(), 'tessera-proto-types-check-'));
    try {
      generate(out);
      const committed = join(ROOT, 'cluster', 'wire', 'proto-types');
      const want = files(out).map((f) => relative(out, f)).sort();
      expect(files(committed).map((f) => relative(committed, f)).sort(), 'the same files').to.deep.equal(want);
      for (const f of want) expect(readFileSync(join(committed, f), 'utf8'), `${f} is stale: run npm run proto:types`).to.equal(readFileSync(join(out, f), 'utf8'));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
