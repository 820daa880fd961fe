import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import { endMqttWithin, subscribeOnEveryConnect } from '../../../../shared/mqtt/connect.ts';
import { closeAboveQos } from '../../../../shared/mqtt/qos-guard.ts';
import { skipOversizedPublishes } from '../../../../shared/mqtt/oversized-publishes.ts';
import type { FieldClient } from '../../field-client.ts';
import type { LocalInput } from '../input.ts';
import type { FieldNames } from './names.ts';
import { SparkplugSession } from './session.ts';
import { STATE_FILTER, stateTopic, subscriptions } from './topic.ts';

export interface SparkplugInputOptions {
  /** mqtt:// or mqtts:// of the plant's broker */
  url: string;
  /** PEM text; with mqtts, the broker's certificate is verified against it (else the system's CAs) */
  ca?: string | undefined;
  /** PEM text of a client certificate and key, for a broker that asks for one */
  cert?: string | undefined;
  key?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
  clientId: string;
  /** group ids to follow; empty: all */
  groups: readonly string[];
  /** with a host id, the STATE message of Sparkplug 3.0.0 §7.5 is published (and its will) */
  hostId?: string | undefined;
  /** milliseconds a message ahead of its seq waits for the missing ones (§5.9; default TIMINGS.sparkplugReorderTimeoutMs; 0: none) */
  reorderTimeoutMs?: number | undefined;
  /** the field names the local MQTT input's Sparkplug births declare too: both write into one device's readings (names.ts) */
  names?: FieldNames | undefined;
}

export type SparkplugInput = LocalInput & {
  readonly session: SparkplugSession;
  /** resolves once the broker granted the subscriptions (the first time) */
  readonly ready: Promise<void>;
};

/**
 * The field client as a Sparkplug B host application on a plant's MQTT broker
 * (FIELD_SPARKPLUG_URL): it subscribes to the groups it follows (`spBv1.0/<group>/#`), hands every
 * message to its SparkplugSession (decode, birth/seq/alias checks, readings and events into the
 * durable queue), and sends rebirth requests (NCMD) on the same connection.
 *
 * `start` does not wait for the broker: the field client runs (and streams its other inputs)
 * while the plant's broker is unreachable, and this input connects whenever it can, retrying every
 * TIMINGS.mqttReconnectPeriodMs. A clean session on each connection: edge nodes publish births on
 * request, so a host that was away asks for them (§5.12) rather than replaying old data. Its
 * connection lost, every edge node it knew there is recorded dead (session.ts connectionLost): it
 * sees neither their deaths nor their data meanwhile.
 *
 * With a host id it publishes its STATE (§7.5, Sparkplug 3.0: `spBv1.0/STATE/<host_id>`, retained
 * JSON `{"online":true,"timestamp":…}`, QoS 1), with the matching `online:false` as its will and
 * again at a clean stop, so edge nodes that wait for their primary host know it is there
 * (tck-id-operational-behavior-host-application-connect-will-*, -connect-birth-*, -death-*). The
 * timestamp is the time of each connection attempt, in the CONNECT's will and in the birth that
 * follows it (tck-id-message-flow-phid-sparkplug-state-publish-payload-timestamp), so an edge node
 * can tell a late will of an older connection (older timestamp) from the current one. STATE/+ is
 * subscribed before our STATE is published (tck-id-message-flow-phid-sparkplug-subscription): the
 * other hosts' STATE is kept (session.peers), and our own delivered as offline, or removed (an
 * empty retained publish), is answered with online again
 * (tck-id-message-flow-hid-sparkplug-state-message-delivered).
 */
