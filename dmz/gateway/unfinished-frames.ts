import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

interface Entry {
  /** bytes read from the device since its last whole data message */
  bytes: number;
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
 * Counted per read of the socket, before ws parses it (the message a read completes resets its
 * device's count to nothing); a read's bytes beyond the message it completes, and control frames,
 * stay counted until the next whole message: the bound errs on the side of counting too much.
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
    const e: Entry = { bytes: 0, shed, done: false };
    this.entries.add(e);
    // Before ws's own listener: ws takes the read apart in it, and a message it completes resets the count.
    socket.prependListener('data', (chunk: Buffer) => {
      if (e.done) return;
      e.bytes += chunk.length;
      this.total += chunk.length;
    });
    ws.on('message', () => this.release(e, false));
    // After ws's listener: what the read left unfinished is counted now.
    socket.on('data', () => {
      if (this.total > this.maxBytes) this.shedLargest();
    });
    ws.on('close', () => this.release(e, true));
  }

  /** bytes counted in all (for the metrics and tests) */
  get bytes(): number {
    return this.total;
  }

  private release(e: Entry, closed: boolean): void {
    this.total -= e.bytes;
    e.bytes = 0;
    if (closed) {
      e.done = true;
      this.entries.delete(e);
    }
  }

  private shedLargest(): void {
    // Rare (only past the bound): a look at every connection is affordable then.
    while (this.total > this.maxBytes) {
      let largest: Entry | undefined;
      for (const e of this.entries) if (!largest || e.bytes > largest.bytes) largest = e;
      if (!largest || largest.bytes === 0) return;
      const bytes = largest.bytes;
      // No longer counted from now on: what ws still buffers for it goes with its socket, at most
      // one message's limit and TIMINGS.gatewayClosingGraceMs later.
      this.release(largest, true);
      this.onShed(bytes, this.total);
      largest.shed();
    }
  }
}
