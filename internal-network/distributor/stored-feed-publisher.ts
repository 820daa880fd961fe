import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { STORED_FEED_TOPIC, storedPointProblem } from '../shared/stored-feed.ts';
import { sealStoredFeed, STORED_FEED_ENVELOPE_BYTES, type StoredFeedKey } from '../shared/stored-feed-auth.ts';
import { MEASUREMENTS, type StoredPoint } from './points.ts';

/** Where the write path hands over what it wrote (the WriteBatcher, after the database answered). */
export interface StoredListener {
  /** Called with points already durable; returns at once and never throws. */
  offer(points: readonly StoredPoint[]): void;
}

export interface StoredFeedOptions {
  /** the `source` of every message: the distributor's DISTRIBUTOR_CLIENT_ID */
  source: string;
  /** the stored-feed key every message is sealed with (DISTRIBUTOR_STORED_FEED_KEY_FILE) */
  key: StoredFeedKey;
  /** milliseconds between the first point offered and its message (TIMINGS.feedCoalesceMs) */
  coalesceMs?: number;
  /** points per message (LIMITS.feedPointsPerMessage) */
  maxPointsPerMessage?: number;
  /** bytes per message (LIMITS.feedMessageMaxBytes) */
  maxMessageBytes?: number;
  /** points waiting for the next message, then room for all but readings (LIMITS.feedPending*) */
  maxPendingPoints?: number;
  extraPendingPoints?: number;
  /** of those, the DMZ's word at most (LIMITS.feedPendingDmzWordMaxPoints; isDmzWord) */
  maxPendingDmzWordPoints?: number;
  /** bytes a connection's socket may hold unsent before the feed skips it (LIMITS.feedSocketBufferMaxBytes) */
  maxSocketBufferBytes?: number;
}

/** Counters of what the feed published and left out (DistributorMetrics.feedPoints / feedDropped). */
export interface FeedCounters {
  published: { inc(n: number): void };
  dropped: { inc(n: number): void };
}

/**
 * Publishes the stored feed (internal-network/shared/stored-feed.ts): the points the WriteBatcher
 * wrote, gathered for TIMINGS.feedCoalesceMs and sent at QoS 0 on one of the distributor's
 * connections, at most LIMITS.feedPointsPerMessage points and LIMITS.feedMessageMaxBytes per message.
 *
 * It is a view for people, not a copy of the data: the write path never waits for it and never
 * pays for its trouble. `offer` only keeps a reference to the array; serialising happens on the
 * timer. When no connection is up, or the one it would use has more than
 * LIMITS.feedSocketBufferMaxBytes unsent (PUBACKs and receipts share that socket and come first),
 * or more points wait than LIMITS.feedPendingMaxPoints, points are left out and counted: in the
 * next message's `dropped` and in fieldstream_distributor_feed_dropped_points_total. Nothing is
 * queued while disconnected (mqtt.js would otherwise keep QoS 0 messages for the next connection).
 *
 * Each message is sealed (stored-feed-auth.ts): one HMAC over the message's bytes, whatever the
 * number of points in it, with this run's `boot`, the message's `seq` (1, 2, 3 ...) and the time
 * it was sealed, so that the console can refuse a forged or replayed one.
 */
export class StoredFeedPublisher implements StoredListener {
  private pending: (readonly StoredPoint[])[] = [];
  private pendingPoints = 0;
  /** of pendingPoints, the DMZ's word (counted as offered: some may be left out after, never more) */
  private pendingDmzWord = 0;
  /** points left out since the last message that went out */
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** whether the last attempt to publish found no usable connection (logged once per episode) */
  private blocked = false;
  private readonly o: Required<StoredFeedOptions>;
  /** the body up to its `seq`, the same for every message of this run */
  private readonly head: string;
  /** the number of the last message sealed in this run */
  private seq = 0;
  readonly stats = { messages: 0, points: 0, dropped: 0 };

  constructor(
    private readonly clients: readonly MqttClient[],
    options: StoredFeedOptions,
    private readonly log: Logger,
    private readonly counters?: FeedCounters,
  ) {
    this.o = {
      coalesceMs: TIMINGS.feedCoalesceMs,
      maxPointsPerMessage: LIMITS.feedPointsPerMessage,
      maxMessageBytes: LIMITS.feedMessageMaxBytes,
      maxPendingPoints: LIMITS.feedPendingMaxPoints,
      extraPendingPoints: LIMITS.feedPendingExtraPoints,
      maxPendingDmzWordPoints: LIMITS.feedPendingDmzWordMaxPoints,
      maxSocketBufferBytes: LIMITS.feedSocketBufferMaxBytes,
      ...options,
    };
    // A run's name: random, so that a restart (its `seq` from 1 again) is a run the console has
    // not seen; 16 bytes, so that two runs never share one.
    this.head = `{"source":${JSON.stringify(this.o.source)},"boot":"${randomBytes(16).toString('base64url')}","seq":`;
  }

  offer(offered: readonly StoredPoint[]): void {
    if (offered.length === 0) return;
    if (this.closed) return this.drop(offered.length);
    const points = this.boundDmzWord(offered);
    if (points.length === 0) return;
    const room = this.o.maxPendingPoints - this.pendingPoints;
    if (points.length <= room) {
      this.keep(points);
    } else {
      // Over the cap: readings are left out first; presence, health, security events and the
      // other rare kinds still go while the extra room lasts, so a flood of readings cannot hide them.
      const kept: StoredPoint[] = room > 0 ? points.slice(0, room) : [];
      let extra = this.o.maxPendingPoints + this.o.extraPendingPoints - this.pendingPoints - kept.length;
      for (let i = Math.max(0, room); i < points.length && extra > 0; i++) {
        const p = points[i] as StoredPoint;
        if (p.measurement !== MEASUREMENTS.readings) {
          kept.push(p);
          extra--;
        }
      }
      this.drop(points.length - kept.length);
      if (kept.length > 0) this.keep(kept);
    }
  }

