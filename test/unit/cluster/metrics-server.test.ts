import { expect } from 'chai';
import { Counter } from 'prom-client';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { MetricsServer } from '../../../cluster/metrics/metrics-server.js';
import { createRegistry } from '../../../cluster/metrics/registry.js';
import { scrape } from '../../helpers/prometheus.js';

describe('cluster/metrics: the /metrics listener', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it('serves its registry, every series with the registry’s labels, HEAD without a body', async () => {
    const registry = createRegistry({ shard: 'a' }, false);
    new Counter({ name: 'tessera_test_total', help: 'a test counter', registers: [registry] }).inc(3);
    const server = await MetricsServer.start('127.0.0.1:0', registry);
    servers.push(server);
    expect(server.address).to.equal(`127.0.0.1:${server.port}`);
    const page = await scrape(server.address);
    expect(page.body).to.include('tessera_test_total{shard="a"} 3');
    const head = await scrape(server.address, '/metrics', 'HEAD');
    expect([head.status, head.body]).to.deep.equal([200, '']);
  });

  it('refuses an address that is not HOST:PORT, or one already bound, with a typed error naming the flag', async () => {
    const registry = createRegistry({}, false);
    for (const bad of ['9400', '127.0.0.1:http', '127.0.0.1:70000']) {
      const err = await MetricsServer.start(bad, registry).then(() => null, (e: unknown) => e);
      expect(err, bad).to.be.instanceOf(InvalidArgumentError);
      expect((err as Error).message).to.include('--metrics');
    }
    const first = await MetricsServer.start('127.0.0.1:0', registry);
    servers.push(first);
    const taken = await MetricsServer.start(first.address, registry).then(() => null, (e: unknown) => e);
    expect(taken).to.be.instanceOf(InvalidArgumentError);
    expect((taken as Error).message).to.match(/cannot serve metrics on 127\.0\.0\.1:\d+/);
  });

  it('closes kept-alive connections as it closes', async () => {
    const server = await MetricsServer.start('127.0.0.1:0', createRegistry({}, false));
    await scrape(server.address);
    await server.close();
    expect(await scrape(server.address).then(() => 'answered', () => 'refused')).to.equal('refused');
  });
});
