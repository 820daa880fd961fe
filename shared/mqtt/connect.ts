import { connect, Store, type IClientOptions, type IClientSubscribeOptions, type IConnackPacket, type ISubscriptionMap, type MqttClient } from 'mqtt';
import { FieldStreamError } from '../errors.ts';
import { TIMINGS } from '../limits.ts';
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

/**
 * mqtt.js's own outgoing store (what was published at QoS 1 and not yet acknowledged), which also
 * tells `beforeResend` of each accepted CONNACK at the moment mqtt.js begins sending that store again:
 * connected, and nothing of it sent yet. mqtt.js sends it again one message a PUBACK, queues every
 * other packet meanwhile, and emits 'connect' only once all of it is acknowledged: a client that
 * subscribed at 'connect' (its session clean, the broker holding no subscription of it) did so only
 * then, and what its messages sent again caused in answer meanwhile (a gateway's commit receipts)
 * found no subscriber and was dropped. The one point before the resending is where mqtt.js asks
 * its store for it (client.js _onConnect, mqtt 5).
 */
class ResendAwareStore extends Store {
  /** the CONNACK being handled (the client's 'packetreceive' comes before its handling) */
  connack: IConnackPacket | undefined;
  readonly beforeResend = new Set<(connack: IConnackPacket) => void>();

  override createStream(): ReturnType<Store['createStream']> {
    const connack = this.connack;
    if (connack) for (const f of [...this.beforeResend]) f(connack);
    return super.createStream();
  }
}

const resendAware = new WeakMap<MqttClient, ResendAwareStore>();

export function connectMqtt(options: MqttTlsOptions, log: Logger, extra: Partial<IClientOptions> = {}): MqttClient {
  warnIfExpiring('MQTT_CERT_FILE', options.cert, log);
  const outgoingStore = new ResendAwareStore();
  const client = connect(options.url, {
    outgoingStore,
    ca: options.ca,
    cert: options.cert,
    key: options.key,
    rejectUnauthorized: true,
    clientId: options.clientId,
    protocolVersion: options.protocolVersion,
    clean: options.clean,
    reconnectPeriod: options.reconnectPeriodMs ?? TIMINGS.mqttReconnectPeriodMs,
    connectTimeout: TIMINGS.mqttConnectTimeoutMs,
    keepalive: TIMINGS.mqttKeepaliveS,
    // MQTT 5 §3.1.2.11.2: without a session expiry the broker drops a persistent session at disconnect.
    ...(options.protocolVersion === 5 && !options.clean ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}),
    ...extra,
  });
  if (client.outgoingStore === outgoingStore) {
    resendAware.set(client, outgoingStore);
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'connack') outgoingStore.connack = packet;
    });
  }
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

/**
 * Ends the client within about twice `graceMs` whatever its broker does. mqtt.js's graceful end
 * waits for the acknowledgement of every QoS 1 message outstanding, without bound, and a client
 * being ended no longer reconnects: with the broker stalled, or gone and the client reconnecting,
 * that end never came, and neither did the service's stop. Here what is outstanding has `graceMs`
 * to be acknowledged (the client still reconnects and sends it again meanwhile); then the end is
 * graceful (a DISCONNECT: no will) only if nothing is outstanding and the broker is connected, and
 * a graceful end the broker does not answer within `graceMs` (frozen: the connection never
 * closes) is cut. For a client whose unacknowledged messages nobody waits for any more (the
 * gateway's, once its devices are gone: they were not acked, and send them again).
 */
export async function endMqttWithin(client: MqttClient, graceMs: number): Promise<void> {
  const outstanding = () => Object.keys(client.outgoing).length > 0;
  if (outstanding()) {
    let timer: NodeJS.Timeout | undefined;
    let drained: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      drained = resolve;
      timer = setTimeout(resolve, graceMs);
      client.once('outgoingEmpty', resolve);
    });
    clearTimeout(timer);
    if (drained) client.off('outgoingEmpty', drained);
  }
  if (outstanding() || !client.connected) {
    await endMqtt(client, true);
    return;
  }
  const cut = setTimeout(() => client.stream.destroy(), graceMs);
  try {
    await endMqtt(client);
  } finally {
    clearTimeout(cut);
  }
}

