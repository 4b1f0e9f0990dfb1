import * as net from 'node:net';

/**
 * A loopback TCP proxy in front of `target` whose connections can be frozen:
 * from then on it forwards nothing either way, reads nothing and never closes
 * either side, so the server sees a peer that has vanished without FIN or RST.
 *
 * The nearest thing to a half-open connection that loopback allows: a true
 * one (the client's host gone) needs packets dropped between the hosts, which
 * takes root (a firewall rule) and is not done in tests. The difference: here
 * the proxy's kernel still acknowledges what the server sends, until its
 * receive buffer is full; a vanished host acknowledges nothing. To the
 * server's application the two look the same: nothing arrives, nothing is
 * read, nothing fails, and only its own timeouts (idle, keepalive pings)
 * can end the connection.
 */
export class FreezingProxy {
  private readonly pairs: { client: net.Socket; upstream: net.Socket }[] = [];
  private frozen = false;

  private constructor(
    private readonly server: net.Server,
    /** host:port to dial instead of the target. */
    readonly address: string,
  ) {}

  static async start(target: string): Promise<FreezingProxy> {
    const i = target.lastIndexOf(':');
    let proxy: FreezingProxy | undefined;
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: target.slice(0, i), port: Number(target.slice(i + 1)) });
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
      if (proxy!.frozen) {
        client.pause();
        return;
      }
      client.pipe(upstream);
      upstream.pipe(client);
      proxy!.pairs.push({ client, upstream });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new FreezingProxy(server, `127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    return proxy;
  }

  /** Every connection, now and later, stops: nothing more is forwarded or read, and nothing is closed. */
  freeze(): void {
    this.frozen = true;
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /** Destroys every connection (both sides) and stops listening. */
  close(): void {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.server.close();
  }
}
