import type { FieldStreamError } from '../../../../shared/errors.ts';
import { key, type HostOutcome, type NodeSession } from './host-types.ts';
import { BOUND_CODES, type RebirthRequests } from './rebirth.ts';
import type { ReorderBuffers } from './reorder.ts';
import type { SparkplugTopic } from './topic.ts';

/** What refuse needs of the host (host.ts). */
export interface RefusalHost {
  readonly sessions: ReadonlyMap<string, NodeSession>;
  readonly reorder: ReorderBuffers;
  readonly rebirths: RebirthRequests;
}

/**
 * A message the host refused with `err` (SparkplugHost.process): its readings dropped, the refusal
 * in `out`, its session marked stale when it named a metric its birth did not declare, and a rebirth
 * asked for when one would help (rebirth.ts says how often).
 */
export function refuse(h: RefusalHost, t: SparkplugTopic, err: FieldStreamError, now: number, out: HostOutcome): void {
  out.readings = [];
  out.refused = err;
  // A metric its birth did not declare: that birth no longer describes what the edge node sends
  // (one was missed, or its aliases changed), so its data is refused until the NBIRTH the
  // rebirth request brings, as after a gap, rather than resolved against it.
  const unknown = err.code === 'SPARKPLUG_UNKNOWN_METRIC';
  if (unknown) markStale(h, t, out);
  const k = key(t.group, t.edge);
  const s = h.sessions.get(k);
  const bound = (t.type === 'NBIRTH' || t.type === 'DBIRTH') && BOUND_CODES.includes(err.code);
  // The same data after the same birth again (the metric still not declared) is a refusal in a
  // row too: a rebirth fixes it once, if a birth was missed, not when the edge node sends them so.
  if (bound || birthRefused(t, err) || unknown) h.rebirths.refused(k, now, bound, unknown ? s : undefined);
  // Whatever the birth declared no longer describes what the edge node sends: ask again (§5.12,
  // NCMD Node Control/Rebirth). A birth refused for what it holds (birthRefused) asks too: the
  // old definitions were dropped with it. A birth past a bound does not: it would come back the
  // same. Births refused in a row, data naming a metric its birth did not declare after each
  // birth, and the data refused as not born after them (unless a gap made its session stale
  // since), ask less and less often (rebirth.ts). A DDEATH of a device not born needs no birth;
  // one that is a gap does, as any message: its session is stale, and unasked its edge node
  // (quiet after its device died, say) was asked only by its next message, refused meanwhile.
  if (unknown || err.code === 'SPARKPLUG_SEQ_GAP' || (err.code === 'SPARKPLUG_NOT_BORN' && t.type !== 'DDEATH') || birthRefused(t, err)) {
    const notBornAfter = err.code === 'SPARKPLUG_NOT_BORN' && (s?.stale !== true || h.rebirths.staleAfterRefused(k, s));
    const afterRefused = birthRefused(t, err) || unknown || notBornAfter;
    if (!(afterRefused && h.rebirths.heldOff(k, now))) h.rebirths.ask(t.group, t.edge, now, err.message, out);
  }
}

function markStale(h: RefusalHost, t: SparkplugTopic, out: HostOutcome): void {
  const k = key(t.group, t.edge);
  const s = h.sessions.get(k);
  if (!s) return;
  s.stale = true;
  h.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: it named a metric its birth did not declare`, out);
}

/** A birth refused for what it holds (not for a bound, nor out of its session's order, nor read already). */
function birthRefused(t: SparkplugTopic, err: FieldStreamError): boolean {
  if (t.type !== 'NBIRTH' && t.type !== 'DBIRTH') return false;
  return !['SPARKPLUG_SEQ_GAP', 'SPARKPLUG_NOT_BORN', 'SPARKPLUG_DUPLICATE', ...BOUND_CODES].includes(err.code);
}
