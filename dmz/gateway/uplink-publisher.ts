import type { MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type GatewayEnvelope, type UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import type { DataType } from '../../shared/contract/payloads.ts';
import type { UplinkMessage } from '../../shared/contract/uplink.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { PUBACK_NO_MATCHING_SUBSCRIBERS, PubackReasons } from './puback-reasons.ts';

/** The pending key of the gateway's envelope (device ids cannot be empty, so no device's key is this). */
const GATEWAY_KEY = '\u0000gateway';

/** A message the gateway accepted, with the id under which the device will see it acked. */
export type AcceptedMessage = UplinkMessage & { messageId: string };

export interface PublishGroup {
  dataType: DataType;
  messageIds: string[];
  /** Settles when the broker answered PUBACK (resolves) or the publish failed (rejects). */
  done: Promise<void>;
  /**
   * Resolves when the publisher and its MQTT client hold these messages no more: at PUBACK, at the
   * client's error, or at once when refused. Later than `done` for a publish past its timeout,
   * which the client keeps (see backlogBytes).
   */
  released: Promise<void>;
}

export interface PublisherOptions {
  gatewayId: string;
  /** milliseconds to wait for a PUBACK */
  timeoutMs: number;
  /** milliseconds a device's messages may wait to be joined by more before they are published */
  lingerMs: number;
  /** messages per envelope at most */
  maxMessages: number;
  /**
   * `gateway`: the readings of every device share the gateway's envelope (GatewayEnvelopeSchema);
   * `device`: each device's readings have envelopes of their own (what distributors before the
   * gateway envelope read). Other kinds of message always travel in their device's envelope.
   */
  envelopes: UplinkEnvelopes;
  /** observes the seconds from publish to PUBACK of each envelope the broker took */
  publishSeconds?: { observe(seconds: number): void } | undefined;
  /**
   * Bytes of envelope text (UTF-8, as the broker gets it) handed to the MQTT
   * client and not yet settled by it, past which new messages are refused (GATEWAY_BROKER_BACKLOG_MAX_MIB).
   */
  backlogMaxBytes?: number | undefined;
  /** told of each group refused because the backlog is full (count it, log it) */
  onBacklogFull?: ((backlogBytes: number) => void) | undefined;
}

export const UPLINK_ENVELOPES = ['gateway', 'device'] as const;
export type UplinkEnvelopes = (typeof UPLINK_ENVELOPES)[number];

/** One message of an envelope, whichever its kind (the envelope's kind is the pending key's). */
type EnvelopeItem = { messageId: string; seq?: number; auth?: unknown; receivedAt?: number; payload: unknown };

interface Pending {
  /** the device whose envelope this is; undefined: the gateway's, of many devices */
  deviceId: string | undefined;
  dataType: DataType;
  /** each device's messages (one device in a device's envelope), in the order they came */
  sections: Map<string, EnvelopeItem[]>;
  /** messages in all sections */
  count: number;
  /** bytes of the frames its messages came in (an estimate of its size) */
  bytes: number;
  /** the envelope's receivedAt: when the first of its frames arrived */
  receivedAt: number;
  waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }>;
  /** told when the client holds the envelope no more (PublishGroup.released) */
  releases: Array<() => void>;
  /** when it is published at the latest (performance.now(), milliseconds) */
  dueAt: number;
}

/**
 * Publishes accepted messages to the broker at QoS 1, as envelopes: all readings that arrive within
 * `lingerMs` (and at most `maxMessages`) share the gateway's envelope, whichever device sent them
 * (with `envelopes: 'device'`, each device's its own), and all other messages of one device and
 * data type share that device's, so a device sending one reading per frame, or ten thousand
 * devices sending one a second each, do not cost one MQTT message per reading (Mosquitto is
 * single-threaded, and the distributor holds one envelope per consumer until it is written).
 * A frame counts as safe only when the PUBACK of its envelope arrives (MQTT 3.1.1 §4.3.2) with
 * success: that is when the device gets its ack.
 */
