import type { Counter, Histogram } from 'prom-client';
import { GATEWAY_SECURITY_CODES } from '../../shared/contract/envelope.ts';
import { DATA_TYPES, type DataType } from '../../shared/contract/payloads.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { SECURITY_REFUSAL_CODES } from './security/refusal-events.ts';

/** Points per database request: from a lone status point to DISTRIBUTOR_BATCH_MAX_POINTS' ceiling. */
export const BATCH_POINTS_BUCKETS = [1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000];

/** The kinds of message the distributor writes: the uplink data types and device status. */
export type WrittenKind = DataType | 'status';
const KINDS: readonly WrittenKind[] = [...DATA_TYPES, 'status'];

/**
 * The distributor's metrics (docs/monitoring.md). Live values (broker connections, the oldest
 * message in progress) are read at scrape time; counters are counted where things happen, with
 * label children bound once so the per-message path does no label lookup.
 */
export class DistributorMetrics {
  readonly brokerConnected;
  readonly consumersConnected;
  private readonly messagesBy: Record<WrittenKind, Counter.Internal>;
  readonly points;
  readonly writeSeconds;
  readonly writeFailures;
  readonly deadLetters;
  readonly deadLettersNotKept;
  readonly deadLetterBytes;
  readonly deadLetterLimit;
  readonly securityEvents;
  readonly gatewayUnlisted;
  readonly eventTagsOverflow;
  readonly duplicates;
  readonly fileChunksDeferred;
  readonly batchPoints;
  readonly postgresStatementTimeouts;
  readonly postgresTransactionMaxBytes;
  readonly oldestInProgress;
  readonly receipts;
  readonly presencesCleared;
  readonly presenceClearsSkipped;
  readonly retainedCleared;
  readonly retainedClearsSkipped;
  readonly feedPoints;
  readonly feedDropped;
  readonly endToEnd;
  private deadLetterHeld: () => Promise<number> | undefined = () => undefined;
  private live: { connected: () => readonly boolean[]; oldestStartedAt: () => number | undefined } = { connected: () => [], oldestStartedAt: () => undefined };

