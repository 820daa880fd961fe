import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Aedes } from 'aedes';
import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { FieldClient } from '../field-client.ts';
import type { HealthReporter } from '../health.ts';
import { capConnections, type LocalInput } from './input.ts';
import { HeldFilters, HeldPackets, keepNoQos2Payloads, limitPacketSize, partialPacketBytes } from './mqtt-packets.ts';
import { keyOf, publishDigest, TakenPublishes } from './mqtt-resends.ts';
import { TakenFile } from './mqtt-taken-file.ts';
import type { FieldNames } from './sparkplug/names.ts';
import { SparkplugSession } from './sparkplug/session.ts';
import { SessionStore, STORE_DIR } from './sparkplug/store.ts';
import { NAMESPACE, stateTopic } from './sparkplug/topic.ts';
import { parsePayloadJson, READINGS_MAX_CONTAINERS, toLocalValuesUpdate, toSubmissions } from './validate.ts';

/**
 * A local MQTT broker (aedes) for sensors that speak MQTT: publish a reading (the payload object, or
 * an array) to PREFIX/timeseries, an event to PREFIX/event, values for the health message
 * (`{"battery": 87}`, kept until replaced, null removes one; at most LIMITS.healthLocalBodyMaxBytes,
 * as over HTTP) to PREFIX/health. At QoS 1 the PUBACK
 * is sent only once the message is on disk in the queue (health values: once taken); a reading or
 * event sent again flagged DUP after its PUBACK was lost is acknowledged, not queued a second time
 * (mqtt-resends.ts; after a restart too, given `dataDir`: mqtt-taken-file.ts). Something
 * that is not valid makes the broker close the sensor's connection (MQTT 3.1.1 has no negative
 * PUBACK, §3.3.5) and is logged with FIELD_INPUT_INVALID. Command handlers of type "mqtt" publish
 * here for local programs.
 *
 * With `sparkplug` (FIELD_MQTT_SPARKPLUG), Sparkplug B edge nodes may publish here too: every
 * publish under `spBv1.0/` goes to a Sparkplug host session (sparkplug/session.ts) instead, and is
 * acknowledged once its readings are on disk. A refused Sparkplug message is counted and logged but
 * does not close the connection (an edge node that gapped must stay to answer the rebirth request,
 * which is published here on spBv1.0/<group>/NCMD/<edge>). With a host id (FIELD_SPARKPLUG_HOST_ID)
 * the field client is the edge nodes' primary host application here too: its STATE is on this
 * broker, retained, from before the first connection is taken until the input closes (see hostState).
 *
 * It listens on loopback by default and asks for no credentials: it is for the device itself. It
 * takes clean sessions only (see authenticate): nothing is kept for a subscriber while it is away.
 * A packet longer than LIMITS.localMqttMaxPacketBytes is refused as its length arrives, before it
 * is buffered (limitPacketSize): FIELD_INPUT_INVALID is logged and the connection closed. Across
 * connections, at most LIMITS.localMqttMaxConnections are held at once (one more is closed as it is
 * accepted) and at most LIMITS.localMqttHeldMaxBytes of packets begun and not yet whole (HeldPackets;
 * a packet past it has its connection closed): both FIELD_INPUT_BUSY, logged at most
 * LIMITS.localInputBusyLogMaxPerWindow times per TIMINGS.floodLogIntervalMs. A connection holds at
 * most LIMITS.localMqttMaxSubscriptions topic filters (HeldFilters): one more is refused (SUBACK
 * failure), logged once per connection with FIELD_INPUT_INVALID. A QoS 2 publish awaiting its
 * PUBREL is kept without its payload (keepNoQos2Payloads). A subscriber with more than
 * LIMITS.localMqttSubscriberBacklogMaxBytes waiting to be written to it is closed (FIELD_INPUT_BUSY).
 */