export interface Resubscription {
  /** Resolves the first time the broker grants every filter (it never rejects: a refusal is logged
   * with MQTT_SUBSCRIBE_REFUSED and tried again on the next connection). */
  readonly ready: Promise<void>;
  /** No more subscribing on later connections (what the broker holds is left as it is). */
  stop(): void;
}

/**
 * Subscribes on every connection, whatever the CONNACK's session-present flag says, instead of
 * trusting the broker to have kept our subscriptions: a Mosquitto restored from its persistence
 * file after a crash can answer "session present" for a session whose subscriptions it lost
 * (shared ones, or any made after its last save), and a clean session has none at all. Subscribing
 * again is harmless (MQTT 5 §3.8.4: a SUBSCRIBE for a filter already held replaces it). Pass
 * `resubscribe: false` to connectMqtt for such a client, so mqtt.js does not subscribe a second time
 * (it does so only when the session is not present, and that is not enough).
 *
 * `filters` may be a function, read at each connection, for a set that changes (the gateway's
 * devices). Each SUBACK reason code is checked: 0x80 and above is a refusal (MQTT 5 §3.9.3).
 *
 * For a client of connectMqtt, the SUBSCRIBE goes out at the CONNACK, before mqtt.js sends again
 * what the broker had not acknowledged (ResendAwareStore): the broker takes one connection's packets
 * in order, so the subscriptions are in place before anything sent again can be answered. At
 * 'connect' (after the last of those is acknowledged) only for another client.
 */
export function subscribeOnEveryConnect(
  client: MqttClient,
  filters: readonly string[] | (() => readonly string[]),
  opts: IClientSubscribeOptions,
  log: Logger,
): Resubscription {
  let granted!: () => void;
  const ready = new Promise<void>((resolve) => (granted = resolve));
  let connections = 0;
  const subscribe = (connack?: IConnackPacket) => {
    const connection = ++connections;
    const list = typeof filters === 'function' ? filters() : filters;
    const sessionPresent = connack?.sessionPresent === true;
    const shown = list.length <= 10 ? list : `${list.length} filters`;
    if (list.length === 0) {
      granted();
      return;
    }
    // The map form with `resubscribe: true`: otherwise mqtt.js (with its own `resubscribe` option
    // on, the default) silently skips a filter it believes subscribed and sends no SUBSCRIBE.
    // (ISubscriptionMap's index signature cannot express its own `resubscribe` key, hence the cast.)
    const map = { ...Object.fromEntries(list.map((f) => [f, opts])), resubscribe: true } as unknown as ISubscriptionMap;
    client.subscribe(map, opts, (err, grants) => {
      const refused = (grants ?? []).filter((g) => g.qos >= 0x80);
      const code = err && typeof (err as { code?: unknown }).code === 'number';
      if (refused.length > 0 || code) {
        const e = new FieldStreamError('MQTT_SUBSCRIBE_REFUSED', `the broker refused ${refused.map((g) => `${g.topic} (0x${g.qos.toString(16)})`).join(', ') || err?.message}`);
        log.error({ code: e.code, filters: shown, connection }, e.message);
      } else if (err) {
        // The connection went away before the SUBACK: the next connection subscribes again.
        log.warn({ err: err.message, filters: shown, connection }, 'subscription not confirmed; retried on reconnect');
      } else {
        log.info({ filters: shown, sessionPresent, connection }, connection === 1 ? 'subscription granted' : 'subscription granted again after reconnect');
        granted();
      }
    });
  };
  // Once a connection: at its CONNACK where the store tells of it, else at its 'connect' (the same packet).
  let subscribedAt: IConnackPacket | undefined;
  const atConnection = (connack: IConnackPacket) => {
    if (connack === subscribedAt) return;
    subscribedAt = connack;
    subscribe(connack);
  };
  const store = resendAware.get(client);
  store?.beforeResend.add(atConnection);
  client.on('connect', atConnection);
  if (client.connected) subscribe();
  return {
    ready,
    stop: () => {
      store?.beforeResend.delete(atConnection);
      client.off('connect', atConnection);
    },
  };
}
