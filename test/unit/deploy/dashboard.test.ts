import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { ShardMetrics } from '../../../server/shard-metrics.js';
import { WorkerMetrics } from '../../../worker/worker-metrics.js';
import { havePromtool } from '../../helpers/prometheus.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const DASHBOARD = 'deploy/grafana/tessera-dashboard.json';

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; datasource?: { uid: string } }[];
}

/** The names a registry exposes, histograms with their series' suffixes. */
async function exposed(): Promise<Set<string>> {
  const shard = new ShardMetrics('s', 1024, 4096, { heldBytes: () => 0, sparseRows: () => [], inflightBytes: () => 0, inflightLimitBytes: () => 1, ownedSlots: () => 0, lostSlots: () => 0, mapEpoch: () => 0, backedSlots: () => 0, underReplicatedSlots: () => 0, backupLag: () => [] });
  const worker = new WorkerMetrics('w', () => undefined);
  const names = new Set<string>();
  for (const registry of [shard.registry, worker.registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`);
    }
  }
  return names;
}

/*
 * deploy/grafana/tessera-dashboard.json: Grafana's JSON model, every panel on
 * the Prometheus data source variable, every query valid PromQL (promtool
 * parses it, as a recording rule) and over metrics the shards and workers
 * export — a renamed metric breaks this test, not a dashboard in production.
 */
describe('deploy: the Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(`${ROOT}${DASHBOARD}`, 'utf8')) as { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; type: string; query?: unknown }[] } };
  const queried = dashboard.panels.filter((p) => p.type !== 'row');
  const exprs = queried.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

  it('is a dashboard of panels on the data source variable, laid out on 24 columns, with unique ids', () => {
    expect(dashboard.uid).to.equal('tessera');
    const variables = dashboard.templating.list;
    expect(variables.find((v) => v.name === 'datasource')).to.include({ type: 'datasource', query: 'prometheus' });
    expect(new Set(dashboard.panels.map((p) => p.id)).size).to.equal(dashboard.panels.length);
    for (const p of dashboard.panels) expect(p.gridPos.x + p.gridPos.w, `${p.title}: within 24 columns`).to.be.at.most(24);
    for (const p of queried) {
      expect(p.datasource?.uid, `${p.title}: data source`).to.equal('${datasource}');
      expect(p.targets ?? [], `${p.title}: queries`).to.not.have.length(0);
    }
  });

  it('queries only metrics that shards and workers export', async () => {
    const names = await exposed();
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\btessera_[a-z_]+/g)].map((m) => m[0])));
    expect(used.size).to.be.at.least(20);
    for (const name of used) expect(names.has(name), `${name}: exported by a shard or a worker`).to.equal(true);
  });

  it('every query is valid PromQL (promtool check rules)', () => {
    if (!havePromtool()) throw new Error('promtool is not installed: `apt-get install prometheus` (Debian) provides it; scripts/test.sh installs it');
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-dashboard-'));
    try {
      // Grafana's variables as Prometheus would see them once substituted.
      const rules = exprs.map((e, i) => `      - record: dashboard:query${i}\n        expr: ${JSON.stringify(e.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', '.*'))}\n`);
      writeFileSync(path.join(dir, 'rules.yml'), `groups:\n  - name: dashboard\n    rules:\n${rules.join('')}`);
      const out = spawnSync('promtool', ['check', 'rules', path.join(dir, 'rules.yml')], { encoding: 'utf8' });
      expect(out.status, `${out.stdout}${out.stderr}`).to.equal(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