  constructor(readonly metrics: ServiceMetrics = new ServiceMetrics('distributor', { processMetrics: false })) {
    const self = this;
    this.brokerConnected = metrics.gauge('broker_connected', 'Whether every consumer of the distributor is connected to the MQTT broker (1) or not (0).', [], function () {
      const c = self.live.connected();
      this.set(c.length > 0 && c.every(Boolean) ? 1 : 0);
    });
    this.consumersConnected = metrics.gauge('distributor_consumers_connected', 'Consumers (MQTT connections) of the distributor connected to the broker.', [], function () {
      this.set(self.live.connected().filter(Boolean).length);
    });
    const messages = metrics.counter('distributor_messages_total', 'Device messages written (to the database, or as files), by data type; status: presence updates.', ['data_type']);
    this.messagesBy = Object.fromEntries(KINDS.map((k) => [k, messages.labels(k)])) as Record<WrittenKind, Counter.Internal>;
    this.points = metrics.counter('distributor_points_total', 'Data points written to the database (security events not included).');
    this.writeSeconds = metrics.histogram('distributor_write_seconds', 'Seconds per batch written to the database (written or failed): one request, or to InfluxDB several past LIMITS.influxRequestMaxBytes.');
    this.writeFailures = metrics.counter('distributor_write_failures_total', 'Database requests that failed, by error code (DISTRIBUTOR_WRITE_FAILED: unavailable, retried; DISTRIBUTOR_WRITE_REJECTED: refused as bad data).', ['reason']);
    // Both reasons exposed at 0 from the start: a series that appears only at the first failure is
    // invisible to rate() and to readers who take a missing series for "unknown".
    for (const reason of ['DISTRIBUTOR_WRITE_FAILED', 'DISTRIBUTOR_WRITE_REJECTED']) this.writeFailures.labels(reason).inc(0);
    this.deadLetters = metrics.counter('distributor_dead_letters_total', 'MQTT messages kept in the dead-letter folder because they can never be written.');
    this.deadLettersNotKept = metrics.counter(
      'distributor_dead_letters_not_kept_total',
      "Messages acknowledged without being kept as dead letters: invalid payloads (not a valid envelope), and presences or gateways' security reports the database refused (the DMZ's word), past their share of DEAD_LETTER_MAX_BYTES or not writable.",
    );
    this.deadLetterBytes = metrics.gauge('distributor_dead_letter_bytes', 'Bytes the dead-letter folder holds on disk (measured at the scrape, at most a second old; bounded by DEAD_LETTER_MAX_BYTES).', [], async function () {
      const held = await self.deadLetterHeld();
      if (held !== undefined) this.set(held);
    });
    // The bound, beside what the folder holds: the alerts need the fraction (FieldStreamDeadLetterFolderFilling, ...NearlyFull).
    this.deadLetterLimit = metrics.gauge('distributor_dead_letter_limit_bytes', 'Bytes the dead-letter folder may hold (DEAD_LETTER_MAX_BYTES): past half, invalid payloads are no longer kept; at the bound, a message with data waits unacknowledged and its consumer connection with it.');
    this.securityEvents = metrics.counter('distributor_security_events_total', 'Device messages refused by the security checks, by error code (duplicates are counted apart).', ['reason']);
    // Every reason at 0 from the start, as write_failures above: a revoked device's first refusal
    // would otherwise make its series appear at 1, and increase() (FieldStreamRevokedDeviceAttempts)
    // see nothing. The verifier's codes (duplicates have their own counter) and the gateways' reports'.
    for (const reason of [...SECURITY_REFUSAL_CODES.filter((c) => c !== 'SECURITY_DUPLICATE'), ...GATEWAY_SECURITY_CODES, 'SECURITY_UNKNOWN_GATEWAY']) this.securityEvents.labels(reason).inc(0);
    this.gatewayUnlisted = metrics.counter(
      'distributor_gateway_unlisted_refusals_total',
      "Refusals a gateway reported without the device and code (its report's `dropped`: more devices than a report lists), not stored as security events.",
    );
    this.eventTagsOverflow = metrics.counter(
      'distributor_event_tags_overflow_total',
      "Events stored under the tag value `~other` (event_type or severity, by `tag`) because the device's value was past the bound of its values or of the fleet's (LIMITS.eventTypesPerDevice and the like); the value is kept in the field `<tag>_value`.",
      ['tag'],
    );
    // Both at 0 from the start: increase() of a series that appears at its first overflow sees nothing.
    for (const tag of ['event_type', 'severity']) this.eventTagsOverflow.labels(tag).inc(0);
    this.duplicates = metrics.counter('distributor_duplicates_total', 'Copies of device messages written before (a device resending after a lost ack or receipt), not written again.');
    this.fileChunksDeferred = metrics.counter(
      'distributor_file_chunks_deferred_total',
      "Chunks of file transfers neither stored nor receipted because each would open a transfer while its device had LIMITS.fileOpenTransfersPerDeviceMax unfinished (DISTRIBUTOR_FILE_TRANSFERS_OPEN); the device keeps the file and sends them again.",
    );
    this.batchPoints = metrics.histogram('distributor_batch_points', 'Points per database request.', [], BATCH_POINTS_BUCKETS);
    // Set and counted by the PostgreSQL sink (sinks/postgres/sink.ts PostgresSinkMetrics).
    this.postgresStatementTimeouts = metrics.counter(
      'distributor_postgres_statement_timeouts_total',
      'PostgreSQL write transactions past POSTGRES_TIMEOUT_MS (SQLSTATE 57014), each written again in halves of its rows (one row alone: the write failed, retried).',
    );
    this.postgresStatementTimeouts.inc(0);
    this.postgresTransactionMaxBytes = metrics.gauge(
      'distributor_postgres_transaction_max_bytes',
      'Most COPY text the PostgreSQL sink puts in one transaction now: LIMITS.postgresTransactionMaxBytes, halved after a transaction past POSTGRES_TIMEOUT_MS, doubled again after transactions that commit in time (0: PostgreSQL not written).',
    );
    this.oldestInProgress = metrics.gauge('distributor_oldest_in_progress_seconds', 'Age of the oldest message taken from the broker and not yet written (0: none in progress).', [], function () {
      const since = self.live.oldestStartedAt();
      this.set(since === undefined ? 0 : Math.max(0, (Date.now() - since) / 1000));
    });
    this.receipts = metrics.counter('distributor_receipts_total', 'Commit receipts published to the gateways.');
    this.presencesCleared = metrics.counter(
      'distributor_presences_cleared_total',
      'Retained presences of device ids neither registered nor revoked (the DMZ\'s inventions) cleared on the internal broker (an empty retained publish the broker acknowledged).',
    );
    this.presenceClearsSkipped = metrics.counter(
      'distributor_presence_clears_skipped_total',
      'Retained presences of invented device ids left on the internal broker: more waiting than LIMITS.presenceClearsPendingMax, or the clear refused (an ACL without the distributor\'s write of presence topics) or lost with its connection.',
    );
    this.retainedCleared = metrics.counter(
      'distributor_retained_cleared_total',
      'Retained messages on topics where nothing is retained (any but the device presences\' and $SYS), left by the DMZ through the bridge, cleared on the internal broker (an empty retained publish the broker acknowledged).',
    );
    this.retainedClearsSkipped = metrics.counter(
      'distributor_retained_clears_skipped_total',
      'Such retained messages left on the internal broker for now: more waiting than LIMITS.presenceClearsPendingMax (the next sweep finds them again), or the clear refused (an ACL without the distributor\'s `topic readwrite #`) or lost with its connection.',
    );
    this.feedPoints = metrics.counter('distributor_feed_points_total', 'Stored points published on the stored feed (fieldstream/v1/internal/stored) for the operator console.');
    this.feedDropped = metrics.counter(
      'distributor_feed_dropped_points_total',
      'Stored points left out of the stored feed (no broker connection, its socket backed up, more waiting than the feed takes, too large for a feed message); written all the same.',
    );
    this.endToEnd = metrics.histogram(
      'distributor_end_to_end_seconds',
      "Seconds from a device's sending of a message (its signature time, on the gateway's clock; unsigned: the gateway's receipt) to the database's answer.",
    );
  }

