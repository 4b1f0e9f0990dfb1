import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from '../cluster/grpc-client.js';
import { shardService } from '../cluster/proto.js';

/** One channel per shard address, opened on first use and reused for every call. */
export class ConnectionPool {
  private readonly clients = new Map<string, grpc.Client>();

  get(address: string): grpc.Client {
    let c = this.clients.get(address);
    if (!c) {
      const Ctor = shardService();
      c = new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Closes channels to addresses no longer in `keep`. */
  prune(keep: Iterable<string>): void {
    const live = new Set(keep);
    for (const [address, c] of this.clients) {
      if (!live.has(address)) {
        c.close();
        this.clients.delete(address);
      }
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
