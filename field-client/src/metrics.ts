import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { collectedCounter } from '../../shared/metrics/collected.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import type { CommandHandlers } from './commands.ts';
import type { FieldClient } from './field-client.ts';
import type { FileOutbox } from './files/file-outbox.ts';
import type { GatewayConnection } from './gateway-connection.ts';
import type { SparkplugSession } from './inputs/sparkplug/session.ts';

/**
 * The field client's metrics (docs/configuration.md, FIELD_METRICS_PORT). Everything is read at
 * scrape time from what the client already keeps (its queue, its stats, its connection): nothing is
 * done per message. Counters mirror the client's running totals (shared/metrics/collected.ts); they
 * start again from 0 when the client restarts, as Prometheus counters do.
 *
 * No device id as a label: each field client is its own scrape target, which names it.
 */
export function fieldClientMetrics(
  o: { client: FieldClient; connection: GatewayConnection; commands: CommandHandlers; outbox: FileOutbox; certFile: string; sparkplug?: readonly SparkplugSession[] },
  options: { processMetrics?: boolean } = {},
): ServiceMetrics {
  const m = new ServiceMetrics('field-client', options);
  const { client, connection, commands } = o;
  const queue = client.queue;

  m.gauge('field_queue_messages', 'Messages in the durable queue not yet committed (unsent, in flight, or awaiting their receipt).', [], function () {
    this.set(queue.depth);
  });
  m.gauge('field_queue_bytes', 'Bytes of the durable queue on disk.', [], function () {
    this.set(queue.bytesOnDisk);
  });
  m.gauge('field_outbox_bytes', 'Bytes of files waiting in the outbox to be sent (they count against FIELD_QUEUE_MAX_BYTES too).', [], function () {
    this.set(o.outbox.bytes());
  });
  m.gauge('field_rejected_bytes', 'Bytes of refused messages set aside in rejected.jsonl and rejected/ (they count against FIELD_QUEUE_MAX_BYTES too, until moved off the device).', [], function () {
    this.set(client.rejectedBytes);
  });
  m.gauge('field_rejected_held_messages', 'Messages refused for good that wait in the queue, unsent, for room within FIELD_QUEUE_MAX_BYTES to be set aside (FIELD_REJECTED_FULL).', [], function () {
    this.set(client.heldRefusals);
  });
  m.gauge('field_awaiting_receipt_messages', 'Messages acknowledged by the gateway and awaiting their commit receipt.', [], function () {
    this.set(queue.awaiting.count);
  });
  m.gauge('field_awaiting_receipt_bytes', 'Bytes of the messages awaiting their commit receipt.', [], function () {
    this.set(queue.awaiting.bytes);
  });
  m.gauge('field_oldest_unsent_age_seconds', 'Age of the oldest message not yet committed (0 when none): how far behind the device is.', [], function () {
    const oldest = queue.oldestUnacked();
    this.set(oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
  });
  m.gauge('field_commands_running', 'Commands whose handler (an exec program each) runs now: at most FIELD_COMMANDS_CONCURRENCY.', [], function () {
    this.set(commands.runningNow);
  });
  m.gauge('field_commands_waiting', 'Commands waiting for one of those running to end, in order of arrival (at most 100, LIMITS.fieldCommandsWaitingMax; past it FIELD_COMMANDS_WAITING_FULL).', [], function () {
    this.set(commands.waitingNow);
  });
  m.gauge('field_connected', '1 while connected to the gateway, else 0.', [], function () {
    this.set(connection.isOpen ? 1 : 0);
  });
  m.gauge('field_certificate_expiry_timestamp_seconds', "The device certificate's notAfter (FIELD_CERT_FILE, read at each scrape so a renewal shows), Unix seconds.", [], function () {
    // Absent when the file cannot be read or parsed (the client logs that at start).
    this.reset();
    try {
      this.set(Math.floor(Date.parse(new X509Certificate(readFileSync(o.certFile)).validTo) / 1000));
    } catch {
      /* not exposed */
    }
  });

  collectedCounter(m, 'field_dropped_total', 'Messages dropped by the queue when full (FIELD_QUEUE_FULL_POLICY=drop-oldest).', [], () => queue.stats.dropped);
  collectedCounter(m, 'field_refused_total', 'Messages refused by the queue when full (FIELD_QUEUE_FULL_POLICY=reject).', [], () => queue.stats.refused);
  collectedCounter(m, 'field_write_failed_total', "Messages refused because the queue could not write them to the device's disk (FIELD_QUEUE_WRITE_FAILED: full, read-only or failing).", [], () => queue.stats.writeFailed);
  collectedCounter(m, 'field_refused_by_gateway_total', 'Messages refused for good by the gateway, set aside on disk.', [], () => client.stats.refusedByGateway);
  collectedCounter(m, 'field_sent_total', 'Messages and file chunks sent to the gateway (copies sent again included).', [], () => client.stats.sent);
  collectedCounter(m, 'field_receipts_total', 'Commit receipts that committed something.', [], () => client.receiptStats.receipts);
  collectedCounter(m, 'field_receipts_invalid_total', "Commit receipts refused: their MAC did not verify under the device's key.", [], () => client.receiptStats.receiptsInvalid);
  collectedCounter(m, 'field_receipts_replayed_total', 'Genuine commit receipts that named nothing still held.', [], () => client.receiptStats.receiptsReplayed);
  collectedCounter(m, 'field_resent_for_receipt_total', 'Messages and chunks sent again because their receipt was overdue (or, never answered by the gateway, they were as long in flight).', [], () => client.receiptStats.resentForReceipt);
  collectedCounter(m, 'field_commands_total', 'Commands from the command API: run, or refused (outcome = the refusal code).', ['outcome'], () => [
    [{ outcome: 'run' }, commands.stats.run] as const,
    ...Object.entries(commands.stats.refusedByCode).map(([code, n]) => [{ outcome: code }, n ?? 0] as const),
  ]);
  collectedCounter(m, 'field_commands_unanswered_total', 'Commands refused and not answered: failing authentication (forged, altered, unsigned) or answered already (replayed).', [], () => commands.stats.unanswered);
  const sparkplug = o.sparkplug ?? [];
  if (sparkplug.length > 0) {
    // Summed over the Sparkplug sessions (the plant broker's and the local MQTT input's).
    const sum = (f: (s: SparkplugSession) => number) => sparkplug.reduce((n, s) => n + f(s), 0);
    // accepted is counted as such (stats.accepted), not as messages less refusals: a message held
    // for a missing seq and discarded at its reorder timeout would take that back.
    collectedCounter(m, 'field_sparkplug_messages_total', 'Sparkplug B messages taken (outcome=accepted), or refused or ignored (outcome = the code); one held for a missing seq counts once let through or discarded.', ['outcome'], () => {
      const byCode = new Map<string, number>();
      for (const s of sparkplug) for (const [code, n] of Object.entries(s.stats.refusedByCode)) byCode.set(code, (byCode.get(code) ?? 0) + (n ?? 0));
      return [[{ outcome: 'accepted' }, sum((s) => s.stats.accepted)] as const, ...[...byCode].map(([code, n]) => [{ outcome: code }, n] as const)];
    });
    collectedCounter(m, 'field_sparkplug_metrics_skipped_total', 'Sparkplug metrics left out of readings (null, not a scalar type, transient, BAD or STALE quality, name too long).', [], () => sum((s) => s.stats.metricsSkipped));
    collectedCounter(m, 'field_sparkplug_field_name_collisions_total', 'Field names that metrics of a Sparkplug birth share with other metrics followed, counted at each such birth; one keeps the name, the others get a suffix (SPARKPLUG_FIELD_NAME_COLLISION).', [], () => sum((s) => s.stats.fieldNameCollisions));
    collectedCounter(m, 'field_sparkplug_rebirths_requested_total', 'Rebirth requests (NCMD Node Control/Rebirth) sent to Sparkplug edge nodes.', [], () => sum((s) => s.stats.rebirthsRequested));
    collectedCounter(m, 'field_sparkplug_reordered_total', 'Sparkplug messages that arrived ahead of their seq and were taken in order once the missing ones came.', [], () => sum((s) => s.stats.reordered));
    m.gauge('field_sparkplug_reorder_held_messages', 'Sparkplug messages held now for a missing seq (FIELD_SPARKPLUG_REORDER_TIMEOUT_MS).', [], function () {
      this.set(sum((s) => s.host.reorder.held));
    });
    m.gauge('field_sparkplug_reorder_held_bytes', 'Memory the Sparkplug messages held for a missing seq take, estimated (bounded by LIMITS.sparkplugReorderMaxHeldBytes).', [], function () {
      this.set(sum((s) => s.host.reorder.heldBytes));
    });
    m.gauge('field_sparkplug_definitions_bytes', "Memory the Sparkplug births' metric definitions take, estimated (bounded by LIMITS.sparkplugDefinitionsMaxBytes).", [], function () {
      this.set(sum((s) => s.host.definitionsBytes));
    });
    m.gauge('field_sparkplug_peer_hosts', 'Other Sparkplug host applications by their last STATE (state = online or offline).', ['state'], function () {
      this.set({ state: 'online' }, sum((s) => s.peers.count(true)));
      this.set({ state: 'offline' }, sum((s) => s.peers.count(false)));
    });
  }
  return m;
}
