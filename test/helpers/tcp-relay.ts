import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP relay placed in a network path (the bridge's) so a test can cut it and restore it, as a
 * failing link would: cut() drops every connection and refuses new ones until restore(). With
 * `upBytesPerSecond`, what the connecting side sends is passed on at that rate, as a slow uplink
 * (cellular, satellite) would: the relay reads no more while a few KiB wait, so the sender's socket
 * fills as it would behind a slow link.
 */
export class TcpRelay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(
    private readonly target: { host: string; port: number },
    private readonly o: { upBytesPerSecond?: number } = {},
  ) {}

  async start(port = 0): Promise<number> {
    this.server = createServer((client) => {
      const upstream = connect(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      if (this.o.upBytesPerSecond) throttle(client, upstream, this.o.upBytesPerSecond);
      else client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }

  async restore(): Promise<void> {
    await this.start(this.port);
  }

  close(): Promise<void> {
    return this.cut();
  }
}

/** Passes what `from` sends on to `to` at `bytesPerSecond`, reading `from` only while little waits. */
function throttle(from: Socket, to: Socket, bytesPerSecond: number): void {
  const tickMs = 20;
  const waitingMax = 4096;
  const waiting: Buffer[] = [];
  let queued = 0;
  let allowance = 0;
  const timer = setInterval(() => {
    allowance = Math.min(allowance + (bytesPerSecond * tickMs) / 1000, bytesPerSecond); // at most a second's burst
    while (waiting.length > 0 && allowance >= 1) {
      const b = waiting[0] as Buffer;
      const n = Math.min(b.length, Math.floor(allowance));
      to.write(b.subarray(0, n));
      if (n === b.length) waiting.shift();
      else waiting[0] = b.subarray(n);
      queued -= n;
      allowance -= n;
    }
    if (waiting.length === 0) allowance = Math.min(allowance, (bytesPerSecond * tickMs) / 1000); // an idle link banks nothing
    if (queued < waitingMax && from.isPaused()) from.resume();
  }, tickMs);
  from.on('data', (b: Buffer) => {
    waiting.push(b);
    queued += b.length;
    if (queued >= waitingMax) from.pause();
  });
  for (const s of [from, to]) s.on('close', () => clearInterval(timer));
}
