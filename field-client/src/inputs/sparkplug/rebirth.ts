import type { ErrorCode } from '../../../../shared/errors.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import type { HostOutcome } from './host-types.ts';
import { key } from './host-types.ts';
import { lifecycleEvent } from './mapping.ts';

/** What refuses a birth for a bound: the same birth asked again would be refused again. */
export const BOUND_CODES: readonly ErrorCode[] = ['SPARKPLUG_TOO_MANY_EDGE_NODES', 'SPARKPLUG_TOO_MANY_DEVICES', 'SPARKPLUG_DEFINITIONS_FULL'];

/** The births of one edge node refused in a row, none taken since (see RebirthRequests). */
interface Refusals {
  /** how many */
  count: number;
  /** when the last one was refused */
  at: number;
  /** how long after it the requests it holds off are held off */
  holdOffMs: number;
  /** whose birth the last one was: a device's id, undefined for the NBIRTH */
  device: string | undefined;
}

/**
 * When the host asks an edge node to rebirth (§5.12 "Host Application Rebirth Request": NCMD with
 * `Node Control/Rebirth` = true), per edge node:
 *
 * - at most once every `minIntervalMs`, so that a node that keeps gapping is asked again, but not
 *   once per message;
 * - less and less often while its births are refused (refused): a birth refused for what it holds
 *   (an NBIRTH that cannot be decoded, one without bdSeq, a metric without a data type...) or past a
 *   bound (BOUND_CODES) asks for a rebirth through the birth itself or the data refused as not born
 *   after it, and the rebirth brings every birth of the edge node again, the others' values and
 *   events queued again each time. Useful once (a birth lost, or the edge node's state fixed since),
 *   it is useless when the edge node sends the same birth each time: asked every interval, it did so
 *   for as long as it ran. So after LIMITS.sparkplugRefusedBirthsBeforeBackoff births of an edge node
 *   refused in a row, those requests are held off for twice as long after each one refused (from
 *   `minIntervalMs`: 10 s, 20 s, 40 s...), at most `afterBoundMs`; a birth refused for a bound holds
 *   them off `afterBoundMs` at once, as it would come back the same until a death makes room. A gap,
 *   and data refused after one (its session stale), still ask at the usual pace (see SparkplugHost).
 *   The birth refused last, taken (born), starts the count again, and so does a quiet `afterBoundMs`
 *   past the hold-off (the edge node's data asked and no refused birth came: it is not in that loop).
 *
 * Each map holds at most `maxEdgeNodes` edge nodes: a publisher inventing edge node ids cannot grow
 * them without bound.
 */
export class RebirthRequests {
  /** when each edge node was last asked */
  private readonly askedAt = new Map<string, number>();
  /** each edge node's births refused in a row, the one refused latest last */
  private readonly refusals = new Map<string, Refusals>();

  constructor(private readonly o: { minIntervalMs: number; afterBoundMs: number; maxEdgeNodes: number }) {}

  /** Asks edge node `group`/`edge` to rebirth (`out.rebirth`, and a rebirth_requested event), unless it was asked too lately. */
  ask(group: string, edge: string, now: number, reason: string, out: HostOutcome): void {
    const k = key(group, edge);
    const last = this.askedAt.get(k);
    if (last !== undefined && now - last < this.o.minIntervalMs) return;
    if (last === undefined && this.askedAt.size >= this.o.maxEdgeNodes) {
      // Only the requests still inside their interval need remembering.
      for (const [other, at] of this.askedAt) if (now - at >= this.o.minIntervalMs) this.askedAt.delete(other);
      if (this.askedAt.size >= this.o.maxEdgeNodes) return;
    }
    this.askedAt.set(k, now);
    out.rebirth = true;
    out.events.push(lifecycleEvent('rebirth_requested', { group, edge }, now, { reason }));
  }

  /**
   * A birth of edge node `k` (its NBIRTH, or device `device`'s DBIRTH) was refused at `now`: for a
   * bound (`bound`, BOUND_CODES), or for what it holds.
   */
  refused(k: string, device: string | undefined, now: number, bound: boolean): void {
    const last = this.refusals.get(k);
    const count = last !== undefined && now - last.at < last.holdOffMs + this.o.afterBoundMs ? last.count + 1 : 1;
    this.refusals.delete(k);
    // Still full, the edge node refused longest ago is forgotten: its requests come at the usual pace again.
    for (const other of this.refusals.keys()) {
      if (this.refusals.size < this.o.maxEdgeNodes) break;
      this.refusals.delete(other);
    }
    const over = count - LIMITS.sparkplugRefusedBirthsBeforeBackoff;
    const holdOffMs = bound ? this.o.afterBoundMs : over <= 0 ? 0 : Math.min(this.o.minIntervalMs * 2 ** over, this.o.afterBoundMs);
    this.refusals.set(k, { count, at: now, holdOffMs, device });
  }

  /** A birth of edge node `k` was taken (its NBIRTH, or device `device`'s DBIRTH): if it is the one refused last, the count starts again. */
  born(k: string, device: string | undefined): void {
    if (this.refusals.get(k)?.device === device) this.refusals.delete(k);
  }

  /** Whether a birth of edge node `k` refused, or its data refused as not born, asks no rebirth at `now` (see the class). */
  heldOff(k: string, now: number): boolean {
    const r = this.refusals.get(k);
    return r !== undefined && now - r.at < r.holdOffMs;
  }
}
