import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { throttleSource } from '../../shared/security/throttle.ts';

/**
 * Bounds the connections the gateway holds before their WebSocket is open: in their TLS handshake,
 * sending their request's headers, or waiting for their identity to be checked. Each costs memory
 * (a TLS connection in the handshake, 40–50 KiB) and CPU (the handshake's signature and the client
 * certificate's check), and anyone who reaches the port may open them: the handshake timeout and
 * the pre-upgrade idle timeout bound how long each lasts, not how many there are. Past `max`, a new
 * connection is closed as it is accepted, before its handshake costs anything; devices retry with
 * their back-off, so a fleet reconnecting at once after a restart comes in at the rate the gateway
 * takes it. Open WebSockets are bounded apart (GATEWAY_MAX_CONNECTIONS).
 *
 * With `perSourceMax` (devices connecting directly: their addresses are theirs), one source
 * address (an IPv6 one as its /64, throttleSource) holds at most that many of the places: else one
 * host opening `max` silent TCP connections, and opening them again as the handshake timeout ends
 * them, kept every device out without a certificate. Behind Caddy every connection comes from it,
 * and no share applies.
 *
 * Counted as the sockets accepted and still open, less the upgraded ones still open: a TLS
 * server's upgraded socket is the TLS socket over the one accepted, and both close together.
 */
export class PendingConnections {
  private accepted = 0;
  private upgraded = 0;
  /** per source: [accepted and open, upgraded and open] */
  private readonly bySource = new Map<string, [number, number]>();
  /** every socket admitted and still open (for TLS the TCP one, under its TLS socket): destroyAll's; each with its source (perSourceMax) */
  private readonly sockets = new Map<Socket, string | undefined>();
  /** the source of each upgraded socket still open, with perSourceMax */
  private readonly upgradedSources = new Map<Duplex, string>();
  /**
   * The sockets' 'close' listeners: one function each for every socket (its `this`). A closure and
   * a once-wrapper per socket stayed with every open WebSocket, tens of thousands of them.
   */
  private readonly acceptedClosed: (this: Socket) => void;
  private readonly upgradedClosed: (this: Duplex) => void;

  constructor(
    private readonly max: number,
    private readonly onRefused: (socket: Socket, reason: 'total' | 'source') => void,
    private readonly perSourceMax?: number,
  ) {
    const pending = this;
    this.acceptedClosed = function (this: Socket) {
      if (!pending.sockets.has(this)) return;
      const source = pending.sockets.get(this);
      pending.sockets.delete(this);
      pending.accepted--;
      if (source !== undefined) pending.count(source, 0, -1);
    };
    this.upgradedClosed = function (this: Duplex) {
      pending.upgraded--;
      const source = pending.upgradedSources.get(this);
      if (source === undefined) return;
      pending.upgradedSources.delete(this);
      pending.count(source, 1, -1);
    };
  }

  /** The server's 'connection' (for TLS, the TCP socket before its handshake): taken or closed. */
  admit(socket: Socket): void {
    const source = this.perSourceMax === undefined ? undefined : throttleSource(socket.remoteAddress ?? 'unknown');
    const refused = this.pending >= this.max ? 'total' : source !== undefined && this.pendingOf(source) >= (this.perSourceMax ?? 0) ? 'source' : undefined;
    if (refused) {
      socket.destroy();
      this.onRefused(socket, refused);
      return;
    }
    this.accepted++;
    this.sockets.set(socket, source);
    if (source !== undefined) this.count(source, 0, +1);
    socket.on('close', this.acceptedClosed);
  }

  /** The socket of an upgrade accepted: no longer pending from now on. */
  opened(socket: Duplex): void {
    this.upgraded++;
    // Read now: a closed socket no longer tells its peer's address.
    const address = (socket as Partial<Socket>).remoteAddress;
    const source = this.perSourceMax === undefined ? undefined : throttleSource(address ?? 'unknown');
    if (source !== undefined) {
      this.count(source, 1, +1);
      this.upgradedSources.set(socket, source);
    }
    socket.on('close', this.upgradedClosed);
  }

  /** Ends every connection still open, pending or not (the gateway's shutdown, once their grace is over). */
  destroyAll(): void {
    for (const socket of this.sockets.keys()) socket.destroy();
  }

  /** connections accepted whose WebSocket is not open (never below 0 while the two closes of one connection come apart) */
  get pending(): number {
    return Math.max(0, this.accepted - this.upgraded);
  }

  private pendingOf(source: string): number {
    const [accepted, upgraded] = this.bySource.get(source) ?? [0, 0];
    return Math.max(0, accepted - upgraded);
  }

  private count(source: string, which: 0 | 1, by: 1 | -1): void {
    const counts = this.bySource.get(source) ?? [0, 0];
    counts[which] += by;
    // Forgotten once it holds nothing: the map stays as large as the sources holding connections.
    if (counts[0] <= 0 && counts[1] <= 0) this.bySource.delete(source);
    else this.bySource.set(source, counts);
  }
}
