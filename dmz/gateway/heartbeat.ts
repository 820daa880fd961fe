import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../../shared/logger.ts';
import type { DeviceSession } from './device-session.ts';

/**
 * Pings an open connection every `intervalMs` and ends it (half-open TCP) once an interval passed
 * with no sign of life from the device while its socket was read. Returns what stops the pings
 * (the connection closed).
 *
 * `quietWhileHeard`: for a device that reads no acks (ACKS_HEADER none), no ping goes in an
 * interval in which its bytes were read: they already prove the connection alive, and such a
 * device reads nothing from the gateway that a ping would keep flowing. For a device sending a
 * reading a second, each ping and its pong were two more frames each way through the edge. One
 * that falls silent is pinged at the next tick and judged at the one after, as any device is.
 */
export function watchHeartbeat(ws: WebSocket, socket: Duplex, session: Pick<DeviceSession, 'readingPaused' | 'readPauses'>, intervalMs: number, log: Logger, quietWhileHeard = false): () => void {
  let alive = true;
  /** whether the last tick pinged: only an unanswered ping makes a connection half-open */
  let pinged = true;
  /** bytes of the device read since the last tick */
  let heard = false;
  ws.on('pong', () => {
    alive = true;
  });
  // A missed pong counts only after a whole interval in which the gateway read the socket without
  // a break. While too many of the device's messages wait for PUBACK, the session stops reading it
  // (backpressure), and its pongs wait unread in the socket behind its frames: a broker stalled for
  // longer than an interval closed every paused, healthy connection as half-open, and all of them
  // reconnected and sent again at once. Judging "since the last resume", not just "not paused now":
  // right after a resume the buffered pong is not read yet. Pings still go out meanwhile (writing
  // is not paused): the field client counts them as signs of life.
  // The excuse cannot keep a dead connection: a pause ends once its messages are settled, by PUBACK
  // or within LIMITS.publishTimeoutMs, and a dead peer sends nothing that could pause it again
  // beyond what already waits in the socket. A live device could prolong it only by keeping the
  // gateway busy with frames (rate-limited, answered, and it could as well answer the pings).
  // Bytes read count as a pong: on a slow link (cellular, satellite) a device's pong follows the
  // frame already in its socket, and a file chunk of 1.4 MB takes minutes to cross a link of
  // 100 kbit/s. Judged by pongs alone, every such device was closed as half-open after a heartbeat,
  // mid-frame, and sent the frame again on its next connection, for ever. A dead peer sends no
  // bytes. (A listener beside ws's own, per read of the socket: the TLS socket's bytesRead stays
  // at the upgrade's once ws reads it.)
  socket.on('data', () => {
    alive = true;
    heard = true;
  });
  // A connection paused from its start (its device's earlier connections left their share of the
  // backlog with the broker: read-pause.ts) counts as paused in its first interval, as any pause
  // begun after this look does.
  let pausesSeen = session.readingPaused ? session.readPauses - 1 : session.readPauses;
  const heartbeat = setInterval(() => {
    const readAllAlong = !session.readingPaused && session.readPauses === pausesSeen;
    pausesSeen = session.readPauses;
    if (pinged && !alive && readAllAlong) {
      log.info('no pong since the last ping; closing a half-open connection');
      ws.terminate();
      return;
    }
    pinged = !(quietWhileHeard && heard);
    alive = false;
    heard = false;
    if (pinged) ws.ping();
  }, intervalMs);
  heartbeat.unref();
  return () => clearInterval(heartbeat);
}
