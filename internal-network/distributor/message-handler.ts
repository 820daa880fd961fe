import {
  GatewayEnvelopeSchema,
  GatewayPresenceSchema,
  GatewaySecurityReportSchema,
  parseEnvelope,
  StatusEnvelopeSchema,
  UplinkEnvelopeSchema,
  uplinkEnvelopeMaxValues,
  type StatusEnvelope,
  type UplinkEnvelope,
} from '../../shared/contract/envelope.ts';
import { parseTopic, TOPIC_ROOT } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import type { FileStore } from './file-store.ts';
import { boundEventTags, type EventTagAdmissions } from './event-tags.ts';
import { dataPoints, joined, type StoredPoint } from './points.ts';
import { storeFiles } from './file-records.ts';
import { deadLetterReceipts } from './dead-letter-receipts.ts';
import { gatewayReadings, type ReadingsHost } from './gateway-readings.ts';
import type { PointSink } from './sinks/sink.ts';
import { devicePresencePoint, gatewayPresencePoint, gatewayReportPoints, isRetainablePresence } from './dmz-word-points.ts';
import type { MessageVerifier } from './security/verifier.ts';
import type { SignedId, Verdict } from './security/verdict.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { ReceiptRequest } from './receipts.ts';
import { DistributorMetrics } from './metrics.ts';
import type { PresenceClearer } from './presence-clearer.ts';
import type { GatewayAdmission } from './security/gateway-admission.ts';

const PRESENCE_PREFIX = `${TOPIC_ROOT}/`;
const PRESENCE_SUFFIX = '/status';

/** The device-id level of a topic the presence filter (`fieldstream/v1/devices/+/status`) matches, valid id or not; undefined for any other. */
function presenceTopicId(topic: string): string | undefined {
  if (topic.length < PRESENCE_PREFIX.length + PRESENCE_SUFFIX.length || !topic.startsWith(PRESENCE_PREFIX) || !topic.endsWith(PRESENCE_SUFFIX)) return undefined;
  const id = topic.slice(PRESENCE_PREFIX.length, -PRESENCE_SUFFIX.length);
  return id.includes('/') ? undefined : id;
}

export interface DeadLetterRequest {
  topic: string;
  payload: Buffer;
  error: FieldStreamError;
  /**
   * Lets copies of its messages, held meanwhile, be checked: call once the letter is kept (and its
   * messages recorded: deadLetterReceipts), or given up. Held until then, a copy handled by another
   * consumer is a duplicate, receipted, rather than refused again and kept a second time.
   */
  release?: () => void;
}

/**
 * Whether a failure is final for its message, which is then kept as a dead letter rather than
 * retried: a coded error, but a write that failed (DISTRIBUTOR_WRITE_FAILED: transient) or a state
 * lease lost (DISTRIBUTOR_STATE_LEASE: consumer.ts says why).
 */
export function isFinal(err: unknown): err is FieldStreamError {
  return isFieldStreamError(err) && err.code !== 'DISTRIBUTOR_WRITE_FAILED' && err.code !== 'DISTRIBUTOR_STATE_LEASE';
}

export interface Handled {
  points: number;
  files: number;
  /** what the devices may now be told is durable (undefined: nothing to tell) */
  receipts?: ReceiptRequest[];
  /**
   * What is refused for good, for the caller to keep as dead letters before it acknowledges the
   * message: a device's envelope whose write or file failed for good, whole; or the sections of a
   * gateway's envelope the database refused as bad data, each as its device's own envelope (the
   * other sections are written). Each holds copies of its messages until its release.
   */
  deadLetters?: DeadLetterRequest[];
  /**
   * Chunks neither stored nor receipted (DISTRIBUTOR_FILE_TRANSFERS_OPEN: their device has as many
   * transfers unfinished as it may), for the caller's log; their devices send them again later.
   */
  deferred?: FieldStreamError[];
}

/**
 * Turns one MQTT message into writes and performs them. Resolves when everything it carried is
 * durable, or what of it was refused for good once checked is handed back to be kept as dead letters
 * (Handled.deadLetters); throws otherwise (the caller decides between retry and dead letter).
 */
export class MessageHandler {
  /** counts of refusals whose write failed, written again with the next (flushSecurityTally) */
  private unwrittenTally: StoredPoint[] = [];
  /** what a gateway's envelope of many devices' readings needs of it (gateway-readings.ts) */
  private readonly readings: ReadingsHost;

