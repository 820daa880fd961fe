/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days): Node fires a longer one at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `expired` once the wall clock is past `notAfter` (epoch ms): TLS checks a certificate's dates
 * at the handshake only, and a connection may outlast them by months. A certificate valid for years
 * is waited for in steps of the longest timer, each looking at the clock again (a clock set
 * meanwhile moves the end with it). Returns what cancels the wait (the connection closed first).
 * An end that is no number (a date Node could not read) is never reached.
 */
export function atExpiry(notAfter: number, expired: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const look = (): void => {
    const left = notAfter - Date.now();
    if (left <= 0) {
      timer = undefined;
      expired();
      return;
    }
    timer = setTimeout(look, Math.min(left, MAX_TIMER_MS));
    // A connection's own timer: it does not keep a stopping gateway alive.
    timer.unref();
  };
  if (Number.isFinite(notAfter)) look();
  return () => clearTimeout(timer);
}
