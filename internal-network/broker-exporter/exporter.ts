import type { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/logger.ts';
import type { TLSSocket } from 'node:tls';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { collectedCounter } from '../../shared/metrics/collected.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer, type MetricsServer } from '../../shared/metrics/server.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { limitIncomingPackets } from '../../shared/mqtt/packet-limit.ts';
import { closeAboveQos } from '../../shared/mqtt/qos-guard.ts';
import { connectMqtt, endMqtt, endMqttWithin, subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import { readPemSetting } from '../../shared/tls-files.ts';
import { SYS_FILTER } from '../../shared/acl.ts';
import { bridgeStateNames, expectedBridges, type BrokerExporterConfig } from './config.ts';

/**
 * What Mosquitto 2.0.11 publishes under $SYS that we read (seen with `mosquitto_sub -t '$SYS/#' -v`
 * on our own configurations). Each value is retained and published again, every sys_interval, only
 * when it changed; `$SYS/broker/uptime` changes every time, so some $SYS message arrives every
 * interval while the broker works (an idle one now and then skips one: its loop wakes a little
 * early, seen as uptimes 6, 16 with sys_interval 5). Totals start again from 0 when the broker restarts.
 */
export const SYS = {
  clientsConnected: '$SYS/broker/clients/connected',
  messagesReceived: '$SYS/broker/messages/received',
  messagesSent: '$SYS/broker/messages/sent',
  /** messages held by the broker: retained, queued for offline sessions, in flight */
  messagesStored: '$SYS/broker/messages/stored',
  storeBytes: '$SYS/broker/store/messages/bytes',
  subscriptions: '$SYS/broker/subscriptions/count',
  publishReceived: '$SYS/broker/publish/messages/received',
  publishSent: '$SYS/broker/publish/messages/sent',
  /** PUBLISHes dropped (queues full, offline clients over max_queued_*) */
  publishDropped: '$SYS/broker/publish/messages/dropped',
} as const;

/**
 * A bridge's state, "1" or "0", retained, on the broker that runs the bridge. Mosquitto names the
 * topic after the bridge's remote_clientid unless `notification_topic` says otherwise; our bridge.conf
 * names it after the client id and BRIDGE_STATE_TOKEN (`$SYS/broker/connection/fieldstream-bridge-<token>/state`),
 * a name the DMZ cannot know. With `notifications_local_only true` it is published on the internal
 * broker only (the DMZ broker never sees it).
 */
export const BRIDGE_STATE = /^\$SYS\/broker\/connection\/([^/]+)\/state$/;

/**
 * A bridge's heartbeat: the DMZ broker's `$SYS/broker/uptime`, which it publishes every sys_interval,
 * brought in by that bridge under its state's name (bridge.conf: `topic uptime in 0
 * $SYS/broker/connection/<name>/remote/ $SYS/broker/`). It arrives only while that DMZ broker works
 * and the bridge carries its messages, whichever DMZ broker it is: no connection to it is needed.
 */
export const BRIDGE_HEARTBEAT = /^\$SYS\/broker\/connection\/([^/]+)\/remote\/uptime$/;

/**
 * How Mosquitto writes every value of SYS: a count, in decimal digits. `Number()` alone took an empty
 * payload as 0 and "0x10", " 7 " or "1e3" as numbers Mosquitto never writes.
 */
const COUNT = /^\d{1,16}$/;

/** The $SYS topics kept (SYS); any other is not looked at. */
const READ: ReadonlySet<string> = new Set(Object.values(SYS));

/** One broker: its connection, and the latest $SYS values while it stands. */
export class BrokerWatch {
  readonly values = new Map<string, number>();
  /** expected bridge's client id → 1/0, for those whose state arrived */
  readonly bridges = new Map<string, number>();
  /** bridge states and heartbeats that arrived under a name not expected (what a compromised DMZ invents or forges), since start */
  ignoredBridgeStates = 0;
  lastSysAt = 0;
  /** when the certificate the broker presented at the last TLS connection ends, Unix seconds (kept while it is away: it presents the same one on its return unless renewed) */
  certificateNotAfter: number | undefined;
  /** expected bridge's client id → when its heartbeat last arrived, live (not a retained copy) */
  private readonly heartbeats = new Map<string, number>();
  /** when the connection was (last) made: a bridge's heartbeat is awaited from then on */
  private connectedAt = Date.now();
  private readonly expected: ReadonlyMap<string, string>;

  /**
   * `expectedBridges`: the bridges this broker runs (none for the DMZ broker), by the name their
   * state is published under (bridgeStateNames: the client id, with BRIDGE_STATE_TOKEN) → client id;
   * or their client ids, when that is the name.
   */
  constructor(
    readonly name: 'internal' | 'dmz',
    readonly client: MqttClient,
    private readonly staleMs: number,
    expectedBridges: readonly string[] | ReadonlyMap<string, string> = [],
  ) {
    this.expected = Array.isArray(expectedBridges) ? new Map(expectedBridges.map((id) => [id, id])) : (expectedBridges as ReadonlyMap<string, string>);
    // What arrives under $SYS is not only the broker's own: a bridge the broker runs brings in any
    // topic the DMZ broker sends, $SYS ones too, and no ACL applies to it (SECURITY.md). So only the
    // topics read are kept, and the states of the bridges expected (render-bridges.sh's names): a
    // state under any other name is counted, never kept, so invented names neither grow this
    // process's memory nor crowd out (or stand in for) the real bridges. With BRIDGE_STATE_TOKEN the
    // names expected are ones the DMZ cannot know, so one under a real bridge's client id alone is
    // a forgery, counted likewise; without it, an expected name's value may still be a lie.
    client.on('message', (topic, payload, packet) => {
      this.lastSysAt = Date.now();
      const beat = BRIDGE_HEARTBEAT.exec(topic);
      if (beat?.[1] !== undefined) {
        const id = this.expected.get(beat[1]);
        if (id === undefined) this.ignoredBridgeStates++;
        // Not the retained copy the broker hands over on subscribing: that is the last heartbeat
        // before whatever happened since, and a hang of hours would read as a beat at every reconnect.
        else if (packet?.retain !== true) this.heartbeats.set(id, this.lastSysAt);
        return;
      }
      const bridge = BRIDGE_STATE.exec(topic);
      if (bridge?.[1] !== undefined) {
        const id = this.expected.get(bridge[1]);
        if (id !== undefined) this.bridges.set(id, payload.toString() === '1' ? 1 : 0);
        else this.ignoredBridgeStates++;
        return;
      }
      if (!READ.has(topic)) return;
      const text = payload.toString();
      if (COUNT.test(text)) this.values.set(topic, Number(text));
    });
    // Nothing is reported from a broker we are not connected to: its last values would be stale.
    client.on('close', () => {
      this.values.clear();
      this.bridges.clear();
      this.heartbeats.clear();
      this.lastSysAt = 0;
    });
    client.on('connect', () => {
      this.connectedAt = Date.now();
      this.certificateNotAfter = peerNotAfter(client) ?? this.certificateNotAfter;
    });
  }

  /** Connected, and $SYS arrived within the staleness limit. */
  get up(): boolean {
    return this.client.connected && this.lastSysAt > 0 && Date.now() - this.lastSysAt <= this.staleMs;
  }

  /**
   * The value last read of a $SYS topic, while this broker is up only: a broker that hangs keeps
   * its connection until the keepalive gives up on it (up to 45 s), and what it said before it hung
   * is as stale as what a broker we are not connected to said.
   */
  read(topic: string): number | undefined {
    return this.up ? this.values.get(topic) : undefined;
  }

  /**
   * 1 while this broker can be read, the expected bridge's last state is "1" (no state yet is 0),
   * and its heartbeat arrived within the staleness limit. Mosquitto 2.0 publishes no "0" for a
   * bridge whose DMZ broker hangs (or whose packets a network drops): with notifications_local_only
   * it drops the connection at its keepalive and dials again, its state left at "1" for as long as
   * the hang lasts; its heartbeat stops. None awaited yet counts from the connection to this broker
   * (a heartbeat comes every sys_interval), so a bridge already hung when the exporter starts, or
   * one whose DMZ broker's ACL does not let it read the uptime, reads as down too.
   */
  bridgeUp(id: string): 0 | 1 {
    const beatAt = Math.max(this.heartbeats.get(id) ?? 0, this.connectedAt);
    return this.up && this.bridges.get(id) === 1 && Date.now() - beatAt <= this.staleMs ? 1 : 0;
  }
}

/** The notAfter of the certificate the broker presented on this connection, Unix seconds; undefined without TLS. */
function peerNotAfter(client: MqttClient): number | undefined {
  const socket = (client as unknown as { stream?: Partial<TLSSocket> }).stream;
  if (typeof socket?.getPeerX509Certificate !== 'function') return undefined;
  const cert = socket.getPeerX509Certificate();
  return cert ? Math.floor(Date.parse(cert.validTo) / 1000) : undefined;
}

export interface BrokerExporter {
  readonly metrics: ServiceMetrics;
  readonly metricsUrl: string;
  close(): Promise<void>;
}

/**
 * The brokers' own state for Prometheus: subscribes `$SYS/#` on the internal broker and (dialling
 * out, as the bridge does) on the DMZ broker, as `monitor`, whose ACL allows that and nothing else.
 * Values are kept as they arrive and exposed at scrape time; `broker` is the only label.
 */
export async function startBrokerExporter(config: Readonly<BrokerExporterConfig>, logger: Logger): Promise<BrokerExporter> {
  const log = logger.child({ component: 'broker-exporter' });
  const tls = readMqttTls(config);
  // The DMZ broker's certificate is of its own anchor (pki/dmz-anchor.ts), the internal broker's of the CA.
  const dmzTls = config.DMZ_MQTT_CA_FILE === '' ? tls : { ...tls, ca: readPemSetting('DMZ_MQTT_CA_FILE', config.DMZ_MQTT_CA_FILE) };
  const staleMs = config.BROKER_EXPORTER_STALE_S * 1000;
  const bridges = expectedBridges(config);
  if (config.BRIDGE_STATE_TOKEN === undefined) {
    log.warn(
      { bridges },
      'BRIDGE_STATE_TOKEN is not set: the bridges\' states are read under their client ids, which a compromised DMZ can forge through the bridge (a false FieldStreamBridgeDown, or a bridge down hidden); set the same token for the internal broker and this exporter (docs/monitoring.md)',
    );
  }
  const watch = (name: 'internal' | 'dmz', url: string, expected: readonly string[] | ReadonlyMap<string, string> = []) => {
    const client: MqttClient = connectMqtt(
      { url, ...(name === 'dmz' ? dmzTls : tls), clientId: `${config.BROKER_EXPORTER_CLIENT_ID}-${name}`, protocolVersion: config.MQTT_PROTOCOL_VERSION, clean: true },
      log.child({ broker: name }),
      { resubscribe: false },
    );
    // The DMZ broker is not trusted; nothing $SYS carries comes near the bound, from either broker.
    limitIncomingPackets(client, LIMITS.brokerExporterMaxPacketBytes, log.child({ broker: name }));
    // Subscribed at QoS 0 only; the DMZ broker is not trusted (qos-guard.ts).
    closeAboveQos(client, 0, log.child({ broker: name }));
    subscribeOnEveryConnect(client, [SYS_FILTER], { qos: 0 }, log.child({ broker: name }));
    return new BrokerWatch(name, client, staleMs, expected);
  };
  const brokers = [watch('internal', config.MQTT_URL, bridgeStateNames(config)), ...(config.DMZ_MQTT_URL === 'off' ? [] : [watch('dmz', config.DMZ_MQTT_URL)])];
  const internal = brokers[0] as BrokerWatch;
  // Each bridge is judged on the internal broker alone, by its state and its heartbeat
  // (BrokerWatch.bridgeUp): no connection to its DMZ broker is needed, whichever DMZ server it is.

  const m = new ServiceMetrics('broker-exporter');
  certificateExpiry(m, [
    { setting: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE },
    { setting: 'MQTT_CA_FILE', path: config.MQTT_CA_FILE },
    { setting: 'DMZ_MQTT_CA_FILE', path: config.DMZ_MQTT_CA_FILE },
  ]);
  // The brokers' own certificates, as they present them: issued with the services', they end with them.
  m.gauge('mosquitto_certificate_expiry_timestamp_seconds', "When the certificate the broker presented at the exporter's last TLS connection ends (notAfter), Unix seconds.", ['broker'], function () {
    this.reset();
    for (const b of brokers) if (b.certificateNotAfter !== undefined) this.set({ broker: b.name }, b.certificateNotAfter);
  });
  m.gauge('mosquitto_up', '1 while the connection to the broker stands and its $SYS messages arrive, else 0.', ['broker'], function () {
    for (const b of brokers) this.set({ broker: b.name }, b.up ? 1 : 0);
  });
  // Values read from $SYS, per broker, present only while it is up (mosquitto_up 1).
  const perBroker = (topic: string) => () =>
    brokers.flatMap((b) => {
      const v = b.read(topic);
      return v === undefined ? [] : [[{ broker: b.name }, v] as const];
    });
  const gaugeOf = (name: string, help: string, topic: string) =>
    m.gauge(name, help, ['broker'], function () {
      this.reset();
      for (const [labels, v] of perBroker(topic)()) this.set(labels, v);
    });
  gaugeOf('mosquitto_clients_connected', 'Clients connected to the broker ($SYS/broker/clients/connected).', SYS.clientsConnected);
  gaugeOf('mosquitto_messages_stored', 'Messages the broker holds: retained, queued for sessions, in flight ($SYS/broker/messages/stored).', SYS.messagesStored);
  gaugeOf('mosquitto_messages_stored_bytes', 'Bytes of the messages the broker holds ($SYS/broker/store/messages/bytes).', SYS.storeBytes);
  gaugeOf('mosquitto_subscriptions', 'Subscriptions on the broker ($SYS/broker/subscriptions/count).', SYS.subscriptions);
  collectedCounter(m, 'mosquitto_messages_received_total', 'MQTT messages of any kind received by the broker since it started ($SYS/broker/messages/received).', ['broker'], perBroker(SYS.messagesReceived));
  collectedCounter(m, 'mosquitto_messages_sent_total', 'MQTT messages of any kind sent by the broker since it started ($SYS/broker/messages/sent).', ['broker'], perBroker(SYS.messagesSent));
  collectedCounter(m, 'mosquitto_publish_received_total', 'PUBLISH messages received by the broker ($SYS/broker/publish/messages/received).', ['broker'], perBroker(SYS.publishReceived));
  collectedCounter(m, 'mosquitto_publish_sent_total', 'PUBLISH messages sent by the broker ($SYS/broker/publish/messages/sent).', ['broker'], perBroker(SYS.publishSent));
  collectedCounter(m, 'mosquitto_dropped_total', 'PUBLISH messages the broker dropped: queues full, limits reached ($SYS/broker/publish/messages/dropped).', ['broker'], perBroker(SYS.publishDropped));
  // The bridges render-bridges.sh renders from the same settings (config.ts): each one expected is
  // reported, one that has published no state counting as down, so a bridge that never came up
  // (or whose state an invented name would once have crowded out) fires FieldStreamBridgeDown.
  m.gauge('bridge_connected', "1 while every bridge of the internal broker to a DMZ broker is connected ($SYS/broker/connection/<remote_clientid>/state of each expected, bridge_up), else 0 (also when the internal broker cannot be read).", [], function () {
    this.set(bridges.every((id) => internal.bridgeUp(id) === 1) ? 1 : 0);
  });
  m.gauge('bridge_up', "1 while this bridge of the internal broker (its client id: BRIDGE_CLIENT_ID, then -2, -3 ... per DMZ_BROKER_HOSTS entry) is connected, else 0: its state says 0, none arrived, the internal broker cannot be read, or the DMZ broker's uptime has not come through it for BROKER_EXPORTER_STALE_S (a hung DMZ broker or a cut network, which Mosquitto's state does not show).", ['bridge'], function () {
    for (const id of bridges) this.set({ bridge: id }, internal.bridgeUp(id));
  });
  collectedCounter(m, 'bridge_states_ignored_total', 'Bridge states ($SYS/broker/connection/<id>/state) and heartbeats (.../<id>/remote/uptime) under a name no bridge of ours has, ignored: none is published by our brokers, so a compromised DMZ broker publishing through the bridge (SECURITY.md).', ['broker'], () =>
    brokers.map((b) => [{ broker: b.name }, b.ignoredBridgeStates] as const),
  );

  let server: MetricsServer;
  try {
    server = await startMetricsServer({
      metrics: m,
      host: config.BROKER_EXPORTER_METRICS_HOST,
      port: config.BROKER_EXPORTER_METRICS_PORT,
      setting: 'BROKER_EXPORTER_METRICS_PORT',
      hostNames: { setting: 'BROKER_EXPORTER_METRICS_HOST_NAMES', names: config.BROKER_EXPORTER_METRICS_HOST_NAMES },
      // Ready while it reads the broker on its own network; a DMZ broker that is down is what it
      // reports (mosquitto_up 0), not a fault of its own.
      checks: [{ name: 'internal broker', ready: () => internal.client.connected }],
      log,
    });
  } catch (err) {
    await Promise.all(brokers.map((b) => endMqtt(b.client, true)));
    throw err;
  }
  log.info({ brokers: brokers.map((b) => b.name), bridges }, 'broker exporter watching $SYS');
  return {
    metrics: m,
    metricsUrl: server.url,
    async close() {
      await server.close();
      // Bounded: a frozen broker never closes the connection after DISCONNECT, and the exporter
      // never stopped. Nothing is lost by the cut: it only reads $SYS, at QoS 0, on clean sessions.
      await Promise.all(brokers.map((b) => endMqttWithin(b.client, TIMINGS.closeGraceMs)));
    },
  };
}

