import type { WebSocket } from 'ws';
import type { DeviceSession } from './device-session.ts';

/**
 * Pings an open connection every `intervalMs` and ends it (half-open TCP) once an interval passed
 * with no sign of life from the device while its socket was read. The connection's one listener of
 * its socket's reads (server.ts) calls heard(); stop() when the connection closed.
 *
 * `quietWhileHeard`: for a device that reads no acks (ACKS_HEADER none), no ping goes in an
 * interval in which its bytes were read: they already prove the connection alive, and such a
 * device reads nothing from the gateway that a ping would keep flowing. For a device sending a
 * reading a second, each ping and its pong were two more frames each way through the edge. One
 * that falls silent is pinged at the next tick and judged at the one after, as any device is.
 *
 * A class, not closures over a function's variables: a gateway holds one per connection, tens of
 * thousands, and each closure and context was memory of every connection (docs/performance.md).
 */
export class Heartbeat {
  private alive = true;
  /** whether the last tick pinged: only an unanswered ping makes a connection half-open */
  private pinged = true;
  /** bytes of the device read since the last tick */
  private heardSinceTick = false;
  /** Date.now() when the device was last heard on this connection (any bytes: frames, pongs, its close) */
  heardAt = Date.now();
  /** the session's pauses seen at the last tick (see tick) */
  private pausesSeen: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly ws: Pick<WebSocket, 'on' | 'ping' | 'terminate'>,
    private readonly session: Pick<DeviceSession, 'readingPaused' | 'readPauses' | 'log'>,
    intervalMs: number,
    private readonly quietWhileHeard = false,
  ) {
    ws.on('pong', () => {
      this.alive = true;
    });
    // A connection paused from its start (its device's earlier connections left their share of the
    // backlog with the broker: read-pause.ts) counts as paused in its first interval, as any pause
    // begun after this look does.
    this.pausesSeen = session.readingPaused ? session.readPauses - 1 : session.readPauses;
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
  }

  /**
   * Bytes of the device were read. They count as a pong: on a slow link (cellular, satellite) a
   * device's pong follows the frame already in its socket, and a file chunk of 1.4 MB takes minutes
   * to cross a link of 100 kbit/s. Judged by pongs alone, every such device was closed as half-open
   * after a heartbeat, mid-frame, and sent the frame again on its next connection, for ever. A dead
   * peer sends no bytes. (Told by a listener of the socket's reads beside ws's own: the TLS socket's
   * bytesRead stays at the upgrade's once ws reads it.)
   */
  heard(): void {
    this.alive = true;
    this.heardSinceTick = true;
    this.heardAt = Date.now();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * A missed pong counts only after a whole interval in which the gateway read the socket without
   * a break. While too many of the device's messages wait for PUBACK, the session stops reading it
   * (backpressure), and its pongs wait unread in the socket behind its frames: a broker stalled for
   * longer than an interval closed every paused, healthy connection as half-open, and all of them
   * reconnected and sent again at once. Judging "since the last resume", not just "not paused now":
   * right after a resume the buffered pong is not read yet. Pings still go out meanwhile (writing
   * is not paused): the field client counts them as signs of life.
   * The excuse cannot keep a dead connection: a pause ends once its messages are settled, by PUBACK
   * or within LIMITS.publishTimeoutMs, and a dead peer sends nothing that could pause it again
   * beyond what already waits in the socket. A live device could prolong it only by keeping the
   * gateway busy with frames (rate-limited, answered, and it could as well answer the pings).
   */
  private tick(): void {
    const readAllAlong = !this.session.readingPaused && this.session.readPauses === this.pausesSeen;
    this.pausesSeen = this.session.readPauses;
    if (this.pinged && !this.alive && readAllAlong) {
      this.session.log.info('no pong since the last ping; closing a half-open connection');
      this.ws.terminate();
      return;
    }
    this.pinged = !(this.quietWhileHeard && this.heardSinceTick);
    this.alive = false;
    this.heardSinceTick = false;
    if (this.pinged) this.ws.ping();
  }
}
