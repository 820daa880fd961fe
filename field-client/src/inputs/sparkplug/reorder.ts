import type { ErrorCode } from '../../../../shared/errors.ts';
import type { Digest } from './duplicates.ts';
import type { HeldMessage, HostOutcome, NodeSession } from './host.ts';
import type { SparkplugPayload } from './payload.ts';
import type { SparkplugTopic } from './topic.ts';

export const emptyOutcome = (): HostOutcome => ({ readings: [], events: [], rebirth: false, skipped: 0, held: false, released: [] });

/**
 * bytes. What a decoded message held takes in memory, estimated from above: its object and each
 * metric's (~200 bytes measured on Node 20, rounded up), their names and string values at two bytes
 * per character (bytes, datasets and templates are not kept once decoded: payload.ts).
 */
const MESSAGE_BYTES = 256;
const METRIC_BYTES = 256;
function heldBytes(p: SparkplugPayload): number {
  let n = MESSAGE_BYTES;
  for (const m of p.metrics) n += METRIC_BYTES + 2 * ((m.name?.length ?? 0) + (m.raw.kind === 'string' ? m.raw.v.length : 0));
  return n;
}

/**
 * The host application's reorder buffers, one per edge node: Sparkplug 3.0.0 §5.9 "Sparkplug Host
 * Application Message Ordering". Messages of one edge node travel on several topics, and a
 * clustered MQTT server may deliver them out of order; so a message whose `seq` is ahead of the
 * next one expected is held, and the 'Reorder Timeout' starts
 * (tck-id-operational-behavior-host-reordering-start). When the missing message arrives, it and
 * the held ones that follow it are taken in seq order and the timer stops
 * (tck-id-operational-behavior-host-reordering-success); if more are still missing after that, the
 * timer starts again for them. When the timeout elapses first, a Rebirth NCMD is sent
 * (tck-id-operational-behavior-host-reordering-rebirth).
 *
 * What is held is then discarded, not stored: §5.9 leaves it to the host application whether
 * messages after a missing one are processed, and here the missing one may have been a DBIRTH
 * that changed a device's aliases, so taking what follows it could store values under the wrong
 * names. The edge node's rebirth sends its current values again. Nothing discarded was
 * acknowledged: Sparkplug data is published at QoS 0 (§5.2), and the input that takes QoS 1
 * publishes (the local MQTT input, one connection per edge node, in order) holds nothing
 * (timeout 0). Held messages are bounded per edge node (maxHeld) and in bytes over all of them
 * (maxHeldBytes, estimated: a publisher of many edge nodes cannot hold maxHeld payloads of 4 MiB
 * for each), and a new NBIRTH or an NDEATH ends the session they belonged to, so they are
 * discarded then too.
 *
 * `timeoutMs` 0: nothing is held, a gap asks for a rebirth at once (§5.9: "In these cases this
 * timeout could be zero"). Pure: no timers, the time passed in; the session arms one timer for
 * `nextDeadline()`.
 */
export class ReorderBuffers {
  /** keys of the edge nodes holding messages */
  private readonly holding = new Set<string>();
  /** the estimated bytes of every message held (heldBytes) */
  private bytes = 0;
  /**
   * nextDeadline's answer, null when to be worked out again: only when an edge node starts or stops
   * holding, or its timeout starts again. Worked out after every message (session.ts arm), a look
   * through every edge node holding made each message of any edge node cost thousands of steps
   * while thousands held one.
   */
  private deadline: number | undefined | null = null;

  constructor(
    private readonly o: { timeoutMs: number; maxHeld: number; maxHeldBytes: number },
    private readonly session: (k: string) => NodeSession | undefined,
    private readonly askRebirth: (group: string, edge: string, now: number, reason: string, out: HostOutcome) => void,
    private readonly process: (t: SparkplugTopic, p: SparkplugPayload, now: number, digest: Digest | undefined) => HostOutcome,
  ) {}

  /** Messages held now, over all edge nodes. */
  get held(): number {
    let n = 0;
    for (const k of this.holding) n += this.session(k)?.held.size ?? 0;
    return n;
  }

