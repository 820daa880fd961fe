import type { Server, Socket } from 'node:net';
import { LIMITS, TIMINGS } from './limits.ts';
import { LimitedLog } from './limited-log.ts';
import type { Logger } from './logger.ts';

/** What Node's stream handle says of a socket's writes (net.Socket keeps it as `_handle`). */
interface WriteCounts {
  /** bytes handed to libuv so far */
  bytesWritten?: number;
  /** of those, bytes libuv has not yet written to the kernel */
  writeQueueSize?: number;
}

/**
 * Bytes of what was written to the socket that the kernel has taken so far: grows while the client
 * reads. Undefined where the handle does not say (it is Node's own, not a documented interface; a
 * Node that changed it): then no connection is judged stuck, rather than a slow reader cut off.
 */
function taken(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: WriteCounts | null })._handle;
  if (typeof handle?.bytesWritten !== 'number' || typeof handle.writeQueueSize !== 'number') return undefined;
  return handle.bytesWritten - handle.writeQueueSize;
}

/**
 * Closes each connection of `server` whose answers its client has stopped taking: bytes waiting to
 * be written, none of them taken by the kernel, at two looks `stallMs()` apart (so once stuck for
 * between one and two of it). A client that pipelined requests (each answered at once) or asked for
 * a large answer, then read nothing, otherwise held its connection, the answers and the requests
 * read meanwhile for ever: Node's headersTimeout and requestTimeout end once a request is in, its
 * keepAliveTimeout starts only once every answer is written, and a socket's own timeout counts the
 * bytes the client sends too (an empty line every few seconds kept it open).
 *
 * A server working on an answer (a database read, a large file taken) has nothing waiting to be
 * written, however long that takes; a client reading slowly has its bytes taken at every look.
 * Neither is closed. `stallMs` is read at every look. Each connection closed is logged
 * (HTTP_CLIENT_NOT_READING, with the client's address and what was left unsent): a flood of them is a
 * client holding connections on purpose, one now and then a program that hung (at most
 * LIMITS.stalledAnswersLogMaxPerWindow lines a window, the rest counted in the next).
 */
export function closeStalledConnections(server: Server, stallMs: () => number, logger: Logger): void {
  const log = new LimitedLog(logger, { maxPerWindow: LIMITS.stalledAnswersLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'connections closed as their clients stopped reading' });
  server.on('connection', (socket: Socket) => {
    let seen = taken(socket);
    let waiting = false;
    let timer: NodeJS.Timeout | undefined;
    const look = (): void => {
      const now = taken(socket);
      const stuck = now !== undefined && socket.writableLength > 0 && now === seen;
      if (stuck && waiting) {
        log.write(
          { code: 'HTTP_CLIENT_NOT_READING', remoteAddress: socket.remoteAddress, unsentBytes: socket.writableLength, stallMs: stallMs() },
          'closed a connection whose client had stopped reading its answers',
        );
        socket.destroy();
        return;
      }
      waiting = stuck;
      seen = now;
      timer = setTimeout(look, stallMs()).unref();
    };
    timer = setTimeout(look, stallMs()).unref();
    socket.once('close', () => clearTimeout(timer));
  });
}
