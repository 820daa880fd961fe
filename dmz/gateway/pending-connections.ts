import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

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
 * Counted as the sockets accepted and still open, less the upgraded ones still open: a TLS
 * server's upgraded socket is the TLS socket over the one accepted, and both close together.
 */
export class PendingConnections {
  private accepted = 0;
  private upgraded = 0;

  constructor(
    private readonly max: number,
    private readonly onRefused: (socket: Socket) => void,
  ) {}

  /** The server's 'connection' (for TLS, the TCP socket before its handshake): taken or closed. */
  admit(socket: Socket): void {
    if (this.pending >= this.max) {
      socket.destroy();
      this.onRefused(socket);
      return;
    }
    this.accepted++;
    socket.once('close', () => this.accepted--);
  }

  /** The socket of an upgrade accepted: no longer pending from now on. */
  opened(socket: Duplex): void {
    this.upgraded++;
    socket.once('close', () => this.upgraded--);
  }

  /** connections accepted whose WebSocket is not open (never below 0 while the two closes of one connection come apart) */
  get pending(): number {
    return Math.max(0, this.accepted - this.upgraded);
  }
}
