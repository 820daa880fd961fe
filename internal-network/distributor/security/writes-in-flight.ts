import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';

/** A signed message's identity within its device: what the replay window records (verifier.ts SignedId). */
interface SignedSeq {
  epoch: string;
  seq: number;
}

const idOf = (epoch: string, seq: number | undefined): string => `${epoch}\u0000${seq}`;

/**
 * The signed messages whose write is in progress, by device and (epoch, seq): the replay window
 * records a message only once its write succeeded (MessageVerifier's verdict commit), so a copy
 * checked meanwhile would pass as new and be written, and published on the stored feed, a second
 * time. Copies do come at the same time: the distributor's consumers each take a message at a time,
 * and a copy the broker delivers again (a consumer's connection that broke while its message was
 * being written) or a device sends again (its ack lost with its connection) lands in another
 * consumer. The copy waits for the first to settle, then is checked: a duplicate (receipted) if
 * the first was written, written itself if not. Never is it receipted before its message is durable.
 */
export class WritesInFlight {
  private readonly byDevice = new Map<string, Map<string, WriteClaim>>();

  /**
   * Settles when one of the envelope's signed messages being written now settles (look again
   * then: another may be); undefined when none is.
   */
  copyOf(env: Pick<UplinkEnvelope, 'deviceId' | 'messages'>): Promise<void> | undefined {
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
      for (let j = 0; j < count && i + j < messages.length; j++) {
        const claim = writing.get(idOf(auth.epoch, j === 0 ? auth.seq : messages[i + j]?.seq));
        if (claim !== undefined) return claim.settled;
      }
      i += count;
    }
    return undefined;
  }

  /** Marks these messages of `deviceId` as being written, until the claim's release. */
  claim(deviceId: string, ids: readonly SignedSeq[]): WriteClaim {
    const claim = new WriteClaim(this, deviceId, ids);
    if (ids.length === 0) return claim;
    let writing = this.byDevice.get(deviceId);
    if (writing === undefined) this.byDevice.set(deviceId, (writing = new Map()));
    for (const { epoch, seq } of ids) writing.set(idOf(epoch, seq), claim);
    return claim;
  }

  /** @internal WriteClaim.release */
  drop(claim: WriteClaim, deviceId: string, ids: readonly SignedSeq[]): void {
    const writing = this.byDevice.get(deviceId);
    if (writing === undefined) return;
    for (const { epoch, seq } of ids) {
      const id = idOf(epoch, seq);
      if (writing.get(id) === claim) writing.delete(id);
    }
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
    private readonly ids: readonly SignedSeq[],
  ) {
    this.settled = new Promise<void>((resolve) => {
      this.resolve = resolve;
    });
  }

  /** Lets the copies waiting for these messages be checked: call after the verdict's commit, or its write's failure. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.ids.length > 0) this.owner.drop(this, this.deviceId, this.ids);
    this.resolve();
  }
}
