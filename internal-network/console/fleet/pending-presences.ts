import type { StoredPoint } from '../../distributor/points.ts';
import { GatewayIndex } from './gateway-index.ts';

interface Pending {
  id: string;
  point: StoredPoint;
  /** epoch ms (the console's clock) it arrived: when the device was heard of, and what its age is counted from */
  receivedAt: number;
  /** the presence's own time (the gateway's), for the gateway index */
  presenceAt: number;
}

/**
 * The last presence of each id the fleet has no row for, kept until a row is made for it (fleet.ts,
 * entry). A gateway publishes a device's presence once, retained, when the device connects; the
 * console has a row only for devices its registry lists, and looks at the registry every
 * CONSOLE.staleSweepMs: a device registered a moment before it connected had that presence dropped,
 * and showed no gateway (nor its state) until its next one.
 *
 * The ids are the DMZ's word, so this is bounded: at most `max` ids (the one kept longest ago
 * forgotten first), each for `maxAgeMs`. Nothing here is shown: a presence is applied as any other
 * only once the registry (or data the distributor verified) gave its device a row. A gateway gone or
 * restarted since (fleet.ts, gatewayPresence) makes the presences kept through it say nothing any
 * more: they are forgotten, looking at that gateway's only (the same index as the rows').
 */
export class PendingPresences {
  /** in the order kept (a presence kept again goes last), so the first is the oldest */
  private readonly byId = new Map<string, Pending>();
  readonly gateways = new GatewayIndex<Pending>();

  constructor(
    private readonly max: number,
    private readonly maxAgeMs: number,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  /** Keeps `point` as the last presence of `id`, unless the one kept is newer. */
  keep(id: string, point: StoredPoint, receivedAt: number): void {
    const held = this.byId.get(id);
    if (held && point.time < held.presenceAt) return;
    if (held) this.forget(held);
    else if (this.byId.size >= this.max) {
      const oldest = this.byId.values().next().value;
      if (oldest) this.forget(oldest);
    }
    const p: Pending = { id, point, receivedAt, presenceAt: point.time };
    this.byId.set(id, p);
    this.gateways.place(p, point.tags.gateway ?? null);
  }

  /** The presence kept for `id`, no longer kept; undefined if none, or if it is older than maxAgeMs. */
  take(id: string, now: number): { point: StoredPoint; receivedAt: number } | undefined {
    const held = this.byId.get(id);
    if (!held) return undefined;
    this.forget(held);
    return now - held.receivedAt <= this.maxAgeMs ? held : undefined;
  }

  /** Forgets the presences kept through `gateway` no newer than `before`. */
  forgetGateway(gateway: string, before: number): void {
    this.gateways.takeOlder(gateway, before, (p) => this.forget(p));
  }

  /** Forgets those older than maxAgeMs (from the oldest, up to the first that is not). */
  expire(now: number): void {
    for (const p of this.byId.values()) {
      if (now - p.receivedAt <= this.maxAgeMs) return;
      this.forget(p);
    }
  }

  private forget(p: Pending): void {
    this.byId.delete(p.id);
    this.gateways.place(p, null);
  }
}