export function mqttInput(
  client: FieldClient,
  host: string,
  port: number,
  prefix: string,
  log: Logger,
  health?: HealthReporter,
  /** `dataDir`: where the edge nodes' sessions are saved (sparkplug/store.ts), for what they send again after a restart */
  sparkplug?: { groups: readonly string[]; names?: FieldNames | undefined; dataDir?: string | undefined; hostId?: string | undefined },
  /** the field client's data folder: the publishes taken are kept there across restarts (mqtt-taken-file.ts) */
  dataDir?: string,
): LocalInput & { publish(topic: string, payload: string): Promise<void>; readonly sparkplug: SparkplugSession | undefined } {
  // A Map, not an object: a topic is the publisher's text, and `constructor` or `__proto__` looked
  // up in an object literal finds its prototype's members, taken for an input's kind.
  const kinds = new Map<string, 'timeseries' | 'event'>([
    [`${prefix}/timeseries`, 'timeseries'],
    [`${prefix}/event`, 'event'],
  ]);
  const healthTopic = `${prefix}/health`;
  const topics = [...kinds.keys(), ...(health ? [healthTopic] : []), ...(sparkplug ? [`${NAMESPACE}/#`] : [])];
  let aedes: Aedes | undefined;
  /**
   * Connections closed here because the queue did not take what they published, with the refusal.
   * Such a client did not go away: it was hung up on so that it sends again. Its will (a Sparkplug
   * edge node's NDEATH) is not published: taken, it would end the edge node's session, and the
   * resend arriving before its next NBIRTH would be refused (not born) and acknowledged unstored.
   */
  const hungUp = new WeakMap<object, Error>();
  /** readings and events taken at QoS 1 and 2, to tell one sent again (DUP) after a lost PUBACK */
  const taken = new TakenPublishes();
  const takenFile = dataDir === undefined ? undefined : new TakenFile(dataDir, taken, log, () => client.queue.numberedAtOpen);
  /** the topic filters each connection holds, bounded (LIMITS.localMqttMaxSubscriptions) */
  const filters = new HeldFilters();
  /**
   * Readings and events being appended, whose PUBACK (or PUBREC) waits for it; and whether the input
   * is closing (see close): nothing more is taken then.
   */
  const appending = new Set<Promise<unknown>>();
  let closing = false;
  /** What was refused: a sensor sends it again at every reconnection, for as long as it is refused. */
  const refusals = new LimitedLog(log, { maxPerWindow: LIMITS.localInputRefusalLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'local MQTT input refusals' });
  const slowReaders = new LimitedLog(log, { maxPerWindow: LIMITS.localInputBusyLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'local MQTT subscribers closed as not reading' });
  const slog = log.child({ input: 'mqtt-sparkplug' });
  const store = sparkplug?.dataDir === undefined ? undefined : new SessionStore(join(sparkplug.dataDir, STORE_DIR), slog);
  const hostId = sparkplug?.hostId;
  /**
   * Our STATE on this broker (Sparkplug 3.0.0, "Sparkplug Host Application Session Establishment":
   * spBv1.0/STATE/<host_id>, retained, QoS 1, {"online", "timestamp"}). An edge node configured with
   * a primary host application publishes its NBIRTH only once that host's STATE says online
   * (tck-id-operational-behavior-edge-node-birth-sequence-wait), and goes offline when it says
   * offline. The broker is ours, in this process: it has no will to carry, and our death dies with
   * it; so the STATE is published by the broker itself, online at start and offline at a clean
   * stop, both with the timestamp of the start, as a birth and its will share theirs.
   */
  const onlineSince = Date.now();
  const hostState = (online: boolean) =>
    new Promise<void>((resolve, reject) => {
      if (!aedes || hostId === undefined) return resolve();
      const payload = Buffer.from(JSON.stringify({ online, timestamp: onlineSince }));
      aedes.publish({ cmd: 'publish', topic: stateTopic(hostId), payload, qos: 1, retain: true, dup: false }, (err) => (err ? reject(err) : resolve()));
    });
  const session = sparkplug
    ? new SparkplugSession(
        client,
        (topic, payload) => aedes?.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, () => undefined),
        slog,
        sparkplug.groups,
        // A QoS 1 publish hung up on, or whose PUBACK was lost, comes again: previous sessions are kept for it,
        // saved (store), for what is sent again after a restart too.
        // The field names are checked with those of the plant broker's input (start.ts): one device's readings.
        {
          resends: true,
          names: sparkplug.names,
          store,
          hostId,
        },
      )
    : undefined;
  const broker = () => Aedes.createBroker({
    authenticate(c, _username, _password, done) {
      // No persistent sessions (clean session 0, MQTT 3.1.1 §3.1.2.4): for one, the broker would
      // keep every QoS 1 message its subscriptions match while it is away, in memory and without
      // bound (sensors publish readings at their own pace). Refused at CONNECT ("not authorized",
      // §3.2.2.3) rather than taken and not kept, which the specification does not allow. Local
      // programs connect with a clean session, as Sparkplug edge nodes must (Sparkplug B 3.0,
      // "Edge Node Session Establishment"), and hear what is published while they are connected.
      if (c.clean) return done(null, true);
      const err = new FieldStreamError('FIELD_INPUT_INVALID', 'persistent MQTT sessions (clean session 0) are not taken: connect with a clean session');
      refusals.write({ code: err.code, clientId: c.id }, err.message);
      done(Object.assign(err, { returnCode: 5 }), false);
    },
    authorizePublish(c, packet, done) {
      if (c === null) return done(null);
      // aedes publishes a will through here, as the client object's own `will` (lib/client.js, close).
      const refusal = hungUp.get(c);
      if (refusal && packet === (c as { will?: unknown }).will) {
        log.info({ clientId: c.id, topic: packet.topic }, 'will not published: the connection was closed here, after the queue refused what it sent');
        return done(refusal);
      }
      // Our STATE is the field client's to say (hostState): an edge node that heard it offline from
      // a local program would stop publishing.
      if (hostId !== undefined && packet.topic === stateTopic(hostId)) {
        const err = new FieldStreamError('FIELD_INPUT_INVALID', `${packet.topic} is this host application's STATE: only the field client publishes it`);
        refusals.write({ code: err.code, topic: packet.topic, clientId: c.id }, err.message);
        return done(err);
      }
      // Second line behind limitPacketSize: no input takes a larger payload.
      if (packet.payload.length > MAX_PAYLOAD_BYTES) {
        const err = new FieldStreamError('FIELD_INPUT_INVALID', `payload of ${packet.payload.length} bytes is larger than ${MAX_PAYLOAD_BYTES}`);
        refusals.write({ code: err.code, topic: packet.topic, clientId: c.id }, err.message);
        return done(err);
      }
      // Nothing a sensor publishes is kept for later subscribers: a retained message would stay in
      // the broker's memory, one per topic, whatever its size, for as many topics as are invented.
      packet.retain = false;
      if (session && packet.topic.startsWith(`${NAMESPACE}/`)) {
        // A message the session refuses (bad topic or payload, a seq gap) is acknowledged: it is
        // counted and logged, and the edge node must stay connected to answer the rebirth request.
        // Data the queue did not take is not: the connection closes and the edge node sends it again.
        // With the connection and the DUP flag: a publish sent again (MQTT 3.1.1 §3.3.1.1), after the
        // edge node's new NBIRTH or before it, is read in the session it was sent in (host.ts, resent).
        session.onMessage(packet.topic, Buffer.from(packet.payload), Date.now(), { connection: c, dup: packet.dup === true }).then(
          () => done(null),
          (err: unknown) => {
            hungUp.set(c, err as Error);
            done(err as Error);
          },
        );
        return;
      }
      if (health && packet.topic === healthTopic) {
        try {
          // The bound of PUT /v1/health (docs/field-client.md, "Local values"), checked before the
          // payload is parsed: up to the packet limit (8 MiB) of values of the wrong type held the
          // event loop for seconds in JSON.parse and the record check, every input and the link waiting.
          if (packet.payload.length > LIMITS.healthLocalBodyMaxBytes) {
            throw new FieldStreamError('FIELD_INPUT_INVALID', `health values of ${packet.payload.length} bytes, more than ${LIMITS.healthLocalBodyMaxBytes}`);
          }
          health.setLocal(toLocalValuesUpdate(parsePayloadJson(packet.payload)));
          return done(null);
        } catch (err) {
          const coded = isFieldStreamError(err) ? err : new FieldStreamError('FIELD_INPUT_INVALID', `not JSON: ${(err as Error).message}`);
          refusals.write({ code: coded.code, topic: packet.topic, clientId: c.id }, coded.message);
          return done(coded);
        }
      }
      const kind = kinds.get(packet.topic);
      // Closing: refused unread (the connection closes), sent again once the field client is back.
      // Taken now, its PUBACK could be cut off with the connection, and then it was queued twice.
      if (closing && kind && packet !== (c as { will?: unknown }).will) return done(new FieldStreamError('FIELD_INPUT_BUSY', 'the field client is stopping: send it again once it is back'));
      if (!kind) {
        refusals.write({ code: 'FIELD_INPUT_INVALID', topic: packet.topic, clientId: c.id }, 'publish to a topic that is not an input');
        return done(new FieldStreamError('FIELD_INPUT_INVALID', `publish to ${topics.join(' or ')}`));
      }
      let items;
      try {
        items = toSubmissions(kind, parsePayloadJson(packet.payload, READINGS_MAX_CONTAINERS));
      } catch (err) {
        const coded = isFieldStreamError(err) ? err : new FieldStreamError('FIELD_INPUT_INVALID', `not JSON: ${(err as Error).message}`);
        refusals.write({ code: coded.code, topic: packet.topic, clientId: c.id }, coded.message);
        return done(coded);
      }
      const take = () => {
        // done() is what lets aedes send the PUBACK: only after the queue has it on disk, and its
        // line of the publishes taken (written now, numbered and not yet written by the queue:
        // mqtt-taken-file.ts says what a kill at each instant gives) is synced.
        const numbered = takenFile ? client.queue.nextNumber : 0;
        const appended = client.submitMany(items);
        const key = packet.messageId === undefined ? undefined : keyOf(c.id, packet.messageId);
        const noted = takenFile && digest !== undefined && key !== undefined && client.queue.nextNumber - numbered === items.length ? takenFile.numbered(key, digest, numbered, items.length) : undefined;
        if (noted) {
          appended.then(() => takenFile?.settled(key as string, true), () => takenFile?.settled(key as string, false));
          // Waited for by close() with the append: the PUBACK waits for both.
          appending.add(noted);
          void noted.then(() => appending.delete(noted));
        }
        appending.add(appended);
        void appended.then(
          () => appending.delete(appended),
          () => appending.delete(appended),
        );
        if (digest !== undefined) taken.remember(c.id, packet.messageId, digest, appended.then(() => true, () => false), c);
        appended.then(
          () => void (noted ?? Promise.resolve()).then(() => done(null)),
          (err: unknown) => {
            refusals.write({ code: isFieldStreamError(err) ? err.code : 'FIELD_INPUT_INVALID', clientId: c.id }, (err as Error).message);
            hungUp.set(c, err as Error);
            done(err as Error);
          },
        );
      };
      // A publish sent again flagged DUP (MQTT 3.1.1 §3.3.1.1) whose first copy was taken: its
      // PUBACK was lost. Acknowledged once that copy is on disk, not queued a second time
      // (mqtt-resends.ts); taken if that copy's append failed. So is a copy not flagged DUP while
      // its identifier is in use: a QoS 2 publish the broker holds until its PUBREL (the broker
      // answers it PUBREC and forwards it to no one, MQTT-4.3.3-2), or one still being appended.
      const digest = packet.qos > 0 ? publishDigest(packet.topic, packet.payload) : undefined;
      const resent = (inUse: boolean): void => {
        const earlier = digest === undefined ? undefined : taken.earlier(c.id, packet.messageId, packet.dup === true, digest, c, inUse);
        if (earlier === undefined) return take();
        void Promise.resolve(earlier).then((stored) => {
          if (!stored) return resent(inUse);
          // debug: how often is the client's to decide (a line each would be a flood's).
          log.debug({ clientId: c.id, topic: packet.topic, messageId: packet.messageId }, 'a publish sent again that was queued already: acknowledged, not queued again');
          done(null);
        });
      };
      if (packet.qos !== 2 || packet.dup === true || packet.messageId === undefined) return resent(false);
      awaitingRelease(c, packet.messageId).then(resent, () => resent(false));
    },
    authorizeForward(c, packet) {
      // A connection that stopped reading is let go, not written to without end (what aedes does
      // until its drain timeout): LIMITS.localMqttSubscriberBacklogMaxBytes.
      const conn = c.conn as { writableLength?: number; destroy?: () => void };
      const backlog = conn.writableLength ?? 0;
      if (backlog <= LIMITS.localMqttSubscriberBacklogMaxBytes) return packet;
      slowReaders.write(
        { code: 'FIELD_INPUT_BUSY', clientId: c.id, topic: packet.topic, backlogBytes: backlog, maxBacklogBytes: LIMITS.localMqttSubscriberBacklogMaxBytes },
        'a subscriber is not reading what is published to it: connection closed (it may connect again)',
      );
      conn.destroy?.();
      return null;
    },
    authorizeSubscribe(c, sub, done) {
      // Local programs may listen to what command handlers publish, edge nodes to their NCMD; with
      // clean sessions only (authenticate), nothing is kept for a subscriber that is away.
      if (sub.topic.startsWith('$')) return done(null, null);
      if (!filters.admit(c, sub.topic)) {
        if (filters.firstRefusal(c)) {
          log.warn(
            { code: 'FIELD_INPUT_INVALID', clientId: c.id, topic: sub.topic, maxSubscriptions: LIMITS.localMqttMaxSubscriptions },
            `more than ${LIMITS.localMqttMaxSubscriptions} subscriptions on one connection: those past it are refused (SUBACK failure)`,
          );
        }
        return done(null, null);
      }
      done(null, sub);
    },
  });
  /**
   * Whether the broker holds a QoS 2 publish of this connection's client with this identifier, taken
   * and awaiting its PUBREL (MQTT 3.1.1 §4.3.3): asked of its persistence, which aedes answers a
   * copy from (PUBREC, forwarded to no one); false when it holds none or cannot say.
   */
  const awaitingRelease = async (c: object, messageId: number): Promise<boolean> => {
    const persistence = (aedes as { persistence?: { incomingGetPacket?: (client: object, packet: { messageId: number }) => Promise<unknown> } } | undefined)?.persistence;
    if (typeof persistence?.incomingGetPacket !== 'function') return false;
    return persistence.incomingGetPacket(c, { messageId }).then(
      () => true,
      () => false,
    );
  };
  let server: Server | undefined;
  let bound: number | undefined;
  return {
    name: 'mqtt',
    sparkplug: session,
    get port() {
      return bound;
    },
    async start() {
      // The edge nodes connected here when the field client ended lost their connections with this
      // broker, which published none of their wills: their deaths are recorded before any of them
      // connects again (sparkplug/session.ts willsLost), else a node that never came back, and its
      // devices, stayed online downstream.
      await session?.willsLost();
      takenFile?.load();
      closing = false;
      const a = (aedes = await broker());
      if (!keepNoQos2Payloads(a)) log.warn('the persistence of aedes has changed: QoS 2 publishes awaiting their PUBREL are kept with their payloads');
      // Retained before the first edge node can connect: one that waits for its primary host
      // finds it online at its subscription.
      await hostState(true);
      let unguarded = false;
      const held = new HeldPackets();
      // A program can open connections and begin packets as fast as it likes: a line each would be a flood.
      const busyLog = new LimitedLog(log, { maxPerWindow: LIMITS.localInputBusyLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'local MQTT connections refused as busy' });
      const s = (server = createServer((socket) => {
        const refused = (err: FieldStreamError) =>
          err.code === 'FIELD_INPUT_BUSY'
            ? busyLog.write({ code: err.code, remoteAddress: socket.remoteAddress, heldBytes: held.bytes, maxHeldBytes: LIMITS.localMqttHeldMaxBytes }, err.message)
            : refusals.write({ code: err.code, remoteAddress: socket.remoteAddress, maxBytes: LIMITS.localMqttMaxPacketBytes }, err.message);
        const c = a.handle(socket);
        socket.once('close', () => held.release(c));
        if (!limitPacketSize(c, LIMITS.localMqttMaxPacketBytes, refused, held) && !unguarded) {
          unguarded = true;
          log.warn({ maxBytes: LIMITS.localMqttMaxPacketBytes }, 'the MQTT parser of aedes has changed: packet lengths are not checked as they arrive, only payloads once read');
        }
        // A packet begun and no longer arriving is cut off (TIMINGS.localMqttPacketIdleTimeoutMs).
        // The socket's own timeout, re-armed by every byte: between packets it is let be.
        socket.setTimeout(TIMINGS.localMqttPacketIdleTimeoutMs, () => {
          const held = partialPacketBytes(c);
          if (held === undefined || socket.readableLength > 0) return;
          log.warn(
            { code: 'FIELD_INPUT_INVALID', remoteAddress: socket.remoteAddress, heldBytes: held, idleMs: TIMINGS.localMqttPacketIdleTimeoutMs },
            'an MQTT packet stopped arriving midway: connection closed',
          );
          socket.destroy();
        });
      }));
      // Each connection also holds its packet's bytes (HeldPackets, above).
      capConnections(s, LIMITS.localMqttMaxConnections, busyLog, 'MQTT');
      await new Promise<void>((resolve, reject) => {
        s.once('error', (err) => reject(new FieldStreamError('LISTEN_FAILED', `FIELD_MQTT_PORT: cannot listen on ${host}:${port}: ${err.message}`)));
        s.listen(port, host, () => resolve());
      });
      bound = (s.address() as AddressInfo).port;
      log.info({ host, port: bound, topics }, 'local MQTT input listening');
    },
    publish: (topic: string, payload: string) =>
      new Promise<void>((resolve, reject) => {
        if (!aedes) return reject(new Error('the local MQTT input is not started'));
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false }, (err) => (err ? reject(err) : resolve()));
      }),
    async close() {
      const a = aedes;
      const s = server;
      // What is being appended is acknowledged before the connections close (up to
      // TIMINGS.localInputCloseGraceMs): cut off unacknowledged, it was queued all the same, and the
      // sensor sent it again after the restart: flagged DUP it is recognised (mqtt-taken-file.ts),
      // but mqtt.js sends again without DUP, a second row. Nothing more is taken meanwhile.
      closing = true;
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, TIMINGS.localInputCloseGraceMs)));
      await Promise.race([Promise.allSettled([...appending]), grace]);
      clearTimeout(timer);
      // The PUBACKs just allowed are written by aedes once its handlers run on: let them.
      await new Promise((resolve) => setImmediate(resolve));
      // Delivered to the edge nodes still connected before the broker goes: they stop publishing
      // (tck-id-operational-behavior-edge-node-termination-host-offline) rather than to no one.
      await hostState(false).catch(() => undefined);
      if (a) await new Promise<void>((resolve) => a.close(() => resolve()));
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
      if (session) await session.drained();
      await store?.close();
      await takenFile?.close();
    },
  };
}

/** The largest payload any input behind the local broker takes (JSON readings, Sparkplug B). */
const MAX_PAYLOAD_BYTES = Math.max(LIMITS.localInputJsonMaxBytes, LIMITS.sparkplugPayloadMaxBytes);
