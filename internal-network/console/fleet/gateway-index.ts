/**
 * The devices each gateway holds connected (online or stale through it), so that a gateway's
 * presence (fleet.ts, gatewayPresence) visits those only, not the whole fleet: the DMZ may be
 * compromised and send presences as fast as the distributor stores them, and a look at 100,000
 * devices for each was the console's time spent on nothing.
 *
 * Per gateway also a lower bound of its devices' presence times: a gateway's presence older than
 * every one of them (the same will delivered again, an old restart) takes none offline and costs
 * nothing. Memory: one place per connected device.
 */
export class GatewayIndex<E extends { presenceAt: number }> {
  private readonly byGateway = new Map<string, { entries: Set<E>; minAt: number }>();
  private readonly where = new Map<E, string>();
  /** devices looked at by gateway presences since the start (a figure for tests and profiles) */
  visited = 0;

  /** Puts `e` under `gateway` (null: under none: it is not connected, or through no known gateway). */
  place(e: E, gateway: string | null): void {
    const at = this.where.get(e);
    if (at === gateway) return;
    if (at !== undefined) {
      const g = this.byGateway.get(at);
      g?.entries.delete(e);
      if (g && g.entries.size === 0) this.byGateway.delete(at);
      this.where.delete(e);
    }
    if (gateway === null) return;
    let g = this.byGateway.get(gateway);
    if (!g) this.byGateway.set(gateway, (g = { entries: new Set(), minAt: Infinity }));
    g.entries.add(e);
    // A device's presence time only grows while it is placed, so this stays a lower bound.
    g.minAt = Math.min(g.minAt, e.presenceAt);
    this.where.set(e, gateway);
  }

  /**
   * Calls `off` for each device `gateway` holds whose presence is no newer than `before`; `off`
   * takes it offline (and so out of the index). The others are left alone.
   */
  takeOlder(gateway: string, before: number, off: (e: E) => void): void {
    const g = this.byGateway.get(gateway);
    if (!g || before < g.minAt) return;
    let minAt = Infinity;
    // Deleting the entry being visited (off does) is safe while iterating a Set.
    for (const e of g.entries) {
      this.visited++;
      if (e.presenceAt <= before) off(e);
      // Still held (off left it, or it is newer): its time counts for the bound.
      if (this.where.get(e) === gateway) minAt = Math.min(minAt, e.presenceAt);
    }
    g.minAt = minAt;
  }

  /** Gateways holding at least one connected device. */
  get size(): number {
    return this.byGateway.size;
  }
}
