import { randomBytes } from 'node:crypto';
import { LIMITS } from '../../../shared/limits.ts';
import { MEASUREMENTS, POINT_KEY, type StoredPoint } from '../points.ts';

/**
 * The device tag of refusals counted together rather than stored one point each: those of device
 * ids neither registered nor revoked (any id a compromised DMZ invents). Not a valid device id (it
 * starts with "_"), so it can never be a device's; the console shows it fleet-wide only.
 */
export const UNREGISTERED_DEVICE = '_unregistered';

/** One refusal to count: `device` is UNREGISTERED_DEVICE, or a known device whose events outran the clock. */
export interface TalliedRefusal {
  device: string;
  reason: string;
  gateway: string;
  messageId: string;
}

interface Count {
  device: string;
  reason: string;
  gateway: string;
  count: number;
  firstMessageId: string;
}

/**
 * Refusals counted per second and (device tag, reason, gateway), each count one security_events
 * point: a flood of forged ids costs the database a few points a second, and adds no series (the
 * device tag is fixed), where one point per message with the forged id as its tag added a series
 * per id and 22,000 points a second.
 *
 * Each count is tagged `counted=per-second`, a series apart from the events stored one by one (a
 * known device's own, at their own milliseconds), so the two never share (tags, time).
 * A count's time lies in its own second: the second's start plus its index in the second (at most
 * LIMITS.securityTallyMaxKeys, < 1000), so no two counts of one second share (tags, time) and none
 * is ever later than its second (InfluxDB keeps one point per measurement, tags and time). Past the
 * bound a second's further keys are counted under gateway "_other". Replicas counting the same
 * reason in the same second tell their counts apart by the tag `distributor` (their
 * DISTRIBUTOR_CLIENT_ID), given as `ownTags`; the Postgres sink keeps both by the key, which names
 * the process.
 */
export class RefusalTally {
  private second = -1;
  private counts = new Map<string, Count>();
  private closed: StoredPoint[] = [];
  /** names this process in the points' keys (Postgres: one row per key) */
  private readonly instance = randomBytes(4).toString('hex');

  constructor(
    /** tags every count carries (the distributor's name: replicas counting the same second) */
    private readonly ownTags: Readonly<Record<string, string>> = {},
  ) {}

  add(r: TalliedRefusal, now: number): void {
    const second = Math.floor(now / 1000);
    if (second !== this.second) this.close(second);
    let key = `${r.device}\u0000${r.reason}\u0000${r.gateway}`;
    let c = this.counts.get(key);
    if (!c && this.counts.size >= LIMITS.securityTallyMaxKeys - 1) {
      key = `${UNREGISTERED_DEVICE}\u0000${r.reason}\u0000_other`;
      c = this.counts.get(key);
      if (!c) this.counts.set(key, (c = { device: UNREGISTERED_DEVICE, reason: r.reason, gateway: '_other', count: 0, firstMessageId: r.messageId }));
    } else if (!c) this.counts.set(key, (c = { device: r.device, reason: r.reason, gateway: r.gateway, count: 0, firstMessageId: r.messageId }));
    c.count++;
  }

  /** The points of the seconds that are over (all, with `all`: at a stop). */
  take(now: number, all = false): StoredPoint[] {
    if (all || Math.floor(now / 1000) !== this.second) this.close(Math.floor(now / 1000));
    const points = this.closed;
    this.closed = [];
    return points;
  }

  private close(next: number): void {
    let i = 0;
    for (const c of this.counts.values()) {
      const detail = `${c.count} message${c.count === 1 ? '' : 's'} refused (${c.reason}) from gateway ${c.gateway}${c.device === UNREGISTERED_DEVICE ? ', naming devices neither registered nor revoked' : ''}; first: ${c.firstMessageId}`;
      this.closed.push({
        measurement: MEASUREMENTS.securityEvents,
        // `counted`: a series apart from the device's own one-point-per-refusal events, which may lie
        // at the same millisecond (a known device's events that outran the clock are counted here).
        tags: { device: c.device, reason: c.reason, counted: 'per-second', ...this.ownTags },
        // count: the dashboards add up this field (a refusal stored alone has count 1)
        fields: { count: c.count, gateway: c.gateway, message_id: c.firstMessageId, detail },
        time: this.second * 1000 + i,
        [POINT_KEY]: `t:${this.instance}:${this.second}:${i}`,
      });
      i++;
    }
    this.counts = new Map();
    this.second = next;
  }
}
