import type { ErrorCode } from '../../../../shared/errors.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import type { HostOutcome, NodeSession } from './host-types.ts';
import { key } from './host-types.ts';
import { lifecycleEvent } from './mapping.ts';

/** What refuses a birth for a bound: the same birth asked again would be refused again. */
export const BOUND_CODES: readonly ErrorCode[] = ['SPARKPLUG_TOO_MANY_EDGE_NODES', 'SPARKPLUG_TOO_MANY_DEVICES', 'SPARKPLUG_DEFINITIONS_FULL', 'SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL'];

/**
 * What of one edge node was refused in a row, each time after the birth a rebirth brought (see
 * RebirthRequests): its births, or its data against births taken.
 */
interface Refusals {
  /** how many */
  count: number;
  /** when the last one was refused */
  at: number;
  /** how long after it the requests it holds off are held off */
  holdOffMs: number;
  /**
   * data refused for a metric its birth did not declare made this session stale, at this seq
   * (staleAfterRefused); weakly held: a session replaced since is not kept, its definitions uncounted
   */
  stale?: { s: WeakRef<NodeSession>; seq: number } | undefined;
}

/**
 * When the host asks an edge node to rebirth (§5.12 "Host Application Rebirth Request": NCMD with
 * `Node Control/Rebirth` = true), per edge node:
 *
 * - at most once every `minIntervalMs`, so that a node that keeps gapping is asked again, but not
 *   once per message;
 * - less and less often while what it sends is refused the same after each rebirth: a birth refused
 *   for what it holds (an NBIRTH or a DBIRTH that cannot be decoded, one without bdSeq, a metric
 *   without a data type...) or past a bound (BOUND_CODES), or data naming a metric its birth did not
 *   declare (SPARKPLUG_UNKNOWN_METRIC), asks for a rebirth through itself or the data refused as not
 *   born after it, and the rebirth brings every birth of the edge node again, the others' values and
 *   events queued again each time. Useful once (a birth lost, or the edge node's state fixed since),
 *   it is useless when the edge node sends the same birth, or the same data after the same birth,
 *   each time: asked every interval, it did so for as long as it ran. So after
 *   LIMITS.sparkplugRefusedBirthsBeforeBackoff such refusals of an edge node in a row, those requests
 *   are held off for twice as long after each one (from `minIntervalMs`: 10 s, 20 s, 40 s...), at
 *   most `afterBoundMs`; a birth refused for a bound holds them off `afterBoundMs` at once, as it
 *   would come back the same until a death makes room. A gap, and data refused after one (its session
 *   stale), still ask at the usual pace (see SparkplugHost): a message lost on the way is not sent
 *   again the same. Only `afterBoundMs` past the hold-off with nothing refused starts the count
 *   again: a while longer than any hold-off, in which an edge node in that loop, asked again, would
 *   have been refused again. What is taken between two refusals does not: an edge node whose births
 *   and one data message are taken after each rebirth, the next message refused, is in the loop all
 *   the same, and while that good exchange started the count again it was asked every interval for
 *   as long as it ran.
 *
 * Each map holds at most `maxEdgeNodes` edge nodes: a publisher inventing edge node ids cannot grow
 * them without bound.
 */
export class RebirthRequests {
  /** when each edge node was last asked, the one asked longest ago first (see ask) */
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
      // Only the requests still inside their interval need remembering. In the order they were made,
      // so the look stops at the first still inside: a look through every one, at every request for
      // another edge node while all were inside, cost LIMITS.sparkplugMaxEdgeNodes steps each, and
      // data from invented edge node ids held the event loop for seconds.
      for (const [other, at] of this.askedAt) {
        if (now - at < this.o.minIntervalMs) break;
        this.askedAt.delete(other);
      }
      if (this.askedAt.size >= this.o.maxEdgeNodes) return;
    }
    // Last in the map: asked last (a Map keeps the order keys were first set in).
    this.askedAt.delete(k);
    this.askedAt.set(k, now);
    out.rebirth = true;
    out.events.push(lifecycleEvent('rebirth_requested', { group, edge }, now, { reason }));
  }

  /**
   * What edge node `k` sent was refused at `now`, the same as a rebirth would bring: a birth (its
   * NBIRTH or a DBIRTH) for a bound (`bound`, BOUND_CODES) or for what it holds, or data of the edge
   * node or a device naming a metric its birth did not declare, which made session `stale` stale. In a
   * row with the last one unless that was `afterBoundMs` past its hold-off (see the class).
   */
  refused(k: string, now: number, bound: boolean, stale?: NodeSession): void {
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
    this.refusals.set(k, { count, at: now, holdOffMs, stale: stale && { s: new WeakRef(stale), seq: stale.seq } });
  }

  /** Whether a birth of edge node `k` refused, its data refused for a metric its birth did not declare, or its data refused as not born after those, asks no rebirth at `now` (see the class). */
  heldOff(k: string, now: number): boolean {
    const r = this.refusals.get(k);
    return r !== undefined && now - r.at < r.holdOffMs;
  }

  /**
   * Whether session `s` of edge node `k` is stale for the data it refused as naming a metric its birth
   * did not declare (refused), not for a gap: its data refused as not born is held off as that data
   * was (heldOff). Its seq tells: a message undone puts it back, and a gap after that takes none.
   */
  staleAfterRefused(k: string, s: NodeSession): boolean {
    const stale = this.refusals.get(k)?.stale;
    return stale !== undefined && stale.s.deref() === s && stale.seq === s.seq;
  }
}