  /** What the dead-letter folder holds, read at each scrape, and its bound in bytes. */
  bindDeadLetters(held: () => Promise<number> | undefined, limitBytes: number): void {
    this.deadLetterHeld = held;
    this.deadLetterLimit.set(limitBytes);
  }

  bind(live: DistributorMetrics['live']): void {
    this.live = live;
  }

  messages(kind: WrittenKind, n: number): void {
    if (n > 0) this.messagesBy[kind].inc(n);
  }

  /**
   * End-to-end latency of the messages sent at `sentAt` (epoch ms, one per message) and written at
   * `now`: messages of one signed group, or one frame, share a time, so equal neighbours are
   * observed together (observeMany) and 100,000 readings a second cost a few hundred observations.
   */
  endToEndOf(sentAt: readonly number[], now: number): void {
    if (!this.metrics.counting) return;
    let i = 0;
    while (i < sentAt.length) {
      const t = sentAt[i] as number;
      let j = i + 1;
      while (j < sentAt.length && sentAt[j] === t) j++;
      observeMany(this.endToEnd, Math.max(0, (now - t) / 1000), j - i);
      i = j;
    }
  }
}

/** prom-client 15's histogram entry for a label set (not part of its typings). */
interface HistogramEntry {
  sum: number;
  count: number;
  bucketValues: Record<number, number>;
}

/**
 * `count` observations of one value in an unlabelled histogram, for the price of one: prom-client
 * has no weighted observe, so the first goes through `observe` (which creates and validates the
 * entry) and the others are added to the entry's sum, count and bucket. Should the library's inner
 * shape ever differ, it falls back to observing one by one.
 */
export function observeMany(h: Histogram, value: number, count: number): void {
  if (count <= 0) return;
  h.observe(value);
  if (count === 1) return;
  const internals = h as unknown as { hashMap?: Record<string, HistogramEntry>; upperBounds?: number[] };
  const entry = internals.hashMap?.[''];
  const bound = internals.upperBounds?.find((b) => value <= b);
  if (!entry || typeof entry.count !== 'number' || typeof entry.sum !== 'number' || !entry.bucketValues) {
    for (let k = 1; k < count; k++) h.observe(value);
    return;
  }
  entry.sum += value * (count - 1);
  entry.count += count - 1;
  if (bound !== undefined && Object.prototype.hasOwnProperty.call(entry.bucketValues, bound)) entry.bucketValues[bound] = (entry.bucketValues[bound] as number) + count - 1;
}