  /**
   * The DMZ's word past its share of a tick (maxPendingDmzWordPoints) is left out, and counted:
   * presences and gateways' reports are what a taken DMZ can forge at will (bounded, not believed:
   * docs/security-mechanisms.md), and must not crowd out what devices signed or the distributor found.
   */
  private boundDmzWord(points: readonly StoredPoint[]): readonly StoredPoint[] {
    let word = 0;
    for (const p of points) if (isDmzWord(p)) word++;
    if (word === 0) return points;
    const room = Math.max(0, this.o.maxPendingDmzWordPoints - this.pendingDmzWord);
    if (word <= room) {
      this.pendingDmzWord += word;
      return points;
    }
    let left = room;
    const kept = points.filter((p) => !isDmzWord(p) || left-- > 0);
    this.pendingDmzWord += room;
    this.drop(points.length - kept.length);
    return kept;
  }

  /** Publishes what waits (if a connection takes it) and stops; later offers are counted as dropped. */
  close(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.flush();
    this.closed = true;
  }

  private keep(points: readonly StoredPoint[]): void {
    this.pending.push(points);
    this.pendingPoints += points.length;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.o.coalesceMs);
      this.timer.unref();
    }
  }

  private drop(n: number): void {
    if (n <= 0) return;
    this.dropped += n;
    this.stats.dropped += n;
    this.counters?.dropped.inc(n);
  }

  private flush(): void {
    this.timer = undefined;
    const batches = this.pending;
    const total = this.pendingPoints;
    this.pending = [];
    this.pendingPoints = 0;
    this.pendingDmzWord = 0;
    if (total === 0 && this.dropped === 0) return;
    if (!this.usableClient()) {
      // Nothing is serialised for a connection that is not there.
      this.drop(total);
      return;
    }
    // Room for the seal, the head, the largest `seq`, `sent` and `dropped` a message can carry and
    // the closing brackets.
    const budget = this.o.maxMessageBytes - STORED_FEED_ENVELOPE_BYTES - Buffer.byteLength(this.head) - 96;
    let parts: string[] = [];
    let bytes = 0;
    for (const batch of batches) {
      for (const p of batch) {
        const problem = storedPointProblem(p);
        const json = problem === undefined ? JSON.stringify(p) : undefined;
        const size = json === undefined ? 0 : Buffer.byteLength(json);
        if (json === undefined || size > budget) {
          this.log.debug({ measurement: String(p.measurement).slice(0, 64), problem: problem ?? `${size} bytes` }, 'stored point left out of the feed');
          this.drop(1);
          continue;
        }
        if (parts.length >= this.o.maxPointsPerMessage || bytes + size + 1 > budget) {
          this.publish(parts);
          parts = [];
          bytes = 0;
        }
        parts.push(json);
        bytes += size + 1;
      }
    }
    // An empty message still tells the console about points left out since the last one.
    if (parts.length > 0 || this.dropped > 0) this.publish(parts);
  }

  private publish(parts: string[]): void {
    const client = this.usableClient();
    if (!client) {
      this.drop(parts.length);
      return;
    }
    const dropped = this.dropped;
    this.dropped = 0;
    const n = parts.length;
    this.stats.messages++;
    const body = Buffer.from(`${this.head}${++this.seq},"sent":${Date.now()},"dropped":${dropped},"points":[${parts.join(',')}]}`, 'utf8');
    client.publish(STORED_FEED_TOPIC, sealStoredFeed(this.o.key, body), { qos: 0 }, (err) => {
      if (err) {
        // Not written to the socket: its points, and the count it carried, go in the next message.
        this.drop(n);
        this.dropped += dropped;
        return;
      }
      this.stats.points += n;
      this.counters?.published.inc(n);
    });
  }

  /**
   * The first connection that is up and whose socket is not backed up: always the same one while
   * it stays usable, so messages reach the console in the order they were published.
   */
  private usableClient(): MqttClient | undefined {
    for (const c of this.clients) {
      if (c.connected && !c.disconnecting && (c.stream?.writableLength ?? 0) <= this.o.maxSocketBufferBytes) {
        if (this.blocked) {
          this.blocked = false;
          this.log.info({ dropped: this.stats.dropped }, 'stored feed publishing again');
        }
        return c;
      }
    }
    if (!this.blocked) {
      this.blocked = true;
      this.log.warn('stored feed: no broker connection with room; stored points are left out of the feed (counted) until one is back');
    }
    return undefined;
  }
}

/**
 * Whether a point is the DMZ's word: a presence (a device's or a gateway's: the gateway says it) or a
 * gateway's security report (source=gateway, dmz-word-points.ts). Readings first: most points are.
 */
function isDmzWord(p: StoredPoint): boolean {
  const m = p.measurement;
  if (m === MEASUREMENTS.readings) return false;
  return m === MEASUREMENTS.status || m === MEASUREMENTS.gatewayStatus || (m === MEASUREMENTS.securityEvents && p.tags.source === 'gateway');
}