export class UplinkPublisher {
  private readonly pending = new Map<string, Pending>();
  /**
   * The envelopes waiting for their linger to end, oldest first (every one lingers as long, so
   * they fall due in this order). One timer serves them all, and publishes every envelope due by
   * then in one go: the MQTT client corks its socket until the next tick (mqtt-packet), so they
   * leave in one write, where a timer per envelope made a write, and a TLS record, of each.
   */
  private readonly due: Array<{ key: string; at: number }> = [];
  private dueHead = 0;
  private dueTimer: NodeJS.Timeout | undefined;
  /** envelope bytes the MQTT client holds: handed to it, not yet settled (see backlogBytes) */
  private backlog = 0;
  private readonly pubackReasons: PubackReasons;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly o: PublisherOptions,
  ) {
    this.pubackReasons = PubackReasons.of(mqtt);
  }

  /**
   * Envelope bytes handed to the MQTT client that it has not settled yet (PUBACK, or its
   * error when it ends). A publish past its timeout is answered to its devices (they send again),
   * but mqtt.js keeps the packet, and sends it again after a reconnection, until the broker
   * answers: while the broker stalls, each device's resends would pile up there for as long as it
   * lasts, a device's own in-flight bound (GATEWAY_MAX_IN_FLIGHT) freed at each timeout. Counted
   * from the client's own callback, so the bound covers all it holds.
   */
  get backlogBytes(): number {
    return this.backlog;
  }

  /** `bytes`: the size of the frame the messages came in (what envelopes are joined by: envelopeJoinMaxBytes). */
  publish(deviceId: string, messages: readonly AcceptedMessage[], receivedAt: number, bytes = 0): PublishGroup[] {
    const byType = new Map<DataType, AcceptedMessage[]>();
    for (const m of messages) {
      const list = byType.get(m.dataType);
      if (list) list.push(m);
      else byType.set(m.dataType, [m]);
    }
    const groups: PublishGroup[] = [];
    for (const [dataType, list] of byType) {
      // A frame of several data types: each group counted as the whole frame, the one bound known
      // without measuring each. A share by message count let one reading of megabytes beside 999
      // events of a few bytes count as kilobytes: three such frames joined one shared envelope
      // past the broker's limit, refused whole (CONTRACT_FRAME_TOO_LARGE, final) with every other
      // device's readings in it.
      groups.push({ dataType, messageIds: list.map((m) => m.messageId), ...this.enqueue(deviceId, dataType, list, receivedAt, bytes) });
    }
    return groups;
  }

  private enqueue(deviceId: string, dataType: DataType, list: AcceptedMessage[], receivedAt: number, bytes: number): Pick<PublishGroup, 'done' | 'released'> {
    if (!this.mqtt.connected) {
      return { done: Promise.reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', 'The gateway is not connected to the broker; send again later.')), released: Promise.resolve() };
    }
    // Refused as the broker is unavailable, the code every field client already backs off on and
    // moves to its next gateway for (broker-watch.ts): a new code would be refused for good by
    // field clients older than it. Checked as each frame comes: the envelopes pending their linger
    // may pass the bound by what they hold.
    if (this.backlog >= (this.o.backlogMaxBytes ?? LIMITS.gatewayBrokerBacklogMaxBytes)) {
      this.o.onBacklogFull?.(this.backlog);
      return {
        done: Promise.reject(
          new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `The broker has not yet acknowledged ${Math.round(this.backlog / (1024 * 1024))} MiB of messages, as much as this gateway holds; send again later.`),
        ),
        released: Promise.resolve(),
      };
    }
    const shared = dataType === 'timeseries' && this.o.envelopes === 'gateway';
    const key = shared ? GATEWAY_KEY : `${deviceId}\u0000${dataType}`;
    let p = this.pending.get(key);
    if (p && (p.count + list.length > this.o.maxMessages || p.bytes + bytes > LIMITS.envelopeJoinMaxBytes)) {
      this.flush(key);
      p = undefined;
    }
    if (!p) {
      p = { deviceId: shared ? undefined : deviceId, dataType, sections: new Map(), count: 0, bytes: 0, receivedAt, waiters: [], releases: [], dueAt: performance.now() + this.o.lingerMs };
      this.pending.set(key, p);
      if (this.o.lingerMs > 0) {
        this.due.push({ key, at: p.dueAt });
        this.dueTimer ??= setTimeout(() => this.flushDue(), this.o.lingerMs);
      }
    }
    let items = p.sections.get(deviceId);
    if (!items) p.sections.set(deviceId, (items = []));
    for (const m of list) {
      // Each message keeps the moment its own frame arrived (said only where it differs from the
      // envelope's), and the device's signature untouched.
      const item: EnvelopeItem = { messageId: m.messageId, payload: m.payload };
      if (receivedAt !== p.receivedAt) item.receivedAt = receivedAt;
      if (m.seq !== undefined) item.seq = m.seq;
      if (m.auth) item.auth = m.auth;
      items.push(item);
    }
    p.count += list.length;
    p.bytes += bytes;
    const done = new Promise<void>((resolve, reject) => p.waiters.push({ resolve, reject }));
    const released = new Promise<void>((resolve) => p.releases.push(resolve));
    if (p.count >= this.o.maxMessages || this.o.lingerMs === 0) this.flush(key);
    return { done, released };
  }

  /** Publishes every envelope due within the next millisecond (timers fire with that resolution). */
  private flushDue(): void {
    this.dueTimer = undefined;
    const until = performance.now() + 1;
    while (this.dueHead < this.due.length) {
      const next = this.due[this.dueHead] as { key: string; at: number };
      if (next.at > until) break;
      this.dueHead++;
      // Not when it was published already (full), and a newer envelope of the key has its own entry.
      if (this.pending.get(next.key)?.dueAt === next.at) this.flush(next.key);
    }
    if (this.dueHead > 1024 && this.dueHead * 2 > this.due.length) {
      this.due.splice(0, this.dueHead);
      this.dueHead = 0;
    }
    const head = this.due[this.dueHead];
    if (head) this.dueTimer = setTimeout(() => this.flushDue(), Math.max(0, head.at - performance.now()));
  }

  private flush(key: string): void {
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    const [topic, envelope] = p.deviceId === undefined ? [gatewayUplinkTopic(this.o.gatewayId), this.gatewayEnvelope(p)] : [uplinkTopic(p.deviceId, p.dataType), this.deviceEnvelope(p.deviceId, p)];
    // Only the waiters wait for the PUBACK: the messages themselves (their parsed payloads and
    // signatures) are in the envelope's text now, and are let go here rather than kept until the
    // broker answers.
    const waiters = p.waiters;
    const payload = JSON.stringify(envelope);
    // Never handed to the MQTT client past the broker's limit (brokerPacketMaxBytes: it would cost
    // the broker connection at every reconnect). Joined envelopes stay far below it; a frame alone
    // near frameMaxBytes could pass it only by numbers written longer than the device wrote them.
    // Counted only where it could matter: a character is at most three bytes.
    const bytes = payload.length * 3 > LIMITS.brokerPacketMaxBytes - 64 * 1024 ? Buffer.byteLength(payload) : undefined;
    if (bytes !== undefined && bytes > LIMITS.brokerPacketMaxBytes - 64 * 1024) {
      const err = new FieldStreamError('CONTRACT_FRAME_TOO_LARGE', `The envelope of these messages would be ${bytes} bytes, more than the broker takes; send them in smaller frames.`);
      waiters.forEach((w) => w.reject(err));
      p.releases.forEach((r) => r());
      return;
    }
    const releases = p.releases;
    this.publishOne(topic, payload, bytes, () => releases.forEach((r) => r())).then(
      () => waiters.forEach((w) => w.resolve()),
      (err: unknown) => waiters.forEach((w) => w.reject(err)),
    );
  }

  private deviceEnvelope(deviceId: string, p: Pending): UplinkEnvelope {
    const messages = p.sections.get(deviceId) ?? [];
    return { v: ENVELOPE_VERSION, deviceId, dataType: p.dataType, gatewayId: this.o.gatewayId, receivedAt: p.receivedAt, messages } as unknown as UplinkEnvelope;
  }

  private gatewayEnvelope(p: Pending): GatewayEnvelope {
    const devices = [...p.sections].map(([deviceId, messages]) => ({ deviceId, messages }));
    return { v: ENVELOPE_VERSION, gatewayId: this.o.gatewayId, receivedAt: p.receivedAt, dataType: 'timeseries', devices } as unknown as GatewayEnvelope;
  }

  /** `bytes`: the payload's size in UTF-8 where the caller counted it already; `released`: called
   * once the client holds it no more (settled, or never taken) */
  private publishOne(topic: string, payload: string, bytes: number | undefined, released: () => void): Promise<void> {
    const started = performance.now();
    // Bytes, not characters: text a device wrote outside ASCII stays so in the envelope (JSON.stringify
    // escapes none of it), up to three bytes a character, and counted by characters the bound held
    // up to three times its bytes.
    const size = bytes ?? Buffer.byteLength(payload);
    this.backlog += size;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `No PUBACK from the broker within ${this.o.timeoutMs} ms; send again.`));
      }, this.o.timeoutMs);
      // A stopped gateway is not kept alive for its unanswered publishes (their devices are gone).
      timer.unref();
      // Once only, however the client ends it: a backlog counted twice down, or never, would
      // refuse every device's messages for good, or never again.
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        this.backlog -= size;
        clearTimeout(timer);
        released();
        return true;
      };
      try {
        this.mqtt.publish(topic, payload, { qos: 1 }, (err, packet) => {
          // Taken however it ends: what the PUBACK of this identifier said, and nothing left behind.
          const reasonCode = this.pubackReasons.take(packet?.messageId);
          if (!settle()) return;
          if (reasonCode === PUBACK_NO_MATCHING_SUBSCRIBERS && !err) {
            // MQTT 5 §3.4.2.1: taken, and dropped, as nothing subscribes to the topic. On a DMZ
            // broker that is the internal network's bridge missing (it dials in, with a persistent
            // session the broker keeps messages in while it is away): acked, the message was lost.
            // Transient: the device sends again, and moves on to its next gateway URL if there is one.
            reject(
              new FieldStreamError(
                'GATEWAY_BROKER_UNAVAILABLE',
                "No subscriber took the message, and the broker dropped it (PUBACK reason code 0x10, no matching subscribers): the internal network's bridge has not connected to this broker, or its session there expired; send again later.",
              ),
            );
          } else if (err || reasonCode !== 0) {
            // A reason code of 0x80 or more (mqtt.js makes it `err`): the broker refused it.
            reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `The broker did not accept the message (${err?.message ?? `reason code ${reasonCode}`}).`));
          } else {
            this.o.publishSeconds?.observe((performance.now() - started) / 1000);
            resolve();
          }
        });
      } catch (err) {
        // Not taken by the client at all (it holds nothing of it).
        settle();
        reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `The broker client did not take the message (${String(err)}).`));
      }
    });
  }
}
