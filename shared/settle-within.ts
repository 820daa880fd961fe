/** What a promise came to within a grace: its value, its error, or nothing yet. */
export type Settled<T> = { outcome: 'fulfilled'; value: T } | { outcome: 'rejected'; error: unknown } | { outcome: 'late' };

/**
 * `promise` given `ms` (milliseconds) to settle, for a wait that something outside the process (a
 * frozen database or broker, a hung mount) could otherwise hold for ever: a stop, a health look.
 * Never rejects. The promise is not cancelled: one that is late is left to finish or fail on its
 * own (its rejection is handled here). The timer is cleared once it settles.
 */
export async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Settled<T>>((resolve) => {
    timer = setTimeout(() => resolve({ outcome: 'late' }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value): Settled<T> => ({ outcome: 'fulfilled', value }),
        (error: unknown): Settled<T> => ({ outcome: 'rejected', error }),
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
