import { sectionEnvelope, type GatewayEnvelope, type UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import type { Handled } from './message-handler.ts';
import { joined, readingPoints } from './points.ts';
import type { MessageVerifier } from './security/verifier.ts';
import type { Verdict } from './security/verdict.ts';
import type { PointSink } from './sinks/sink.ts';

/** What gatewayReadings needs of the message handler (message-handler.ts). */
export interface ReadingsHost {
  readonly verifier: MessageVerifier;
  readonly sink: PointSink;
  /** counts a section once written (MessageHandler.count) */
  count(dataType: 'timeseries', points: number, verdict: Verdict): void;
}

/**
 * A gateway's envelope of many devices' readings: each device's section is checked exactly as
 * that device's own envelope would be (its key, its replay window) and written as a write of its
 * own; the write batcher sends them in one request, and splits it should the database refuse it
 * as bad data, so one device's bad reading (a field that changed type) cannot take the other
 * devices' readings to the dead-letter folder: its section alone goes there. A section's replay
 * window records it only once its write succeeded. Should the database be unreachable, the whole
 * envelope is retried (what was written is written again, the same points).
 */
export async function gatewayReadings(h: ReadingsHost, topicGatewayId: string, env: GatewayEnvelope): Promise<Handled> {
  // The topic is what the broker's ACL checked; the envelope must agree with it.
  if (env.gatewayId !== topicGatewayId) throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `Envelope of gateway ${env.gatewayId} arrived on the topic of ${topicGatewayId}`);
  const owns = env.devices.map((section) => sectionEnvelope(env, section));
  // A section copying messages being written waits for that write (security/writes-in-flight.ts).
  for (let first = copyInFlight(h.verifier, owns); first !== undefined; first = copyInFlight(h.verifier, owns)) await first;
  const sections = owns.map((own) => {
    const verdict = h.verifier.check(own);
    const points = verdict.accepted?.dataType === 'timeseries' ? readingPoints(verdict.accepted, verdict.keys) : [];
    return { own, verdict, points, written: h.sink.write(joined(points, verdict.events)) };
  });
  // the verdicts of sections to be kept as dead letters: released by the caller (DeadLetterRequest.release)
  const kept = new Set<Verdict>();
  try {
    const results = await Promise.allSettled(sections.map((s) => s.written));
    const unreachable = results.find((r) => r.status === 'rejected' && !isFieldStreamError(r.reason, 'DISTRIBUTOR_WRITE_REJECTED'));
    if (unreachable?.status === 'rejected') throw unreachable.reason;
    const handled: Required<Omit<Handled, 'deferred'>> = { points: 0, files: 0, receipts: [], deadLetters: [] };
    sections.forEach(({ own, verdict, points }, i) => {
      const result = results[i];
      if (result?.status === 'rejected') {
        kept.add(verdict);
        handled.deadLetters.push({ topic: uplinkTopic(own.deviceId, 'timeseries'), payload: Buffer.from(JSON.stringify(own)), error: result.reason as FieldStreamError, release: () => verdict.release() });
        return;
      }
      verdict.commit({ persist: false });
      h.count('timeseries', points.length, verdict);
      handled.points += points.length;
      if (verdict.receipts.length > 0) handled.receipts.push({ gatewayId: env.gatewayId, deviceId: own.deviceId, ids: verdict.receipts });
    });
    h.verifier.persist();
    return handled;
  } catch (err) {
    kept.clear(); // nothing handed over: the envelope is retried
    throw err;
  } finally {
    for (const { verdict } of sections) if (!kept.has(verdict)) verdict.release();
  }
}

/** The first of the sections' copyInFlight (MessageVerifier), if any. */
function copyInFlight(verifier: MessageVerifier, owns: readonly UplinkEnvelope[]): Promise<void> | undefined {
  for (const own of owns) {
    const first = verifier.copyInFlight(own);
    if (first !== undefined) return first;
  }
  return undefined;
}
