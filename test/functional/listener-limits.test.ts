import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CHANNEL_OPTIONS, dial, unary } from '../../cluster/grpc-client.js';
import { shardAdminService } from '../../cluster/proto.js';
import { waitFor } from '../helpers/cli.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { encodeHead } from '../../cluster/wire/bulk-frames.js';
import { rawClient, rawPull } from '../helpers/raw-shard.js';

/*
 * What a shard's listeners let callers hold (cluster/listener-limits.ts,
 * docs/security.md): connections beyond the cap are closed, idle ones are
 * closed, and checkpoints are written one at a time with at most one waiting.
 */
describe('functional: listener limits', function () {
  this.timeout(60_000);
  const D = 1 << 22; // 16 MB of values, so a checkpoint takes a while
  const SLOTS = 64;
  const CAP = 3;
  let cluster: TestCluster;
  let root: string;
  const pull = { epoch: 1, ranges: [{ begin: 0, end: 1 }], workerId: 'w' };

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'tessera-limits-'));
    cluster = await startCluster({ shards: 1, model: flatModel(D), slots: SLOTS, limits: { maxConnections: CAP, idleMs: 300, maxStreamsPerConnection: 64 }, checkpointDir: root });
  });
  after(async () => {
    await cluster.close();
    rmSync(root, { recursive: true, force: true });
  });

  it(`the bulk port keeps ${CAP} connections; the others are closed, and the kept ones serve`, async () => {
    const conns = Array.from({ length: CAP + 2 }, () => new RawBulk(cluster.shards[0]!.bulkAddress));
    conns.forEach((c, i) => c.send({ id: i + 1, op: 'pull', ...pull }));
    const replies = await Promise.all(conns.map((c) => c.next()));
    expect(replies.filter((r) => r?.reply.ok).length, 'answered').to.equal(CAP);
    expect(replies.filter((r) => r === null).length, 'closed').to.equal(2);
    for (const c of conns) c.close();
  });

  it('a bulk connection that carries nothing for the idle time is closed', async () => {
    const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
    conn.send({ id: 1, op: 'pull', ...pull });
    expect((await conn.next())?.reply.ok).to.equal(true);
    await waitFor('the idle connection to be closed', () => conn.closed, 10_000, 20);
  });

  it('pulls sent one after another without reading the replies: the shard holds one reply, not all of them', async () => {
    const [host, port] = cluster.shards[0]!.bulkAddress.split(':');
    const sock = net.connect({ host: host!, port: Number(port) });
    await new Promise<void>((resolve) => sock.once('connect', resolve));
    sock.pause(); // never read: the replies pile up, first in the kernel, then wherever the shard keeps them
    const whole = { epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'w' };
    const bulk = (cluster.shards[0] as unknown as { bulk: { sockets: Set<net.Socket> } }).bulk;
    const queued = () => [...bulk.sockets].reduce((n, s) => n + s.writableLength, 0);
    let most = 0;
    for (let i = 1; i <= 8; i++) {
      sock.write(encodeHead({ id: i, op: 'pull', ...whole }));
      await new Promise((r) => setTimeout(r, 30));
      most = Math.max(most, queued());
    }
    // One reply of 16 MB at most waits in the shard's process (beyond what the kernel took); 8 were asked for.
    expect(most, `bytes queued in the shard: ${most}`).to.be.at.most(D * 4 + (1 << 20));
    sock.destroy();
  });

  it(`the gRPC port keeps ${CAP} connections; a client beyond them gets UNAVAILABLE`, async () => {
    // Each its own connection (grpc-js would otherwise share one between clients of the same target).
    const clients = Array.from({ length: CAP + 2 }, () => rawClient(cluster.shards[0]!.address, { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 }));
    const results = [];
    for (const c of clients) results.push(await rawPull(c, pull));
    expect(results.filter((r) => r.ok).length, 'served').to.equal(CAP);
    for (const r of results) if (!r.ok) expect(r.error.code).to.equal(grpc.status.UNAVAILABLE);
    for (const c of clients) c.close();
  });

  it('checkpoints: one written, one waiting, the next refused RESOURCE_EXHAUSTED', async () => {
    // Let the gRPC connections of the test above go (idle), so this one is let in.
    await new Promise((r) => setTimeout(r, 600));
    const admin = dial(shardAdminService(), cluster.shards[0]!.address);
    const outcomes = await Promise.all(
      [1, 2, 3].map((i) =>
        unary<object, { slots: number }>(admin, 'checkpoint', { name: String(i) }).then(
          (r) => r.slots,
          (e: Error & { code: number }) => e.code,
        ),
      ),
    );
    admin.close();
    expect(outcomes.filter((o) => o === SLOTS).length, `written: ${JSON.stringify(outcomes)}`).to.equal(2);
    expect(outcomes.filter((o) => o === grpc.status.RESOURCE_EXHAUSTED).length, 'refused').to.equal(1);
  });
});
