import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** Where a device's stream of frames stands (RFC 6455 §5.2), read as ws reads it. */
interface Entry {
  /** bytes counted for this device: `message` + `frame` */
  bytes: number;
  /** bytes of the data frames (headers included) of the message begun and not finished */
  message: number;
  /** bytes read of the frame begun and not finished (header included) */
  frame: number;
  /** the frame's header read so far (at most 14 bytes: 2, 8 of length, 4 of mask) */
  header: Buffer;
  headerRead: number;
  /** payload bytes of the frame still to come; -1 while its header is read */
  payloadLeft: number;
  control: boolean;
  fin: boolean;
  shed: () => void;
  done: boolean;
}

/**
 * Bounds the bytes all devices together keep buffered in messages they have not finished sending.
 * Each device may send a message of up to GATEWAY_MAX_FRAME_BYTES (8 MiB, for a file inline), and
 * ws buffers it whole until its last byte: one gateway's devices could hold GATEWAY_MAX_CONNECTIONS
 * × 8 MiB, 160 GiB at the defaults, by starting large messages and never finishing them (the
 * heartbeat counts their bytes as signs of life). Past `maxBytes` in all, the connection holding
 * the most is shed (closed with 1013, Try Again Later: RFC 6455 §7.4.2, IANA's registry); its
 * device sends the message again later, as nothing of it was acknowledged.
 *
 * Counted per read of the socket, before ws parses it, by following the frames' headers: what a
 * device holds is its unfinished message's data frames and the frame it is in the middle of. Not
 * "every byte since the last whole message": pongs and pings, read whole, are no longer held, and
 * an idle device answering the heartbeat for days counted its pongs until innocent devices were
 * shed; a read finishing one message and beginning the next counted nothing of the next. A stream
 * ws refuses (a bad header, a frame past the limit) closes the connection, which ends its count.
 */
export class UnfinishedFrames {
  private total = 0;
  private readonly entries = new Set<Entry>();

  constructor(
    private readonly maxBytes: number,
    private readonly onShed: (bytes: number, total: number) => void,
  ) {}

  /** Counts `socket`'s reads until `ws` closes; `shed` closes the connection (the session's close). */
  track(socket: Pick<Duplex, 'prependListener' | 'on'>, ws: Pick<WebSocket, 'on'>, shed: () => void): void {
    const e: Entry = { bytes: 0, message: 0, frame: 0, header: Buffer.alloc(14), headerRead: 0, payloadLeft: -1, control: false, fin: false, shed, done: false };
    this.entries.add(e);
    // Before ws's own listener, which takes the read apart: the same bytes, in the same order.
    socket.prependListener('data', (chunk: Buffer) => {
      if (e.done) return;
      const before = e.bytes;
      follow(e, chunk);
      e.bytes = e.message + e.frame;
      this.total += e.bytes - before;
    });
    // After ws's listener: the bound is looked at once the read is counted.
    socket.on('data', () => {
      if (this.total > this.maxBytes) this.shedLargest();
    });
    ws.on('close', () => this.release(e));
  }

  /** bytes counted in all (for the metrics and tests) */
  get bytes(): number {
    return this.total;
  }

  private release(e: Entry): void {
    this.total -= e.bytes;
    e.bytes = 0;
    e.done = true;
    this.entries.delete(e);
  }

  private shedLargest(): void {
    // Rare (only past the bound): a look at every connection is affordable then.
    while (this.total > this.maxBytes) {
      let largest: Entry | undefined;
      for (const e of this.entries) if (!largest || e.bytes > largest.bytes) largest = e;
      if (!largest || largest.bytes === 0) return;
      const bytes = largest.bytes;
      // No longer counted from now on: `shed` reads nothing more of its socket (the session's
      // closeUnread), and what ws already buffers for it goes with the socket, at most
      // TIMINGS.gatewayClosingGraceMs later.
      this.release(largest);
      this.onShed(bytes, this.total);
      largest.shed();
    }
  }
}

/** Follows `chunk` through the frames: a few steps per frame, payloads skipped, never copied. */
function follow(e: Entry, chunk: Buffer): void {
  let at = 0;
  while (at < chunk.length) {
    if (e.payloadLeft < 0) {
      // In the header: its length is known from its second byte on.
      const need = e.headerRead < 2 ? 2 : headerLength(e.header);
      const take = Math.min(need - e.headerRead, chunk.length - at);
      chunk.copy(e.header, e.headerRead, at, at + take);
      e.headerRead += take;
      e.frame += take;
      at += take;
      if (e.headerRead < 2 || e.headerRead < headerLength(e.header)) continue;
      const b0 = e.header[0] ?? 0;
      e.control = (b0 & 0x08) !== 0;
      e.fin = (b0 & 0x80) !== 0;
      e.payloadLeft = payloadLength(e.header);
    } else {
      const take = Math.min(e.payloadLeft, chunk.length - at);
      e.payloadLeft -= take;
      e.frame += take;
      at += take;
    }
    if (e.payloadLeft === 0) endFrame(e);
  }
}

function endFrame(e: Entry): void {
  // A control frame is handled whole and holds nothing after; a data frame joins its message,
  // which holds nothing once its last frame is read.
  if (!e.control) e.message = e.fin ? 0 : e.message + e.frame;
  e.frame = 0;
  e.headerRead = 0;
  e.payloadLeft = -1;
}

function headerLength(h: Buffer): number {
  const b1 = h[1] ?? 0;
  const len7 = b1 & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

function payloadLength(h: Buffer): number {
  const len7 = (h[1] ?? 0) & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return h.readUInt16BE(2);
  // Past 2^53 - 1 ws refuses the frame and closes the connection; the count ends with it.
  return h.readUInt32BE(2) * 2 ** 32 + h.readUInt32BE(6);
}
