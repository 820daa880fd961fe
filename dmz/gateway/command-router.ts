import type { MqttClient } from 'mqtt';
import { CommandEnvelopeSchema, ENVELOPE_VERSION, parseEnvelope, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic, parseTopic, statusTopic } from '../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import type { Logger } from '../../shared/logger.ts';
import { subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { CLOSE, type DeviceSession } from './device-session.ts';

/** A device held, and what its presence says each time it is published. */
interface Held {
  /** certificate expiry (epoch ms), absent for a device token */
  notAfter: number | undefined;
  /** epoch ms the gateway let the device in (its presence's `since` when published again) */
  since: number;
  /** epoch ms its presence was last published (undefined: not yet, the broker being away) */
  publishedAt: number | undefined;
}

/**
 * Knows which devices this gateway holds. For each it subscribes to that device's command topic, so
 * with several gateways a command reaches the device on whichever gateway holds its connection,
 * and it publishes the device's presence (retained) on connect and disconnect.
 *
 * The gateway's broker session is clean (MQTT 5 §3.1.2.4): after any reconnect the broker holds
 * no subscription of ours, and it may have lost the retained presence written since its last save.
 * So on every connection the command topics of all devices held here are subscribed again and
 * their presence published again; otherwise commands to them would find no subscriber and be
 * dropped until each device reconnected. A device that left meanwhile has its `offline` published
 * then, of the time it left.
 *
 * A connection may last for months, and its presence would then be as old: what reads presence
 * within a window of time (the Devices dashboards' "online", a database's retention policy) would
 * lose the device. So each device's presence is published again once it is TIMINGS.presenceRefreshMs
 * old. Published again, a presence carries `since`, the time of the connection, which tells the
 * stored reminder from a connection (docs/monitoring.md, "Devices").
 */
export class CommandRouter {
  private readonly sessions = new Map<string, DeviceSession>();
  private readonly held = new Map<string, Held>();
  /**
   * Devices that left while the broker was away, and when: their `offline` is published at the next
   * connection. Dropped, it left the device's retained presence `online` until it connected again
   * (a device retired: for good). At most one entry a device that was held here.
   */
  private readonly departed = new Map<string, number>();
  /** commands forwarded, and commands refused: whoever holds the DMZ broker decides how many come */
  private readonly forwardedLog: LimitedLog;
  private readonly refusedLog: LimitedLog;
  private readonly refreshTimer: NodeJS.Timeout;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly gatewayId: string,
    private readonly log: Logger,
    private readonly o: { refreshMs: number; refreshCheckMs: number; now?: () => number } = { refreshMs: TIMINGS.presenceRefreshMs, refreshCheckMs: TIMINGS.presenceRefreshCheckMs },
  ) {
    const bound = { maxPerWindow: LIMITS.gatewayDownlinkLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs };
    this.forwardedLog = new LimitedLog(log, { ...bound, level: 'info', what: 'commands forwarded' });
    this.refusedLog = new LimitedLog(log, { ...bound, level: 'warn', what: 'commands refused' });
    mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
    subscribeOnEveryConnect(mqtt, () => [...this.sessions.keys()].map(commandTopic), { qos: 1 }, log);
    mqtt.on('connect', (connack) => {
      // The first connection happens before any device is let in; only a reconnect has devices.
      if (this.sessions.size > 0) log.info({ devices: this.sessions.size, sessionPresent: connack.sessionPresent }, 'broker reconnected; presence of the devices held published again');
      // A device let in while the broker was away has had no presence yet: its first is no reminder.
      for (const [deviceId, h] of this.held) this.publishOnline(deviceId, h, h.publishedAt !== undefined);
      // At the time each left, not now: a presence of it published since by another gateway is newer.
      for (const [deviceId, at] of this.departed) if (this.publishStatus(deviceId, { state: 'offline' }, at)) this.departed.delete(deviceId);
    });
    this.refreshTimer = setInterval(() => this.refresh(), o.refreshCheckMs);
    // Reminders alone do not keep the process alive.
    this.refreshTimer.unref();
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Publishes again the presence of each device held whose last one is refreshMs old (the timer calls it). */
  refresh(): void {
    if (!this.mqtt.connected) return; // the next connection publishes every presence anyway
    const due = this.now() - this.o.refreshMs;
    let n = 0;
    for (const [deviceId, h] of this.held) {
      if (h.publishedAt !== undefined && h.publishedAt <= due) {
        this.publishOnline(deviceId, h, true);
        n++;
      }
    }
    if (n > 0) this.log.debug({ devices: n }, 'presence of devices held for a day published again');
  }

  /** No more reminders (the gateway is stopping). */
  close(): void {
    clearInterval(this.refreshTimer);
  }

  get connectedDevices(): number {
    return this.sessions.size;
  }

  /** The session that holds the device now, if any. */
  session(deviceId: string): DeviceSession | undefined {
    return this.sessions.get(deviceId);
  }

  attach(session: DeviceSession, certNotAfter?: number): void {
    const previous = this.sessions.get(session.deviceId);
    if (previous && !previous.isClosed) {
      // The newest connection wins: a device that reconnected after a network change must not be
      // locked out by its own half-open old socket.
      previous.close(CLOSE.superseded, 'GATEWAY_SUPERSEDED');
    } else if (this.mqtt.connected) {
      // While disconnected, nothing to do: the next connection subscribes every device held.
      this.mqtt.subscribe(commandTopic(session.deviceId), { qos: 1 }, (err) => {
        // mqtt.js reports a SUBACK reason code of 0x80 or more (MQTT 5 §3.9.3) as an error with a numeric code.
        const code = typeof (err as { code?: unknown } | null)?.code === 'number' ? 'MQTT_SUBSCRIBE_REFUSED' : undefined;
        if (err) this.log.error({ deviceId: session.deviceId, code, err: err.message }, 'cannot subscribe to device commands');
      });
    }
    this.sessions.set(session.deviceId, session);
    this.departed.delete(session.deviceId);
    const h: Held = { notAfter: certNotAfter, since: this.now(), publishedAt: undefined };
    this.held.set(session.deviceId, h);
    this.publishOnline(session.deviceId, h, false);
  }

  /**
   * `at`: when the connection ended (server.ts: when its device was last heard on it); default now.
   * Never before the last presence published of the connection: its offline must be the newer.
   */
  detach(session: DeviceSession, at = this.now()): void {
    if (this.sessions.get(session.deviceId) !== session) return; // superseded: the new session owns the device
    const h = this.held.get(session.deviceId);
    if (h) at = Math.max(at, h.publishedAt ?? h.since);
    this.sessions.delete(session.deviceId);
    this.held.delete(session.deviceId);
    // A clean session that reconnected holds nothing to unsubscribe; mqtt.js would queue it meanwhile.
    if (this.mqtt.connected) this.mqtt.unsubscribe(commandTopic(session.deviceId));
    if (!this.publishStatus(session.deviceId, { state: 'offline' }, at)) this.departed.set(session.deviceId, at);
  }

  /** The device's `online`: at its connection, or (`again`) as a reminder of it, with its `since`. */
  private publishOnline(deviceId: string, h: Held, again: boolean): void {
    const notAfter = h.notAfter !== undefined && Number.isFinite(h.notAfter) ? { certNotAfter: h.notAfter } : {};
    if (this.publishStatus(deviceId, { state: 'online', ...notAfter, ...(again ? { since: h.since } : {}) })) h.publishedAt = this.now();
  }

  /** Publishes a presence of `at` (default now); false when the broker is away (the next connection publishes it). */
  private publishStatus(deviceId: string, presence: Pick<StatusEnvelope, 'state' | 'certNotAfter' | 'since'>, at = this.now()): boolean {
    if (!this.mqtt.connected) return false;
    const status: StatusEnvelope = { v: ENVELOPE_VERSION, gatewayId: this.gatewayId, at, ...presence };
    this.mqtt.publish(statusTopic(deviceId), JSON.stringify(status), { qos: 1, retain: true });
    return true;
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      const parsed = parseTopic(topic);
      if (parsed.kind !== 'downlink') return;
      const command = parseEnvelope(CommandEnvelopeSchema, payload);
      const session = this.sessions.get(parsed.deviceId);
      const delivered = session?.sendCommand({
        type: 'command',
        commandId: command.commandId,
        command: command.command,
        ...(command.params !== undefined ? { params: command.params } : {}),
        issuedAt: command.issuedAt,
        // Forwarded untouched: the gateway cannot make or check it (it never holds device keys).
        ...(command.auth !== undefined ? { auth: command.auth } : {}),
      });
      this.forwardedLog.write({ deviceId: parsed.deviceId, commandId: command.commandId, delivered: delivered === true }, 'command forwarded');
    } catch (err) {
      // Not thrown on: mqtt.js calls this listener synchronously, and an error escaping it would end
      // the process, every device's connection with it, for one message of the DMZ broker.
      if (!isFieldStreamError(err)) {
        this.log.error({ code: 'GATEWAY_INTERNAL', topic, err }, 'handling a command failed; dropped');
        return;
      }
      this.refusedLog.write({ code: err.code, topic: topic.slice(0, 200) }, err.message);
    }
  }
}
