import type { StoredPoint } from '../../distributor/points.ts';

/** Devices a gateway held with a presence no newer than `before` went offline at `time`. */
export interface GatewayEnd {
  before: number;
  time: number;
}

/**
 * Each gateway's last end (a will, a clean stop, a restart: fleet.ts, gatewayPresence). A gateway's
 * status takes offline the devices it holds when it comes; a device presence through it older than
 * its end, coming after it (the last presences read at the console's start, the feed running
 * meanwhile; its broker's old retained statuses), is offline as well, as it would have been in the
 * order they happened (fleet.ts, presence). Gateway ids are the DMZ's word, so at most `max` ends
 * are kept (CONSOLE.maxGatewayEnds), the gateway that ended longest ago forgotten first.
 */
export class GatewayEnds {
  private readonly ends = new Map<string, GatewayEnd>();

  constructor(private readonly max: number) {}

  /**
   * The end a gateway's status marks, kept if it is that gateway's newest: `offline`, its time; a
   * gateway (re)started (`online`, `since` its start), its start. Undefined when it marks none.
   */
  add(p: StoredPoint): { gateway: string; before: number } | undefined {
    const gateway = p.tags.gateway;
    if (gateway === undefined) return undefined;
    const since = p.fields.since;
    // `since` no later than the presence itself: a gateway's start in the future would otherwise
    // outrank every presence of its devices after it.
    const before = p.fields.state === 'offline' ? p.time : p.fields.state === 'online' && typeof since === 'number' ? Math.min(since, p.time) : undefined;
    if (before === undefined) return undefined;
    const ended = this.ends.get(gateway);
    if (ended === undefined || before > ended.before) {
      this.ends.delete(gateway); // set again at the end: the newest
      this.ends.set(gateway, { before, time: p.time });
      if (this.ends.size > this.max) this.ends.delete(this.ends.keys().next().value as string);
    }
    return { gateway, before };
  }

  /** The end of `gateway` that came after a device presence through it dated `time`, if one did. */
  after(gateway: string | null, time: number): GatewayEnd | undefined {
    const ended = gateway !== null ? this.ends.get(gateway) : undefined;
    return ended !== undefined && time <= ended.before ? ended : undefined;
  }
}