  /** Estimated bytes of the messages held now, over all edge nodes. */
  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Holds a message whose seq is ahead of `expected` by at most maxHeld; false when it cannot be
   * (no timeout, too far ahead, or no room left in maxHeldBytes: then it is a gap at once). A seq
   * held already keeps its first message (a duplicate delivery).
   */
  hold(k: string, s: NodeSession, m: Omit<HeldMessage, 'bytes'>, expected: number, now: number): boolean {
    if (this.o.timeoutMs <= 0 || m.p.seq === undefined) return false;
    const ahead = (m.p.seq - expected + 256) % 256;
    if (ahead < 1 || ahead > this.o.maxHeld) return false;
    if (!s.held.has(m.p.seq)) {
      const bytes = heldBytes(m.p);
      if (this.bytes + bytes > this.o.maxHeldBytes) return false;
      this.bytes += bytes;
      s.held.set(m.p.seq, { ...m, bytes });
    }
    if (s.heldSince === undefined || !this.holding.has(k)) this.deadline = null;
    s.heldSince ??= now;
    this.holding.add(k);
    return true;
  }

  /** After a message was taken: the held ones that now follow in seq order, into `out.released`. */
  release(k: string, now: number, out: HostOutcome): void {
    const s = this.session(k);
    if (!s || s.held.size === 0) return;
    let released = 0;
    while (!s.stale) {
      const next = (s.seq + 1) % 256;
      const m = s.held.get(next);
      if (!m) break;
      s.held.delete(next);
      this.bytes -= m.bytes;
      released++;
      const o = this.process(m.t, m.p, now, m.digest);
      out.released.push({ topic: m.t, out: o });
      // A refused message may not have moved the seq on: stop rather than loop on it.
      if (s.seq !== next) break;
    }
    if (released === 0) return;
    this.deadline = null;
    if (s.held.size === 0 || s.stale) this.drop(k, 'SPARKPLUG_SEQ_GAP', 'held messages discarded: their session awaits a rebirth', out);
    // §5.9: still missing ones after the gap that just closed: a new timeout for them.
    else s.heldSince = now;
  }

  /** Discards what an edge node holds, counted under `code` in `out.dropped`. */
  drop(k: string, code: ErrorCode, message: string, out: HostOutcome): void {
    const s = this.session(k);
    if (this.holding.delete(k) || s?.heldSince !== undefined) this.deadline = null;
    if (!s) return;
    const count = s.held.size;
    for (const m of s.held.values()) this.bytes -= m.bytes;
    s.held.clear();
    s.heldSince = undefined;
    if (count > 0) out.dropped = { code, count, message: `${message} (${count})` };
  }

  /** When the earliest reorder timeout ends, or undefined when nothing is held. */
  nextDeadline(): number | undefined {
    if (this.deadline !== null) return this.deadline;
    let at: number | undefined;
    for (const k of this.holding) {
      const since = this.session(k)?.heldSince;
      if (since !== undefined && (at === undefined || since + this.o.timeoutMs < at)) at = since + this.o.timeoutMs;
    }
    this.deadline = at;
    return at;
  }

  /** The edge nodes whose reorder timeout is over at `now`: held messages discarded, a rebirth asked for. */
  expire(now: number): Array<{ group: string; edge: string; out: HostOutcome }> {
    const expired: Array<{ group: string; edge: string; out: HostOutcome }> = [];
    this.deadline = null;
    for (const k of [...this.holding]) {
      const s = this.session(k);
      if (!s || s.heldSince === undefined) {
        this.holding.delete(k);
        continue;
      }
      if (now - s.heldSince < this.o.timeoutMs) continue;
      const [group, edge] = k.split('\u0000') as [string, string];
      const out = emptyOutcome();
      const missing = (s.seq + 1) % 256;
      const reason = `seq ${missing} of ${group}/${edge} did not arrive within the reorder timeout (${this.o.timeoutMs} ms)`;
      // Until the rebirth, its data is refused like after any gap.
      s.stale = true;
      this.drop(k, 'SPARKPLUG_REORDER_TIMEOUT', `${reason}: the messages held after it are discarded`, out);
      this.askRebirth(group, edge, now, reason, out);
      expired.push({ group, edge, out });
    }
    return expired;
  }
}
