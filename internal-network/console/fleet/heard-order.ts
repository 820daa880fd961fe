/**
 * The online devices, the longest silent first, so that a sweep (fleet.ts) looks at the devices
 * that may have gone stale only: a look at every row every CONSOLE.staleSweepMs was, for 100,000
 * devices, the whole fleet at each sweep for the few gone silent.
 *
 * Each device is placed at its heardAt of then (`placedAt`, kept on the entry: no look-up), in
 * `order`, oldest first. A device heard again is placed again only once its heardAt is past its
 * place by more than `slackMs`: `heard` runs at every reading (up to 100,000 a second), and mostly
 * costs a subtraction and two compares. So a place is never later than the device's heardAt, nor
 * more than `slackMs` earlier. A sweep stops at the first device placed within staleAfterMs: it and
 * those after it were heard within it. One it finds heard since its place goes in again.
 *
 * A device whose heardAt is older than the last place in `order` (a presence held from before the
 * device had a row, applied with the time it arrived; the clock set back; one the sweep found
 * heard again within slackMs) goes in `loose` instead, which each sweep looks at whole: each of
 * those goes stale or is heard again (back into `order`) within staleAfterMs, most within slackMs.
 */
export class HeardOrder<E extends { heardAt: number; placedAt: number }> {
  /** placed in order of their place, which never goes down in it */
  private readonly order = new Set<E>();
  /** placed out of order (see above) */
  private readonly loose = new Set<E>();
  /** the last place in `order` */
  private last = -Infinity;

  constructor(private readonly slackMs: number) {}

  /** `e` went online (or was heard again and is): placed at its heardAt. */
  place(e: E): void {
    this.remove(e);
    e.placedAt = e.heardAt;
    if (e.heardAt >= this.last) {
      this.order.add(e);
      this.last = e.heardAt;
    } else this.loose.add(e);
  }

  /** `e`'s heardAt moved on: placed again if past its place by more than slackMs (or before it: the
   * clock set back). Not placed (not online): nothing (NaN compares false). */
  heard(e: E): void {
    const ahead = e.heardAt - e.placedAt;
    if (ahead > this.slackMs || ahead < 0) this.place(e);
  }

  /** `e` is no longer online. */
  remove(e: E): void {
    if (Number.isNaN(e.placedAt)) return;
    if (!this.order.delete(e)) this.loose.delete(e);
    e.placedAt = NaN;
    if (this.order.size === 0) this.last = -Infinity;
  }

  /**
   * Calls `stale` for each device silent at `now` for longer than staleAfterMs; `stale` takes it
   * out (remove). One the sweep finds heard since its place goes in again, at its heardAt.
   */
  sweep(now: number, staleAfterMs: number, stale: (e: E) => void): void {
    // Deleting the entry being visited is safe while iterating a Set; one placed again goes last,
    // where the sweep stops before it.
    for (const e of this.loose) {
      if (now - e.heardAt > staleAfterMs) stale(e);
    }
    for (const e of this.order) {
      if (now - e.placedAt <= staleAfterMs) return;
      if (now - e.heardAt > staleAfterMs) stale(e);
      else this.place(e);
    }
  }
}