export function sparkplugInput(client: FieldClient, o: SparkplugInputOptions, log: Logger): SparkplugInput {
  const slog = log.child({ input: 'sparkplug' });
  let mqtt: MqttClient | undefined;
  let granted!: () => void;
  const ready = new Promise<void>((resolve) => (granted = resolve));
  let closing = false;
  // The timestamp of the current connection attempt: in its will, and in the birth after it.
  let connectAt = Date.now();
  const state = (online: boolean) => JSON.stringify({ online, timestamp: connectAt });
  const publishBirth = (m: MqttClient) => {
    if (o.hostId) m.publish(stateTopic(o.hostId), state(true), { qos: 1, retain: true });
  };
  const session = new SparkplugSession(
    client,
    (topic, payload) => {
      // QoS 0 as §5.12 sends commands: a lost request is asked again at the next gap.
      mqtt?.publish(topic, Buffer.from(payload), { qos: 0, retain: false });
    },
    slog,
    o.groups,
    {
      hostId: o.hostId,
      reorderTimeoutMs: o.reorderTimeoutMs ?? TIMINGS.sparkplugReorderTimeoutMs,
      names: o.names,
      onOwnOffline: (st) => {
        // Our own death at a clean stop comes back to us too: not answered then.
        if (closing || !mqtt?.connected) return;
        slog.info({ hostId: o.hostId, timestamp: st?.timestamp, current: connectAt }, `own Sparkplug STATE ${st ? 'seen offline' : 'removed, or replaced by one that cannot be read'}; published online again`);
        publishBirth(mqtt);
      },
    },
  );
  return {
    name: 'sparkplug',
    port: undefined,
    session,
    ready,
    async start() {
      const options: IClientOptions = {
        clientId: o.clientId,
        clean: true,
        protocolVersion: 4,
        reconnectPeriod: TIMINGS.mqttReconnectPeriodMs,
        connectTimeout: TIMINGS.mqttConnectTimeoutMs,
        keepalive: TIMINGS.mqttKeepaliveS,
        resubscribe: false,
        // Connected below, once the packets over the bound are skipped on every connection's stream.
        manualConnect: true,
        ...(o.ca ? { ca: o.ca } : {}),
        ...(o.cert ? { cert: o.cert } : {}),
        ...(o.key ? { key: o.key } : {}),
        ...(o.username !== undefined ? { username: o.username } : {}),
        ...(o.password !== undefined ? { password: o.password } : {}),
        ...(o.url.startsWith('mqtts:') ? { rejectUnauthorized: true } : {}),
        ...(o.hostId ? { will: { topic: stateTopic(o.hostId), payload: Buffer.from(state(false)), qos: 1, retain: true } } : {}),
      };
      const m = (mqtt = connect(o.url, options));
      // Whoever may publish under spBv1.0/ on the plant's broker could send a packet of MQTT's 256 MB,
      // which mqtt.js buffers whole before decodePayload's bound sees it: skipped as it arrives
      // instead, taken as a payload that cannot be decoded. Not by closing the connection: published
      // retained, the broker sent it again on every connection, and the input never stayed on.
      skipOversizedPublishes(m, LIMITS.sparkplugMaxPacketBytes, slog, ({ topic, length }) => {
        session.onUnread(topic, length).catch(() => undefined);
      });
      // Subscribed at QoS 0 (the groups) and 1 (STATE): a QoS 2 message is the plant broker's breach
      // of the protocol, which mqtt.js would hold until a PUBREL that need never come (qos-guard.ts).
      closeAboveQos(m, 1, slog);
      m.on('reconnect', () => {
        // A new connection, a new timestamp: mqtt.js builds the CONNECT from m.options, will included.
        connectAt = Date.now();
        if (o.hostId && m.options.will) m.options.will.payload = Buffer.from(state(false));
      });
      // Subscribed first on each connection (these listeners run in the order added, and the broker
      // takes a connection's packets in order): STATE/+ and the groups before our own STATE.
      const stateSub = subscribeOnEveryConnect(m, [STATE_FILTER], { qos: 1 }, slog);
      const sub = subscribeOnEveryConnect(m, subscriptions(o.groups), { qos: 0 }, slog);
      let wasConnected = false;
      m.on('connect', () => {
        wasConnected = true;
        slog.info({ url: o.url, clientId: o.clientId, groups: o.groups }, 'connected to the Sparkplug broker');
        publishBirth(m);
      });
      m.on('close', () => {
        if (wasConnected && !m.disconnecting) {
          slog.warn({ code: 'SPARKPLUG_BROKER_UNAVAILABLE', url: o.url }, 'Sparkplug broker connection closed; reconnecting');
          // Away from the broker we see neither the edge nodes' deaths nor their data: each one known
          // is recorded dead now, its devices with it (Sparkplug 3.0.0: its data STALE), and born
          // again by the births its next data asks for (a refusal by the queue is counted, logged).
          if (!closing) void session.connectionLost();
        }
        wasConnected = false;
      });
      m.on('error', (err) => slog.warn({ code: 'SPARKPLUG_BROKER_UNAVAILABLE', url: o.url, err: err.message }, 'Sparkplug broker connection error'));
      m.on('message', (topic, payload) => {
        // Subscribed at QoS 0: nothing to acknowledge. Data the queue refused is counted and logged.
        session.onMessage(topic, payload).catch(() => undefined);
      });
      void Promise.all([stateSub.ready, sub.ready]).then(() => granted());
      m.connect();
    },
    async close() {
      const m = mqtt;
      session.stop();
      if (!m) return;
      closing = true;
      // Our death, then a graceful end (a DISCONNECT: no will), each bounded: a frozen or lost broker
      // never acknowledges it, nor closes after DISCONNECT, and the field client never stopped.
      // Nothing is lost by the cut: a connection ended without DISCONNECT has the broker publish our
      // will, the same offline STATE (this connection's timestamp); our online STATE, the only other
      // thing we publish at QoS 1, is superseded by it, and the groups are taken at QoS 0 (nothing
      // to acknowledge).
      if (o.hostId && m.connected) m.publish(stateTopic(o.hostId), state(false), { qos: 1, retain: true }, () => undefined);
      await endMqttWithin(m, TIMINGS.closeGraceMs);
      await session.drained();
    },
  };
}
