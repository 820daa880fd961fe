import type { MqttClient } from 'mqtt';
import { CommandEnvelopeSchema, ENVELOPE_VERSION, parseEnvelope, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic, parseTopic, statusTopic } from '../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { CLOSE, type DeviceSession } from './device-session.ts';

/**
 * Knows which devices this gateway holds. For each it subscribes to that device's command topic, so
 * with several gateways a command reaches the device on whichever gateway holds its connection,
 * and it publishes the device's presence (retained) on connect and disconnect.
 *
 * The gateway's broker session is clean (MQTT 5 §3.1.2.4): after any reconnect the broker holds
 * no subscription of ours, and it may have lost the retained presence written since its last save.
 * So on every connection the command topics of all devices held here are subscribed again and
 * their presence published again; otherwise commands to them would find no subscriber and be
 * dropped until each device reconnected.
 */
export class CommandRouter {
  private readonly sessions = new Map<string, DeviceSession>();
  /** certificate expiry (epoch ms) of each device held, republished with its presence */
  private readonly notAfter = new Map<string, number | undefined>();

  constructor(
    private readonly mqtt: MqttClient,
    private readonly gatewayId: string,
    private readonly log: Logger,
  ) {
    mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
    subscribeOnEveryConnect(mqtt, () => [...this.sessions.keys()].map(commandTopic), { qos: 1 }, log);
    mqtt.on('connect', (connack) => {
      // The first connection happens before any device is let in; only a reconnect has devices.
      if (this.sessions.size > 0) log.info({ devices: this.sessions.size, sessionPresent: connack.sessionPresent }, 'broker reconnected; presence of the devices held published again');
      for (const deviceId of this.sessions.keys()) this.publishStatus(deviceId, 'online', this.notAfter.get(deviceId));
    });
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
    this.notAfter.set(session.deviceId, certNotAfter);
    this.publishStatus(session.deviceId, 'online', certNotAfter);
  }

  detach(session: DeviceSession): void {
    if (this.sessions.get(session.deviceId) !== session) return; // superseded: the new session owns the device
    this.sessions.delete(session.deviceId);
    this.notAfter.delete(session.deviceId);
    // A clean session that reconnected holds nothing to unsubscribe; mqtt.js would queue it meanwhile.
    if (this.mqtt.connected) this.mqtt.unsubscribe(commandTopic(session.deviceId));
    this.publishStatus(session.deviceId, 'offline');
  }

  private publishStatus(deviceId: string, state: StatusEnvelope['state'], certNotAfter?: number): void {
    if (!this.mqtt.connected) return;
    const status: StatusEnvelope = {
      v: ENVELOPE_VERSION,
      state,
      gatewayId: this.gatewayId,
      at: Date.now(),
      ...(certNotAfter !== undefined && Number.isFinite(certNotAfter) ? { certNotAfter } : {}),
    };
    this.mqtt.publish(statusTopic(deviceId), JSON.stringify(status), { qos: 1, retain: true });
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
      this.log.info({ deviceId: parsed.deviceId, commandId: command.commandId, delivered: delivered === true }, 'command forwarded');
    } catch (err) {
      if (!isFieldStreamError(err)) throw err;
      this.log.warn({ code: err.code, topic }, err.message);
    }
  }
}
