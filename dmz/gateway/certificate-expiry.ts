/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days): Node fires a longer one at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `expired` once the wall clock is past `notAfter` (epoch ms): TLS checks a certificate's dates
 * at the handshake only, and a connection may outlast them by months. A certificate valid for years
 * is waited for in steps of the longest timer, each looking at the clock again (a clock set
 * meanwhile moves the end with it). stop() cancels the wait (the connection closed first). An end
 * that is no number (a date Node could not read) is never reached.
 *
 * An object with methods, not closures over a function's variables: a gateway holds one per
 * connection, and under tsx (which keeps functions' names) each named closure made per connection
 * cost 0.2 µs and a dictionary of properties (~300 bytes) of every connection.
 */
export class CertificateExpiry {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly notAfter: number,
    private readonly expired: () => void,
  ) {
    if (Number.isFinite(notAfter)) this.look();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private look(): void {
    const left = this.notAfter - Date.now();
    if (left <= 0) {
      this.timer = undefined;
      this.expired();
      return;
    }
    this.timer = setTimeout(() => this.look(), Math.min(left, MAX_TIMER_MS));
    // A connection's own timer: it does not keep a stopping gateway alive.
    this.timer.unref();
  }
}
