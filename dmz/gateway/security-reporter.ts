import type { MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type GATEWAY_SECURITY_CODES, type GatewaySecurityReport } from '../../shared/contract/envelope.ts';
import { gatewaySecurityTopic } from '../../shared/contract/topics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

export type GatewaySecurityCode = (typeof GATEWAY_SECURITY_CODES)[number];

/**
 * Tells the internal side what this gateway refused for security reasons (a device over its rate
 * limit, a revoked certificate, a frame claiming another device), so the operator console can show
 * it beside the distributor's own security events. Counted per device and code and sent every
 * TIMINGS.gatewaySecurityReportMs, at most LIMITS.gatewaySecurityReportMaxEntries entries a report:
 * a flood of refusals is a few counters, never a flood of messages. QoS 1, not retained; while the
 * broker is away the counts wait (bounded the same way).
 */
export class SecurityReporter {
  private counts = new Map<string, { deviceId: string; code: GatewaySecurityCode; count: number }>();
  private dropped = 0;
  private from = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly gatewayId: string,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => this.flush(), TIMINGS.gatewaySecurityReportMs);
    this.timer.unref();
  }

  note(deviceId: string, code: GatewaySecurityCode): void {
    const key = `${code}\u0000${deviceId}`;
    const found = this.counts.get(key);
    if (found) found.count++;
    else if (this.counts.size < LIMITS.gatewaySecurityReportMaxEntries) this.counts.set(key, { deviceId, code, count: 1 });
    else this.dropped++;
  }

  /** Sends what was counted, if anything and if the broker is there (otherwise it keeps it for the next try). */
  flush(): void {
    if ((this.counts.size === 0 && this.dropped === 0) || !this.mqtt.connected) return;
    const report: GatewaySecurityReport = { v: ENVELOPE_VERSION, gatewayId: this.gatewayId, from: this.from, to: Date.now(), events: [...this.counts.values()], dropped: this.dropped };
    this.counts = new Map();
    this.dropped = 0;
    this.from = report.to;
    this.mqtt.publish(gatewaySecurityTopic(this.gatewayId), JSON.stringify(report), { qos: 1 }, (err) => {
      if (err) this.log.warn({ err: err.message, entries: report.events.length }, 'security report not delivered to the broker');
    });
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
