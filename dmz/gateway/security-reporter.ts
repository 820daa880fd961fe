import type { MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type GATEWAY_SECURITY_CODES, type GatewaySecurityReport } from '../../shared/contract/envelope.ts';
import { gatewaySecurityTopic } from '../../shared/contract/topics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { PUBACK_NO_MATCHING_SUBSCRIBERS, PubackReasons } from './puback-reasons.ts';

export type GatewaySecurityCode = (typeof GATEWAY_SECURITY_CODES)[number];

/**
 * Tells the internal side what this gateway refused for security reasons (a device over its rate
 * limit, a revoked certificate, a frame claiming another device), so the operator console can show
 * it beside the distributor's own security events. Counted per device and code and sent every
 * TIMINGS.gatewaySecurityReportMs, at most LIMITS.gatewaySecurityReportMaxEntries entries a report:
 * a flood of refusals is a few counters, never a flood of messages. QoS 1, not retained; while the
 * broker is away the counts wait (bounded the same way).
 *
 * A report counts as delivered only on a PUBACK of reason code 0: one the broker refused, or took
 * with 0x10 (No matching subscribers, MQTT 5 §3.4.2.1: a DMZ broker the internal network's bridge
 * has no session on drops it), or that the client gave up on, has its counts added back to those of
 * the next report, its `from` with them. Thought delivered, they were lost. Kept within the same
 * bounds: LIMITS.gatewaySecurityReportMaxEntries entries, each at most LIMITS.gatewayReportMaxCount
 * (more, and the distributor refuses the whole report); what passes them is counted as dropped.
 */
export class SecurityReporter {
  private counts = new Map<string, { deviceId: string; code: GatewaySecurityCode; count: number }>();
  private dropped = 0;
  private from = Date.now();
  private readonly timer: NodeJS.Timeout;
  private readonly pubackReasons: PubackReasons;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly gatewayId: string,
    private readonly log: Logger,
  ) {
    this.pubackReasons = PubackReasons.of(mqtt);
    this.timer = setInterval(() => this.flush(), TIMINGS.gatewaySecurityReportMs);
    this.timer.unref();
  }

  note(deviceId: string, code: GatewaySecurityCode): void {
    this.add(deviceId, code, 1);
  }

  private add(deviceId: string, code: GatewaySecurityCode, n: number): void {
    const key = `${code}\u0000${deviceId}`;
    const found = this.counts.get(key);
    const room = LIMITS.gatewayReportMaxCount - (found?.count ?? 0);
    if (found && room > 0) found.count += Math.min(n, room);
    else if (!found && this.counts.size < LIMITS.gatewaySecurityReportMaxEntries) this.counts.set(key, { deviceId, code, count: Math.min(n, room) });
    else {
      this.dropped += n;
      return;
    }
    if (n > room) this.dropped += n - room;
  }

  /** A report not delivered: its counts and its start back with those counted since. */
  private keep(report: GatewaySecurityReport): void {
    for (const e of report.events) this.add(e.deviceId, e.code, e.count);
    this.dropped = Math.min(Number.MAX_SAFE_INTEGER, this.dropped + report.dropped);
    this.from = Math.min(this.from, report.from);
  }

  /** Sends what was counted, if anything and if the broker is there (otherwise it keeps it for the next try). */
  flush(): void {
    if ((this.counts.size === 0 && this.dropped === 0) || !this.mqtt.connected) return;
    const report: GatewaySecurityReport = { v: ENVELOPE_VERSION, gatewayId: this.gatewayId, from: this.from, to: Date.now(), events: [...this.counts.values()], dropped: this.dropped };
    this.counts = new Map();
    this.dropped = 0;
    this.from = report.to;
    this.mqtt.publish(gatewaySecurityTopic(this.gatewayId), JSON.stringify(report), { qos: 1 }, (err, packet) => {
      const reasonCode = this.pubackReasons.take(packet?.messageId);
      if (!err && reasonCode === 0) return;
      this.keep(report);
      const why = reasonCode === PUBACK_NO_MATCHING_SUBSCRIBERS ? " (0x10, no subscriber: the internal network's bridge has no session on this broker)" : '';
      this.log.warn({ err: err?.message, reasonCode, entries: report.events.length }, `security report not taken by the broker${why}; its counts go with the next report`);
    });
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
