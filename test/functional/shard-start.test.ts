import { createServer, type Server } from 'node:net';
import { expect } from 'chai';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { run } from '../helpers/cli.js';
import { flatModel } from '../helpers/cluster.js';

/*
 * `tessera shard` that cannot take one of its ports exits with a message
 * that says what to do, rather than staying up half-served.
 */
describe('functional: a shard that cannot start', function () {
  this.timeout(60_000);
  let store: MemoryMembershipStore;
  let membership: TesseraGrpcServer;
  let busy: Server;

  before(async () => {
    store = new MemoryMembershipStore();
    await store.createCluster({ name: 'start', slots: 8, model: flatModel(64), optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async' });
    membership = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    busy.close();
    await membership.close(50);
    await store.close();
  });

  it('a --bulk-port that is taken: exit 1, naming the port and what to do; no shard left registered', async () => {
    const port = (busy.address() as { port: number }).port;
    const r = await run(['shard', '--membership', `127.0.0.1:${membership.port}`, '--id', 's0', '--bulk-port', String(port)], 30_000);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`cannot serve the bulk transport on 127\\.0\\.0\\.1:${port}: .*pick another --bulk-port`));
    expect(await store.members('shard')).to.deep.equal([]);
  });

  it('a --listen off loopback without TLS: exit, saying to give --tls-dir or --insecure', async () => {
    const r = await run(['shard', '--membership', `127.0.0.1:${membership.port}`, '--id', 's1', '--listen', '0.0.0.0:0'], 30_000);
    expect(r.code, r.stderr).to.not.equal(0);
    expect(r.stderr).to.match(/shard s1 would listen on every interface without TLS: give it --tls-dir DIR .*or --insecure/);
  });
});
