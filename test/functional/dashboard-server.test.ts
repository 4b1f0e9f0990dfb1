import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { DashboardServer } from '../../cli/dashboard/dashboard-server.js';
import { type DashboardStatus } from '../../cli/dashboard/history.js';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { mutualTls } from '../../cluster/tls/transport-security.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { makeTlsDirs } from '../helpers/tls.js';

/**
 * The dashboard's listener over a real in-process cluster: the page and
 * uPlot are served, /api/status is the status with owners and load, the
 * listener is read-only and answers 404 for anything else.
 */
describe('functional: the dashboard listener', function () {
  this.timeout(30_000);
  let cluster: TestCluster;
  let server: DashboardServer;

  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(256), slots: 16 });
    server = await DashboardServer.start({ listen: '127.0.0.1:0', store: cluster.store, cluster: 'test', everyS: 0.5 });
  });
  after(async () => {
    await server.close();
    await cluster.close();
  });

  it('serves the page, its script and uPlot', async () => {
    for (const [path, type] of [['', 'text/html'], ['page.js', 'text/javascript'], ['page.css', 'text/css'], ['uplot.js', 'text/javascript'], ['uplot.css', 'text/css']] as const) {
      const res = await fetch(`${server.url}${path}`);
      expect(res.status, path).to.equal(200);
      expect(res.headers.get('content-type'), path).to.match(new RegExp(`^${type}`));
      expect((await res.text()).length, path).to.be.greaterThan(100);
    }
  });

  it('/api/status: the status, each slot\'s owner, each shard\'s load', async () => {
    const s = (await (await fetch(`${server.url}api/status`)).json()) as DashboardStatus;
    expect(s.cluster).to.equal('test');
    expect(s.shards.map((x) => [x.id, x.slots])).to.deep.equal([['shard-0', 8], ['shard-1', 8]]);
    expect(s.owners).to.have.length(16);
    expect(Object.keys(s.load).sort()).to.deep.equal(['shard-0', 'shard-1']);
    expect(s.at).to.be.closeTo(Date.now(), 5_000);
  });

  it('is read-only, and answers 404 elsewhere', async () => {
    const post = await fetch(`${server.url}api/status`, { method: 'POST', body: '{}' });
    expect(post.status).to.equal(405);
    expect(post.headers.get('allow')).to.equal('GET, HEAD');
    expect((await fetch(`${server.url}../package.json`)).status).to.equal(404);
    expect((await fetch(`${server.url}api/nothing`)).status).to.equal(404);
  });

  it('refuses a malformed --listen', async () => {
    const err = await DashboardServer.start({ listen: 'nowhere', store: cluster.store, cluster: 'test', everyS: 1 }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(InvalidArgumentError);
    expect((err as Error).message).to.match(/--listen takes HOST:PORT/);
  });

  it('under mTLS: HTTPS with a client certificate of the cluster CA; none, or another CA\'s, is refused', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'tessera-dashboard-tls-'));
    const { caDir, dirs } = await makeTlsDirs(root, 'test', [{ role: 'admin', id: 'ops' }, { role: 'reader', id: 'r1' }], { otherCa: true });
    const security = mutualTls(dirs['admin-ops']!);
    const secure = await DashboardServer.start({ listen: '127.0.0.1:0', store: cluster.store, cluster: 'test', everyS: 1, security });
    const get = (dir: string | null) =>
      new Promise<number>((resolve, reject) => {
        const req = https.get(
          {
            host: '127.0.0.1',
            port: secure.port,
            path: '/api/status',
            ca: readFileSync(path.join(caDir, 'ca.crt')),
            ...(dir ? { cert: readFileSync(path.join(dir, 'tls.crt')), key: readFileSync(path.join(dir, 'tls.key')) } : {}),
            checkServerIdentity: () => undefined,
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
      });
    try {
      expect(secure.url).to.match(/^https:\/\//);
      expect(await get(dirs['reader-r1']!), 'a reader').to.equal(200);
      for (const [who, dir] of [['no certificate', null], ['another CA', dirs['intruder']!]] as const) {
        expect(await get(dir).then(() => 'served', () => 'refused'), who).to.equal('refused');
      }
    } finally {
      await secure.close();
      // Its files are watched for rotation: stop watching before they go.
      if (security.kind === 'mtls') security.material.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
