import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';

type Message = UplinkEnvelope['messages'][number];
type Auth = NonNullable<Message['auth']>;

/** A signed message's identity within its device: what the replay window records (verifier.ts SignedId). */
interface SignedSeq {
  epoch: string;
  seq: number;
}

/** The sequence numbers from..to (inclusive) of one epoch: what a claim holds of that epoch. */
interface Span {
  epoch: string;
  from: number;
  to: number;
}

function spanOf(spans: readonly Span[], epoch: string): Span | undefined {
  for (const s of spans) if (s.epoch === epoch) return s;
  return undefined;
}

/**
 * The signed messages whose write is in progress, by device: the replay window records a message
 * only once its write succeeded (MessageVerifier's verdict commit), so a copy checked meanwhile
 * would pass as new and be written, and published on the stored feed, a second time. Copies do come
 * at the same time: the distributor's consumers each take a message at a time, and a copy the broker
 * delivers again (a consumer's connection that broke while its message was being written) or a
 * device sends again (its ack lost with its connection) lands in another consumer. The copy waits
 * for the first to settle, then is checked: a duplicate (receipted) if the first was written,
 * written itself if not. Never is it receipted before its message is durable.
 *
 * A claim holds, per epoch, the span from its lowest sequence number to its highest: a message is
 * held when its number lies in the span of a write in progress. The messages of one envelope are a
 * run of numbers, so a span is what it holds; a number inside a span that a write does not hold (a
 * gap in it) only waits for that write, which always settles. Spans, not one entry per message: a
 * batched envelope is a thousand readings, and a key and a map entry each, made and looked up at
 * every check, were a cost per reading.
 */
export class WritesInFlight {
  private readonly byDevice = new Map<string, Set<WriteClaim>>();

  /**
   * Settles when a write in progress that holds one of the envelope's signed messages settles (look
   * again then: another may); undefined when none does.
   *
   * `signed`: whether the device signed a group (its MAC verifies), asked only of a group whose span
   * meets a write in progress. Its numbers are the DMZ's word until then: a forged group from 0 to
   * 2^53 − 1 in a real device's epoch met every write of that device, and held the consumer that
   * took it (and what the broker queued behind it, of every device) for as long as the device's
   * writes followed one another without a pause — measured at seconds, unbounded in principle. A
   * group the device signed holds numbers it gave out already, so only the writes of those (a
   * finite set: the copies) can hold it.
   */
  copyOf<E extends Pick<UplinkEnvelope, 'deviceId' | 'messages'>>(env: E, signed: (env: E, auth: Auth, group: readonly Message[]) => boolean): Promise<void> | undefined {
    const writing = this.byDevice.get(env.deviceId);
    if (writing === undefined) return undefined;
    const messages = env.messages;
    for (let i = 0; i < messages.length; ) {
      const auth = messages[i]?.auth;
      if (!auth) {
        i++;
        continue;
      }
      // One message (version 1), or the group its auth starts (version 2: the first seq in the
      // auth, the others' beside their messages), as the verifier walks them.
      const count = auth.v === 1 ? 1 : Math.max(1, auth.count);
      let from = auth.seq;
      let to = auth.seq;
      for (let j = 1; j < count && i + j < messages.length; j++) {
        const seq = messages[i + j]?.seq;
        if (seq === undefined) continue;
        if (seq < from) from = seq;
        if (seq > to) to = seq;
      }
      for (const claim of writing) {
        if (!claim.overlaps(auth.epoch, from, to)) continue;
        if (signed(env, auth, messages.slice(i, i + count))) return claim.settled;
        break; // forged: refused by its check, which it need not wait for
      }
      i += count;
    }
    return undefined;
  }

  /** Marks these messages of `deviceId` as being written, until the claim's release. */
  claim(deviceId: string, ids: readonly SignedSeq[]): WriteClaim {
    const spans: Span[] = [];
    for (const { epoch, seq } of ids) {
      // Most often one epoch: the last span is the one.
      let span = spans[spans.length - 1];
      if (span !== undefined && span.epoch !== epoch) span = spanOf(spans, epoch);
      if (span === undefined) spans.push({ epoch, from: seq, to: seq });
      else if (seq < span.from) span.from = seq;
      else if (seq > span.to) span.to = seq;
    }
    const claim = new WriteClaim(this, deviceId, spans);
    if (spans.length === 0) return claim;
    let writing = this.byDevice.get(deviceId);
    if (writing === undefined) this.byDevice.set(deviceId, (writing = new Set()));
    writing.add(claim);
    return claim;
  }

  /** @internal WriteClaim.release */
  drop(claim: WriteClaim, deviceId: string): void {
    const writing = this.byDevice.get(deviceId);
    if (writing === undefined) return;
    writing.delete(claim);
    if (writing.size === 0) this.byDevice.delete(deviceId);
  }

  /** How many devices have messages being written (for tests: every claim released leaves none). */
  get devices(): number {
    return this.byDevice.size;
  }
}

/** A check's messages being written: released once their write settled, succeeded (and recorded) or not. */
export class WriteClaim {
  readonly settled: Promise<void>;
  private resolve!: () => void;
  private released = false;

  constructor(
    private readonly owner: WritesInFlight,
    private readonly deviceId: string,
    private readonly spans: readonly Span[],
  ) {
    this.settled = new Promise<void>((resolve) => {
      this.resolve = resolve;
    });
  }

  /** Whether this write holds a number from..to of `epoch`. */
  overlaps(epoch: string, from: number, to: number): boolean {
    for (const s of this.spans) if (s.epoch === epoch && s.from <= to && from <= s.to) return true;
    return false;
  }

  /** Lets the copies waiting for these messages be checked: call after the verdict's commit, or its write's failure. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.spans.length > 0) this.owner.drop(this, this.deviceId);
    this.resolve();
  }
}
