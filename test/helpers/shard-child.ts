import type * as net from 'node:net';
import { type ListenerLimits } from '../../cluster/listener-limits.js';
import { setLogLevel } from '../../cluster/log.js';
import { flatModel, startCluster, type TestCluster } from './cluster.js';

/*
 * The child side of shard-process.ts: one shard (and its embedded membership
 * store) alone in this process, so that the process's resident memory is the
 * shard's. Driven over the IPC channel: `start` once, then `gc` and
 * `connections` as the test asks; it exits when the parent disconnects.
 */

/** What the parent asks for. */
export type ChildRequest =
  | { kind: 'start'; elements: number; slots: number; limits: ListenerLimits }
  | { kind: 'gc' }
  | { kind: 'connections' };

/** What the child answers, in order. */
export type ChildReply =
  | { kind: 'started'; address: string; bulkAddress: string }
  | { kind: 'gc' }
  | { kind: 'connections'; bulk: number; grpc: number; bulkBytesRead: number }
  | { kind: 'failed'; message: string };

let cluster: TestCluster | null = null;

const send = (reply: ChildReply) => process.send!(reply);

/** Open connections on each listener (and the bytes read on the bulk ones), read from the servers' own bookkeeping (test-only reach into internals). */
async function connections(): Promise<{ bulk: number; grpc: number; bulkBytesRead: number }> {
  const server = cluster!.shards[0]! as unknown as {
    bulk: { sockets: Set<net.Socket> };
    grpc: { server: { http2Servers: Map<net.Server, unknown> } };
  };
  let grpc = 0;
  for (const h2 of server.grpc.server.http2Servers.keys()) {
    grpc += await new Promise<number>((resolve) => h2.getConnections((err, n) => resolve(err ? 0 : n)));
  }
  let bulkBytesRead = 0;
  for (const s of server.bulk.sockets) bulkBytesRead += s.bytesRead;
  return { bulk: server.bulk.sockets.size, grpc, bulkBytesRead };
}

process.on('message', (msg: ChildRequest) => {
  void (async () => {
    try {
      if (msg.kind === 'start') {
        cluster = await startCluster({ shards: 1, model: flatModel(msg.elements), slots: msg.slots, optimizer: { name: 'sgd', learningRate: 1 }, limits: msg.limits });
        const shard = cluster.shards[0]!;
        send({ kind: 'started', address: shard.address, bulkAddress: shard.bulkAddress });
      } else if (msg.kind === 'gc') {
        // Twice: the first pass may only finalize what the second frees.
        const gc = (globalThis as { gc?: () => void }).gc;
        gc?.();
        await new Promise((r) => setImmediate(r));
        gc?.();
        send({ kind: 'gc' });
      } else {
        send({ kind: 'connections', ...(await connections()) });
      }
    } catch (err) {
      send({ kind: 'failed', message: (err as Error).message });
    }
  })();
});

process.on('disconnect', () => {
  void (async () => {
    await cluster?.close().catch(() => undefined);
    process.exit(0);
  })();
});

setLogLevel('error');