  constructor(
    private readonly sink: PointSink,
    private readonly files: FileStore,
    private readonly verifier: MessageVerifier,
    private readonly metrics: DistributorMetrics = new DistributorMetrics(),
    /** clears the retained presences of invented ids on the internal broker (none: left there) */
    private readonly presences?: Pick<PresenceClearer, 'clear'> & Partial<Pick<PresenceClearer, 'keep'>>,
    /** the gateway ids presences are stored under (none: any, as before DISTRIBUTOR_GATEWAYS) */
    private readonly gateways?: Pick<GatewayAdmission, 'admits'>,
    /** clears, on the internal broker, retained messages on the topics where none belongs (none: left there) */
    private readonly retainedClears?: Pick<PresenceClearer, 'clear'>,
    /** bounds the event tag values devices choose (event-tags.ts; none: any value is a tag value, as before) */
    private readonly eventTags?: EventTagAdmissions,
  ) {
    this.readings = { verifier, sink, count: (dataType, points, verdict) => this.count(dataType, points, verdict) };
  }

  /**
   * Whether a retained message on `topic` holding `payload` may stay on the internal broker: only a
   * device's presence (the gateways retain them), not of an id the DMZ invented (isInvented), and a
   * valid one of its size (isRetainablePresence). Nothing else our services publish is retained; the
   * broker's own `$SYS` is not asked about (retained-sweeper.ts).
   */
  retainedMayStay(topic: string, payload: Buffer): boolean {
    const presenceOf = presenceTopicId(topic);
    return presenceOf !== undefined && !this.verifier.isInvented(presenceOf) && isRetainablePresence(payload);
  }

  /** Has the retained message of `topic` cleared, by the presence clears or the others', as retainedMayStay judged it may not stay. */
  clearRetained(topic: string): void {
    if (presenceTopicId(topic) !== undefined) this.presences?.clear(topic);
    else this.retainedClears?.clear(topic);
  }

  /** False, and the refusal counted, for a gateway id nothing may be stored under (security/gateway-admission.ts). */
  private admitted(gatewayId: string): boolean {
    if (this.gateways === undefined || this.gateways.admits(gatewayId)) return true;
    this.countRefusal('SECURITY_UNKNOWN_GATEWAY');
    return false;
  }

