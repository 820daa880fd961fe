import type { ErrorCode } from '../../../../shared/errors.ts';
import type { HostOutcome } from './host-types.ts';
import { key } from './host-types.ts';
import { lifecycleEvent } from './mapping.ts';

/** What refuses a birth for a bound: the same birth asked again would be refused again. */
export const BOUND_CODES: readonly ErrorCode[] = ['SPARKPLUG_TOO_MANY_EDGE_NODES', 'SPARKPLUG_TOO_MANY_DEVICES', 'SPARKPLUG_DEFINITIONS_FULL'];

/**
 * When the host asks an edge node to rebirth (§5.12 "Host Application Rebirth Request": NCMD with
 * `Node Control/Rebirth` = true), per edge node:
 *
 * - at most once every `minIntervalMs`, so that a node that keeps gapping is asked again, but not
 *   once per message;
 * - not for its data refused as not born for `afterBoundMs` after one of its births (its NBIRTH or
 *   a DBIRTH) was refused for a bound (BOUND_CODES). Such a birth asks for none: it would come back
 *   the same. Its data asked all the same, as not born, once per interval: every 5 s the edge node
 *   sent every birth again, the refused one refused again and the others' values and events stored
 *   again, for as long as it ran. It is asked again once the hold-off is over, as a death may have
 *   made room meanwhile. A gap, and data refused after one (its session stale), still ask at the
 *   usual pace (see SparkplugHost), and a birth of the edge node taken ends the hold-off.
 *
 * Each map holds at most `maxEdgeNodes` edge nodes: a publisher inventing edge node ids cannot grow
 * them without bound.
 */
export class RebirthRequests {
  /** when each edge node was last asked */
  private readonly askedAt = new Map<string, number>();
  /** when a birth of each edge node was last refused for a bound, latest last */
  private readonly boundAt = new Map<string, number>();

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

  /** A birth of edge node `k` was refused for a bound at `now` (BOUND_CODES). */
  refusedForBound(k: string, now: number): void {
    this.boundAt.delete(k);
    // Those whose hold-off is over first (latest last, so they lead), then, still full, the oldest:
    // forgotten, its data asks at the usual pace again.
    for (const [other, at] of this.boundAt) {
      if (this.boundAt.size < this.o.maxEdgeNodes && now - at < this.o.afterBoundMs) break;
      this.boundAt.delete(other);
    }
    this.boundAt.set(k, now);
  }

  /** An NBIRTH of edge node `k` was taken: its data asks as any edge node's again. */
  born(k: string): void {
    this.boundAt.delete(k);
  }

  /** Whether data of edge node `k` refused as not born asks no rebirth at `now` (see the class). */
  heldOff(k: string, now: number): boolean {
    const at = this.boundAt.get(k);
    return at !== undefined && now - at < this.o.afterBoundMs;
  }
}
