/** A frame's header is at most 14 bytes: 2, 8 of extended length, 4 of mask (RFC 6455 §5.2). */
const HEADER_MAX_BYTES = 14;

/** A connection counted (UnfinishedFrames.track): what its reads are counted against. */
export interface UnfinishedEntry {
  readonly bytes: number;
}

/** Where a device's stream of frames stands (RFC 6455 §5.2), read as ws reads it. */
interface Entry extends UnfinishedEntry {
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

  /**
   * Starts counting a connection's reads; `shed` closes it (the session's close). The connection's
   * listeners of its socket's reads (server.ts) pass each read to read(), before ws's own listener
   * takes it apart (the same bytes, in the same order), and call checkBound() after it; release()
   * once it closed.
   */
  track(shed: () => void): UnfinishedEntry {
    // From the pool Buffer.allocUnsafe slices, zeroed: one ArrayBuffer of its own per connection
    // was memory of every connection (docs/performance.md).
    const e: Entry = { bytes: 0, message: 0, frame: 0, header: Buffer.allocUnsafe(HEADER_MAX_BYTES).fill(0), headerRead: 0, payloadLeft: -1, control: false, fin: false, shed, done: false };
    this.entries.add(e);
    return e;
  }

  /** One read of the connection's socket, before ws parses it. */
  read(e: UnfinishedEntry, chunk: Buffer): void {
    const entry = e as Entry;
    if (entry.done) return;
    const before = entry.bytes;
    follow(entry, chunk);
    entry.bytes = entry.message + entry.frame;
    this.total += entry.bytes - before;
  }

  /** After a read is counted (and ws took it): past the bound, connections are shed. */
  checkBound(): void {
    if (this.total > this.maxBytes) this.shedLargest();
  }

  /** The connection closed: what it held is no longer counted. */
  release(e: UnfinishedEntry): void {
    const entry = e as Entry;
    if (entry.done) return;
    this.total -= entry.bytes;
    entry.bytes = 0;
    entry.done = true;
    this.entries.delete(entry);
  }

  /** bytes counted in all (for the metrics and tests) */
  get bytes(): number {
    return this.total;
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
