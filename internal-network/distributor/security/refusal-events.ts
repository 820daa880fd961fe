import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';
import type { ErrorCode } from '../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { keyMillisecond, MEASUREMENTS, POINT_KEY, type StoredPoint } from '../points.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { UNREGISTERED_DEVICE, type TalliedRefusal } from './refusal-tally.ts';

/** Every code the checks refuse a message with (SECURITY_DUPLICATE: a copy, not written again). */
export const SECURITY_REFUSAL_CODES = [
  'SECURITY_UNSIGNED',
  'SECURITY_REVOKED',
  'SECURITY_UNKNOWN_DEVICE',
  'SECURITY_BAD_SIGNATURE',
  'SECURITY_STALE',
  'SECURITY_REPLAY',
  'SECURITY_DUPLICATE',
] as const satisfies readonly ErrorCode[];
export type SecurityRefusalCode = (typeof SECURITY_REFUSAL_CODES)[number];

/** Where one check's refusals go: known devices' events stored one point each, the rest counted. */
export interface Refusals {
  events: StoredPoint[];
  tallied: TalliedRefusal[];
  /** the device is one the operator knows (its key listed, or revoked) */
  known: boolean;
}

/**
 * What a refused message leaves behind: a security event (one point, or a count per second:
 * refusal-tally.ts) and a log line within its code's budget. The event's time is chosen so that a
 * refusal checked again is the same point (eventTimes, eventTime).
 */
export class RefusalEvents {
  /**
   * Each known device's budget of events stored one point each, as a clock in epoch ms: each event
   * takes a millisecond after the previous one, at most TIMINGS.securityEventMaxLeadMs ahead of the
   * clock (past it, its refusals are counted per second: a flood naming one device adds a few
   * points a second, not one per message). The point's own time is not this (eventTime: from the
   * envelope, the same after a restart). Only devices the operator knows (registered or revoked)
   * are kept: a bounded set.
   */
  private readonly lastEventTime = new Map<string, number>();
  /**
   * The time each recent event was given, by its key (which names the refusal however often the
   * broker delivers its envelope): a refusal checked again is the same point in InfluxDB, not a
   * second one at the clock's new millisecond, counted twice by the dashboards. It is checked again
   * when its write is retried after a failure that may have reached the database (the answer lost at
   * the deadline; the other store down, docs/postgres.md), and when its message is delivered again
   * (a PUBACK lost). At most LIMITS.securityEventTimesRemembered, the oldest forgotten first; a
   * restart forgets them all, and the refusal is given the same time again from its envelope
   * (eventTime); PostgreSQL keeps one row by its key whatever the time.
   */
  private readonly eventTimes = new Map<string, number>();
  /** one log line per error code and TIMINGS.securityLogIntervalMs: a flood logs no line per message */
  private readonly floodLogs = new Map<ErrorCode, LimitedLog>();

  constructor(
    /** the tags every event of this distributor carries (VerifierOptions.instance) */
    private readonly ownTags: Readonly<Record<string, string>>,
    /** the verifier's bounds on a message's delay and the clocks' disagreement (VerifierOptions) */
    private readonly o: { maxDelayMs: number; freshnessMs: number },
    private readonly log: Logger,
  ) {}

