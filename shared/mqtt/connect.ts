import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../logger.ts';
import { warnIfExpiring } from '../tls-files.ts';

/**
 * An MQTT client over mutual TLS, the only way our services talk to a broker. The broker's
 * certificate is verified against our CA (hostname included); ours identifies the service by its
 * CN, which the broker's ACL maps to a role.
 */
export interface MqttTlsOptions {
  url: string;
  ca: string;
  cert: string;
  key: string;
  clientId: string;
  /** 5 for Mosquitto (shared subscriptions, reason codes); 4 for the embedded broker. */
  protocolVersion: 4 | 5;
  /** false: a persistent session, so the broker queues QoS 1 messages while we are away. */
  clean: boolean;
  /** milliseconds between reconnect attempts */
  reconnectPeriodMs?: number;
}

export function connectMqtt(options: MqttTlsOptions, log: Logger, extra: Partial<IClientOptions> = {}): MqttClient {
  warnIfExpiring('MQTT_CERT_FILE', options.cert, log);
  const client = connect(options.url, {
    ca: options.ca,
    cert: options.cert,
    key: options.key,
    rejectUnauthorized: true,
    clientId: options.clientId,
    protocolVersion: options.protocolVersion,
    clean: options.clean,
    reconnectPeriod: options.reconnectPeriodMs ?? 1000,
    connectTimeout: 10_000,
    keepalive: 30,
    // MQTT 5 §3.1.2.11.2: without a session expiry the broker drops a persistent session at disconnect.
    ...(options.protocolVersion === 5 && !options.clean ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}),
    ...extra,
  });
  let wasConnected = false;
  client.on('connect', () => {
    wasConnected = true;
    log.info({ url: options.url, clientId: options.clientId }, 'connected to MQTT broker');
  });
  client.on('close', () => {
    if (wasConnected && !client.disconnecting) log.warn({ url: options.url }, 'MQTT connection closed; reconnecting');
    wasConnected = false;
  });
  client.on('error', (err) => log.warn({ url: options.url, err: err.message }, 'MQTT connection error'));
  return client;
}

/** Resolves once the client is connected (it keeps retrying until then). */
export function whenConnected(client: MqttClient): Promise<void> {
  if (client.connected) return Promise.resolve();
  return new Promise((resolve) => client.once('connect', () => resolve()));
}

export function endMqtt(client: MqttClient, force = false): Promise<void> {
  return new Promise((resolve) => client.end(force, {}, () => resolve()));
}
