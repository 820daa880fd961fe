import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** 'up': what the connecting side sends; 'down': what the target sends it */
export type RelayDirection = 'up' | 'down';

/**
 * A TCP relay placed in a network path (the bridge's) so a test can cut it and restore it, as a
 * failing link would: cut() drops every connection and refuses new ones until restore(). With
 * `upBytesPerSecond`, what the connecting side sends is passed on at that rate, as a slow uplink
 * (cellular, satellite) would: the relay reads no more while a few KiB wait, so the sender's socket
 * fills as it would behind a slow link.
 *
 * hold(direction) keeps what is sent that way in the relay, on the connections open and those opened
 * later, until release(direction) passes it on: a test decides when an answer (a PUBACK) arrives, or
 * whether a request reaches its target at all, rather than racing the other process. What a
 * connection held when it closes is never delivered, as on a link that died with it.
 */
export class TcpRelay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly flows = new Set<Flow>();
  private readonly holding = new Set<RelayDirection>();
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
      const flows: Flow[] = [new Flow('down', upstream, client)];
      if (this.o.upBytesPerSecond) throttle(client, upstream, this.o.upBytesPerSecond);
      else flows.push(new Flow('up', client, upstream));
      for (const f of flows) {
        this.flows.add(f);
        if (this.holding.has(f.direction)) f.hold();
      }
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      // Whatever closes first, what the pair held goes with it.
      for (const s of [client, upstream]) s.on('close', () => flows.forEach((f) => this.flows.delete(f)));
    });
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  /** Keeps what is sent in `direction` from now on, until release(direction). */
  hold(direction: RelayDirection): void {
    if (direction === 'up' && this.o.upBytesPerSecond) throw new Error('a throttled uplink cannot be held');
    this.holding.add(direction);
    for (const f of this.flows) if (f.direction === direction) f.hold();
  }

  /** Passes on what was held in `direction`, and what comes after it. */
  release(direction: RelayDirection): void {
    this.holding.delete(direction);
    for (const f of this.flows) if (f.direction === direction) f.release();
  }

  /** The bytes held in `direction` now, over the connections still open, in the order they came. */
  held(direction: RelayDirection): Buffer {
    return Buffer.concat([...this.flows].filter((f) => f.direction === direction).flatMap((f) => f.held));
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

/** One direction of one relayed connection: what `from` sends piped on to `to`, or kept while held. */
class Flow {
  private kept: Buffer[] | undefined;
  private readonly keep = (b: Buffer): void => void this.kept?.push(b);

  constructor(
    readonly direction: RelayDirection,
    private readonly from: Socket,
    private readonly to: Socket,
  ) {
    from.pipe(to);
  }

  get held(): readonly Buffer[] {
    return this.kept ?? [];
  }

  hold(): void {
    if (this.kept) return;
    this.kept = [];
    this.from.unpipe(this.to);
    // Read on (into `kept`), so that the other side's close is seen and ends the pair as it would.
    this.from.on('data', this.keep);
    this.from.resume();
  }

  release(): void {
    const kept = this.kept;
    if (!kept) return;
    this.kept = undefined;
    this.from.off('data', this.keep);
    for (const b of kept) this.to.write(b);
    this.from.pipe(this.to);
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
