import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';

/** An NBIRTH of an edge node refused (lifecycle.ts nodeBirthRefused): a bound between its sessions. */
export interface Boundary {
  /** its payload timestamp, the time it was published on the edge node's clock (undefined: none, or not decodable) */
  at: number | undefined;
  /** the connection it came on (undefined: unknown, or flagged DUP: sent before, on an earlier one) */
  on: object | undefined;
  /** when it arrived: it is forgotten TIMINGS.sparkplugResendWindowMs later */
  arrived: number;
}

/**
 * The NBIRTHs of each edge node refused lately, kept whether or not a birth was taken since and
 * whether or not a session was there for them to end (held.ts keeps what the last of them means for
 * the session awaiting its death: Previous.refusedBdSeq). Each began a session whose aliases could
 * not be read (Sparkplug 3.0.0 §5.7, tck-id-operational-behavior-edge-node-birth-sequence-num), so
 * what the edge node published after it and before the next birth taken belongs to that session:
 * sent again later (resend.ts), it is refused as not born, never read against an older birth's
 * aliases, and an NBIRTH sent again published before it never takes its place as current.
 * Bounded: LIMITS.sparkplugRefusedBirthsPerNode per edge node, the oldest forgotten first, edge nodes
 * at most `maxEdgeNodes` (the one whose last refused birth came first forgotten), each kept for
 * TIMINGS.sparkplugResendWindowMs as the previous sessions are. Lists replaced, never changed, so
 * that an undo puts back the one a message found (undo.ts).
 */
export class RefusedBirths {
  private readonly byNode = new Map<string, readonly Boundary[]>();

  constructor(private readonly maxEdgeNodes: number) {}

  /** The refused births of `k` remembered, in the order they came (none: empty). */
  of(k: string): readonly Boundary[] {
    return this.byNode.get(k) ?? [];
  }

  /** Puts back the list `k` had (undo.ts); undefined or empty: none. */
  put(k: string, list: readonly Boundary[] | undefined): void {
    if (list && list.length > 0) this.byNode.set(k, list);
    else this.byNode.delete(k);
  }

  /** Another NBIRTH of `k` refused, at `now`. */
  add(k: string, b: Boundary): void {
    const list = [...this.of(k), b].slice(-LIMITS.sparkplugRefusedBirthsPerNode);
    // Last in the map: the edge node whose birth was refused last (expire relies on that order).
    this.byNode.delete(k);
    for (const [other] of this.byNode) {
      if (this.byNode.size < this.maxEdgeNodes) break;
      this.byNode.delete(other);
    }
    this.byNode.set(k, list);
  }

  /** The latest payload timestamp of a refused birth of `k` remembered (undefined: none known). */
  latestAt(k: string): number | undefined {
    let latest: number | undefined;
    for (const b of this.of(k)) if (b.at !== undefined && (latest === undefined || b.at > latest)) latest = b.at;
    return latest;
  }

  /** Whether a birth of `k` was refused after `from` and at or before `to` (payload timestamps, the edge node's clock). */
  between(k: string, from: number, to: number): boolean {
    return this.of(k).some((b) => b.at !== undefined && b.at > from && b.at <= to);
  }

  /** Whether a birth of `k` remembered was refused on `connection`. */
  cameOn(k: string, connection: object): boolean {
    return this.of(k).some((b) => b.on === connection);
  }

  /** Forgets the refused births that arrived TIMINGS.sparkplugResendWindowMs ago or longer: nothing is sent again so late. */
  expire(now: number, k?: string): void {
    for (const [other, list] of this.byNode) {
      if (list.some((b) => now - b.arrived < TIMINGS.sparkplugResendWindowMs)) break;
      this.byNode.delete(other);
    }
    const list = k === undefined ? undefined : this.byNode.get(k);
    if (!list || k === undefined) return;
    const kept = list.filter((b) => now - b.arrived < TIMINGS.sparkplugResendWindowMs);
    if (kept.length !== list.length) this.put(k, kept);
  }
}