  /**
   * A refused message's security event, and its log line. `index`: the message's place in the
   * envelope; with the envelope's gateway and arrival time it names this refusal the same way however
   * often the broker delivers the envelope.
   */
  add(to: Refusals, env: UplinkEnvelope, now: number, messageId: string, index: number, code: SecurityRefusalCode, detail: string): void {
    this.logLine(code, env, messageId, detail, now);
    const key = `d:${env.gatewayId}:${env.dataType}:${env.receivedAt}:${index}:${messageId}:${code}`;
    const before = to.known ? this.eventTimes.get(key) : undefined;
    if (before !== undefined) {
      to.events.push(this.eventPoint(env, messageId, code, detail, before, key));
      return;
    }
    const last = to.known ? this.lastEventTime.get(env.deviceId) : undefined;
    const slot = last === undefined || last < now ? now : last + 1;
    if (!to.known || slot > now + TIMINGS.securityEventMaxLeadMs) {
      to.tallied.push({ device: to.known ? env.deviceId : UNREGISTERED_DEVICE, reason: code, gateway: env.gatewayId, messageId });
      return;
    }
    if (this.lastEventTime.size >= LIMITS.securityEventClockMaxDevices && last === undefined) {
      // Budgets of earlier seconds hold nothing back: forgotten (a bound, should the fleet be larger).
      for (const [d, t] of this.lastEventTime) if (t < now - 1000) this.lastEventTime.delete(d);
    }
    this.lastEventTime.set(env.deviceId, slot);
    const time = this.eventTime(env, now, key);
    if (this.eventTimes.size >= LIMITS.securityEventTimesRemembered) this.eventTimes.delete(this.eventTimes.keys().next().value as string);
    this.eventTimes.set(key, time);
    to.events.push(this.eventPoint(env, messageId, code, detail, time, key));
  }

  /**
   * A refusal's time, from its envelope alone, so that the same refusal checked again after a
   * restart (its envelope delivered again: the distributor killed after the write, before the
   * PUBACK) is the same InfluxDB point, not a second one at the new process's clock: when the
   * gateway received the envelope (its `receivedAt`), less up to 999 ms its key gives it (points.ts
   * keyMillisecond; the key's nanoseconds lie under it, line-protocol.ts), so that refusals of one
   * arrival lie apart and none is later than its arrival (a dashboard's range ending now shows it
   * at once). An arrival
   * time older than TIMINGS.securityEventArrivalMaxAgeMs (or maxDelayMs, if shorter), or later than
   * TIMINGS.securityEventMaxLeadMs ahead of this side's clock (not freshnessMs, the clocks'
   * disagreement a message's freshness allows, 30 s: a refusal dated that far ahead lay after every
   * dashboard range ending now), is not taken: the event is stamped with this side's clock instead, and such a refusal checked again after a restart is stored again
   * (PostgreSQL keeps one row by its key). The arrival time is the DMZ's word: taken as far back as
   * maxDelayMs (7 days), it let a compromised DMZ place its forgeries' refusals days back, outside
   * every range an operator looks at while the alert on their count fires.
   */
  private eventTime(env: UplinkEnvelope, now: number, key: string): number {
    const arrived = env.receivedAt;
    const oldest = now - Math.min(this.o.maxDelayMs, TIMINGS.securityEventArrivalMaxAgeMs);
    const base = arrived >= oldest && arrived <= now + Math.min(this.o.freshnessMs, TIMINGS.securityEventMaxLeadMs) ? arrived : now;
    return base - keyMillisecond(key);
  }

  /** A known device's refusal as its security_events point. `key`: names the refusal (see eventTimes). */
  private eventPoint(env: UplinkEnvelope, messageId: string, code: SecurityRefusalCode, detail: string, time: number, key: string): StoredPoint {
    return {
      measurement: MEASUREMENTS.securityEvents,
      tags: { device: env.deviceId, reason: code, ...this.ownTags },
      // count: the dashboards add it up, over these, the counts per second and the gateways' reports
      fields: { count: 1, message_id: messageId, gateway: env.gatewayId, data_type: env.dataType, detail },
      time,
      [POINT_KEY]: key,
    };
  }

  /** A refusal's log line, at most one per code and TIMINGS.securityLogIntervalMs (with how many were left out). */
  logLine(code: ErrorCode, env: Pick<UplinkEnvelope, 'deviceId' | 'gatewayId'>, messageId: string, detail: string, now: number): void {
    let log = this.floodLogs.get(code);
    // A duplicate is most often a device resending after a lost ack: recorded, but not alarming.
    if (!log) {
      log = new LimitedLog(this.log, { level: code === 'SECURITY_DUPLICATE' ? 'info' : 'warn', maxPerWindow: 1, windowMs: TIMINGS.securityLogIntervalMs, what: `security refusals (${code})` });
      this.floodLogs.set(code, log);
    }
    log.write({ code, deviceId: env.deviceId, messageId, gatewayId: env.gatewayId }, `security: ${detail}`, now);
  }
}
