import * as net from 'node:net';
import { BulkFrameReader, type BulkReply, encodeHead } from '../../cluster/wire/bulk-frames.js';

/**
 * A raw connection to a shard's bulk port: send frames (or any bytes), read
 * replies (and pulled values), bypassing the typed client's own checks.
 */
export class RawBulk {
  private readonly replies: { reply: BulkReply; values: Buffer }[] = [];
  private waiting: (() => void) | null = null;
  private current: { reply: BulkReply; parts: Buffer[] } | null = null;
  closed = false;
  private readonly socket: net.Socket;

  constructor(address: string) {
    const i = address.lastIndexOf(':');
    this.socket = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
    const reader = new BulkFrameReader(
      (h) => {
        const reply = h as BulkReply;
        this.current = { reply, parts: [] };
        return reply.ok && 'total' in reply ? reply.total * 4 : 0;
      },
      (bytes) => this.current!.parts.push(Buffer.from(bytes)),
      () => {
        this.replies.push({ reply: this.current!.reply, values: Buffer.concat(this.current!.parts) });
        this.waiting?.();
      },
    );
    this.socket.on('data', (d: Buffer) => reader.push(d));
    this.socket.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
    this.socket.on('error', () => undefined);
  }

  send(header: object, payload?: Buffer): void {
    this.socket.write(encodeHead(header));
    if (payload) this.socket.write(payload);
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Resolves once everything written so far has left this process (handed to the kernel). */
  flushed(): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));
  }

  async next(): Promise<{ reply: BulkReply; values: Buffer } | null> {
    while (this.replies.length === 0 && !this.closed) await new Promise<void>((r) => (this.waiting = r));
    return this.replies.shift() ?? null;
  }

  close(): void {
    this.socket.destroy();
  }
}