  /**
   * `arrived`: when the broker handed the message over (epoch ms), given by the consumer once for
   * all the attempts at it, so that what is stamped with it (a gateway's presence: its key and its
   * time) is the same at each retry: a write that reached a store before failing elsewhere is not
   * a second row, and presences retried after an outage keep the order they came in, not that of
   * their backoffs.
   *
   * `retained`: the broker handed the message over with its RETAIN flag set (the subscription asks
   * for the flag as published, MQTT 5 §3.8.3.1 Retain As Published): it is kept on the broker.
   */
  async handle(topic: string, payload: Buffer, arrived: number = Date.now(), retained = false): Promise<Handled> {
    const presenceOf = presenceTopicId(topic);
    // whether the retained presence on this topic is being cleared already (once is enough)
    let clearing = false;
    if (presenceOf !== undefined) {
      // An empty presence clears the topic's retained one (MQTT 5 §3.3.1.3): a distributor's own
      // clear (presence-clearer.ts) coming back through the shared subscription, or the DMZ's. It
      // says nothing of the device; not a refusal, not a dead letter.
      if (payload.length === 0) return { points: 0, files: 0 };
      // Kept on the internal broker, a presence of an invented id stays there for ever (one per id,
      // without bound) and is handed to every new subscriber: cleared, whatever it holds (one that
      // is no presence, or names no valid id, is a dead letter below, and was retained as well).
      // Never one of a device registered or revoked, nor when the keys' folder lists no device
      // (isInvented). Nor, of any id, one larger than a presence can be (padding the DMZ added: the
      // broker would hold it for ever, handing it to every new subscriber); it is still handled below.
      clearing = retained && (this.verifier.isInvented(presenceOf) || payload.length > LIMITS.retainedPresenceMaxBytes);
      if (clearing) this.presences?.clear(topic);
    } else if (retained) {
      // Nothing is retained on the other topics the distributor reads (uplink, a gateway's presence
      // and security report: the gateways publish none so): what is, the DMZ left through the bridge,
      // and the broker would keep it for ever, one per topic, without bound. An empty one is a clear
      // (ours coming back, MQTT 5 §3.3.1.3), nothing else; any other is handled as it would be, and cleared.
      if (payload.length === 0) return { points: 0, files: 0 };
      this.retainedClears?.clear(topic);
    }
    const where = parseTopic(topic);
    if (where.kind === 'status') {
      let status: StatusEnvelope;
      try {
        status = parseEnvelope(StatusEnvelopeSchema, payload);
      } catch (err) {
        // No presence (a dead letter): retained, it is junk the DMZ left on the topic, whatever the
        // id, and cleared; the device's own presence it replaced was lost with it. Not one with a
        // field of a later gateway's version (isRetainablePresence): still the device's own.
        if (retained && !clearing) {
          if (isRetainablePresence(payload)) this.presences?.keep?.(topic);
          else this.presences?.clear(topic);
        }
        throw err;
      }
      // A valid presence, retained now in place of what a clear still waiting was asked for (junk
      // the DMZ left on a real device's topic, found as it came or by a sweep): that clear would
      // remove this one, the device's own, so it is withdrawn.
      if (retained && !clearing) this.presences?.keep?.(topic);
      if (!this.verifier.mayStoreUnder(where.deviceId)) {
        this.verifier.countUnregisteredPresence(where.deviceId, status.gatewayId, arrived);
        this.countRefusal('SECURITY_UNKNOWN_DEVICE');
        return { points: 0, files: 0 };
      }
      // Its gateway is a tag of the point: an invented one would be a series of its own.
      if (!this.admitted(status.gatewayId)) return { points: 0, files: 0 };
      return this.presencePoint(devicePresencePoint(where.deviceId, status, arrived));
    }
    if (where.kind === 'gatewayPresence') {
      const presence = parseEnvelope(GatewayPresenceSchema, payload);
      if (presence.gatewayId !== where.gatewayId) throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `Presence of ${presence.gatewayId} arrived on ${topic}`);
      if (!this.admitted(where.gatewayId)) return { points: 0, files: 0 };
      return this.presencePoint(gatewayPresencePoint(where.gatewayId, presence, arrived));
    }
    if (where.kind === 'gatewaySecurity') {
      const report = parseEnvelope(GatewaySecurityReportSchema, payload);
      if (report.gatewayId !== where.gatewayId) throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `Report of ${report.gatewayId} arrived on ${topic}`);
      // The gateway's word only: of a gateway not admitted, not stored (its counts, each a point).
      if (!this.admitted(where.gatewayId)) return { points: 0, files: 0 };
      const points = gatewayReportPoints(report, (deviceId) => this.verifier.mayStoreUnder(deviceId));
      await this.sink.write(points);
      for (const e of report.events) this.metrics.securityEvents.inc({ reason: e.code }, e.count);
      // Refusals beyond what a report lists (a flood from more devices than it holds) have no
      // device to be stored under; counted, so that a dashboard still shows the flood's size.
      if (report.dropped > 0) this.metrics.gatewayUnlisted.inc(report.dropped);
      return { points: points.length, files: 0 };
    }
    if (where.kind === 'gatewayUplink') return gatewayReadings(this.readings, where.gatewayId, parseEnvelope(GatewayEnvelopeSchema, payload));
    if (where.kind !== 'uplink') throw new FieldStreamError('CONTRACT_INVALID_TOPIC', `Unexpected topic ${topic}`);
    const env = parseEnvelope(UplinkEnvelopeSchema, payload, uplinkEnvelopeMaxValues(where.dataType));
    // The topic is what the broker's ACL checked; the envelope must agree with it.
    if (env.deviceId !== where.deviceId || env.dataType !== where.dataType) {
      throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `Envelope for ${env.deviceId}/${env.dataType} arrived on ${topic}`);
    }
    // Only what the device provably sent, once, is written; the rest becomes security events. A
    // copy of a message being written waits for that write (security/writes-in-flight.ts).
    for (let first = this.verifier.copyInFlight(env); first !== undefined; first = this.verifier.copyInFlight(env)) await first;
    const verdict = this.verifier.check(env);
    let points: StoredPoint[];
    let deferred: FieldStreamError[] = [];
    try {
      const filed = verdict.accepted ? await this.pointsOf(verdict.accepted, verdict.keys, verdict.receiptIds) : { points: [] };
      points = filed.points;
      if (filed.refused) {
        // The envelope goes whole to the dead letters, and every message of it is receipted: the
        // records of the files stored beside the refused one are written first (a record without
        // its letter is a duplicate at worst, a letter without the record a file nothing names).
        if (points.length > 0) await this.sink.write(points);
        throw filed.refused;
      }
      await this.sink.write(joined(points, verdict.events));
      if (filed.deferred) {
        // Not stored: no receipt, and not recorded, so the device's copy sent later is taken as new.
        verdict.withhold(filed.deferred.map((d) => verdict.receiptIds[d.index] as SignedId));
        deferred = filed.deferred.map((d) => d.error);
      }
      verdict.commit();
    } catch (err) {
      // Refused for good (the database, a file's checksum): kept as a dead letter by the caller, its
      // copies held until then (DeadLetterRequest.release). Released here, a copy was checked as new,
      // refused again and kept again, whole, once per consumer meeting it while the first was written.
      if (isFinal(err)) return { points: 0, files: 0, deadLetters: [{ topic, payload, error: err, release: () => verdict.release() }] };
      verdict.release();
      throw err;
    }
    verdict.release();
    this.count(env.dataType, points.length, verdict, deferred.length);
    if (deferred.length > 0) this.metrics.fileChunksDeferred.inc(deferred.length);
    const handled: Handled = {
      points: points.length,
      files: verdict.accepted?.dataType === 'file' ? verdict.accepted.messages.length - deferred.length : 0,
      receipts: [{ gatewayId: env.gatewayId, deviceId: env.deviceId, ids: verdict.receipts }],
    };
    if (deferred.length > 0) handled.deferred = deferred;
    return handled;
  }

  /** A device's or a gateway's presence: one point, counted as a status message once written. */
  private async presencePoint(point: StoredPoint): Promise<Handled> {
    await this.sink.write([point]);
    this.metrics.messages('status', 1);
    this.metrics.points.inc();
    return { points: 1, files: 0 };
  }

  /** Counted once the writes succeeded, so a write retried is not counted twice. */
  private count(dataType: UplinkEnvelope['dataType'], points: number, verdict: Pick<Verdict, 'accepted' | 'sentAt' | 'events' | 'tallied'>, notWritten = 0): void {
    const m = this.metrics;
    if (verdict.accepted) m.messages(dataType, verdict.accepted.messages.length - notWritten);
    if (points > 0) m.points.inc(points);
    for (const e of verdict.events) this.countRefusal(e.tags.reason ?? 'unknown');
    for (const r of verdict.tallied) this.countRefusal(r.reason);
    m.endToEndOf(verdict.sentAt, Date.now());
  }

  private countRefusal(reason: string): void {
    if (reason === 'SECURITY_DUPLICATE') this.metrics.duplicates.inc();
    else this.metrics.securityEvents.inc({ reason });
  }

  /**
   * Writes the verifier's counts of refusals of the seconds that are over (all, with `all`: at a
   * stop). They are written apart from any message (no message waits for them, none is redelivered
   * for them); should the database refuse or be down, they are kept for the next call (with those of
   * calls in flight at the same time that failed too), at most LIMITS.securityTallyMaxKeys × 60
   * points (a minute of a flood), then the oldest are dropped.
   */
  async flushSecurityTally(all = false): Promise<number> {
    const points = [...this.unwrittenTally, ...this.verifier.takeTally(Date.now(), all)];
    this.unwrittenTally = [];
    if (points.length === 0) return 0;
    try {
      await this.sink.write(points);
      return points.length;
    } catch (err) {
      // Added to what is kept, not in its place: writes of the counts are made at each tick whether
      // the last one answered or not, and another one in flight may have failed and kept its own.
      const kept = [...this.unwrittenTally, ...points];
      this.unwrittenTally = kept.length > LIMITS.securityTallyMaxKeys * 60 ? kept.sort((a, b) => a.time - b.time).slice(-LIMITS.securityTallyMaxKeys * 60) : kept;
      throw err;
    }
  }

  /**
   * For a message kept whole as a dead letter: the receipts of its messages whose signature is
   * intact, those messages recorded in their devices' replay windows (dead-letter-receipts.ts).
   */
  deadLetterReceipts(topic: string, payload: Buffer): ReceiptRequest[] {
    return deadLetterReceipts(this.verifier, topic, payload);
  }

  /**
   * `keys`: each message's key, in its order (Verdict.keys). `refused`: the first file the storage
   * refused for good (its checksum, its name), the envelope's other files stored all the same.
   */
  private async pointsOf(
    env: UplinkEnvelope,
    keys: readonly string[],
    receiptIds: ReadonlyArray<SignedId | undefined>,
  ): Promise<{ points: StoredPoint[]; refused?: FieldStreamError; deferred?: Array<{ index: number; error: FieldStreamError }> }> {
    if (env.dataType !== 'file') {
      const points = dataPoints(env, keys);
      if (env.dataType === 'event' && this.eventTags !== undefined) boundEventTags(points, this.eventTags, (tag) => this.metrics.eventTagsOverflow.labels(tag).inc());
      return { points };
    }
    // Files first, then their records; the envelope's other files stored beside one refused (file-records.ts).
    const files = env.messages.map((message, i) => ({ deviceId: env.deviceId, message, receivedAt: message.receivedAt ?? env.receivedAt, key: keys[i] }));
    // The bound on a device's unfinished transfers: a chunk it refuses waits on its device when that
    // keeps it until its receipt (signed as a group); any other is kept as a dead letter.
    return storeFiles(this.files, files, isFinal, { deferrable: (i) => receiptIds[i] !== undefined });
  }
}
