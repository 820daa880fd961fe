import { LIMITS, TIMINGS } from '../../shared/limits.ts';

/** One frame handed to the socket: its last message id, `sent` (bytes) once it was, and when (performance.now()). */
interface FrameEnd {
  id: string;
  end: number;
  at: number;
}

/**
 * How much the field client keeps handed to its connection and not yet answered by the gateway: as
 * much as the link, by its measured rate, carries in TIMINGS.fieldSendAheadMs, and at least one
 * frame. A frame is signed when it is handed over (the distributor holds its arrival at the gateway
 * to that: DISTRIBUTOR_TRANSIT_MAX_S), and waits behind everything handed over before it, in ws's
 * buffer, the kernel's and the network's. On a link of tens of kbit/s a window of file chunks (or
 * ws's buffer bound, LIMITS.fieldSendBufferMaxBytes) is many minutes of it: frames arrived past the
 * transit bound, were refused as stale and sent again for ever, and a reading queued behind
 * megabytes of file. Bounded by what the link carries in a few seconds, a frame reaches the gateway
 * a few seconds after its signing whatever the link, and a reading waits behind at most that and
 * the one frame in front of it (the pump sends messages before file chunks).
 *
 * The rate is measured from the gateway's answers (acks, error frames: it answers every frame, in
 * order), not from ws's buffer, which hides what the kernel holds: bytes answered over the time they
 * took, sampled at least TIMINGS.fieldSendRateSampleMs apart while something is outstanding, and
 * whenever everything is answered (see `measured`). The estimate outlives connections: the link is
 * the device's. Once a sample confirmed it as the link's, files taken are cut in chunks that cross
 * the link in TIMINGS.fieldSendAheadMs (chunkBytes).
 *
 * Per frame this costs one map entry; per acknowledged message one lookup. Not only the ack's last
 * id: the gateway publishes a frame's messages in a group per data type and acks each group at its
 * own PUBACK (dmz/gateway/device-session.ts), so a frame of readings and an event can be acked
 * event last, and an ack of several frames end with an id that ends none of them. Read by its last
 * id, such an ack answered nothing: the frames stayed outstanding for ever, and once they were more
 * than the budget (after a restart, while the rate is unknown: LIMITS.fieldSendAheadMinBytes) the
 * client sent nothing more on that connection.
 */
export class SendPacing {
  /** bytes handed over on this connection (the count goes on across `reset`) */
  private sent = 0;
  /** bytes of those answered (or given up on: `reset`) */
  private answered = 0;
  /** frames outstanding, oldest first (from `head`): their last message id and where they end */
  private frames: FrameEnd[] = [];
  private head = 0;
  /** last message id of an outstanding frame → its end (the latest frame, for an id sent again) */
  private readonly ends = new Map<string, number>();
  /** bytes per millisecond the link carried (undefined: not measured yet) */
  private rate: number | undefined;
  /** the current sample: since when (performance.now()), and `answered` then */
  private sampleAt = 0;
  private sampleFrom = 0;
  /**
   * The estimate was confirmed by a full sample that did not outrun it (see `measured`): it is the
   * link's rate, not a lower bound set by a client with little to send, nor by a budget still
   * growing towards a fast link's.
   */
  private linkBound = false;

  /** `knownBytesPerSecond`: the link's rate measured before a restart (link-rate.ts), gone by until measured again. */
  constructor(
    private readonly aheadMs: number = TIMINGS.fieldSendAheadMs,
    knownBytesPerSecond?: number,
  ) {
    if (knownBytesPerSecond !== undefined && knownBytesPerSecond > 0) {
      this.rate = knownBytesPerSecond / 1000;
      this.linkBound = true;
    }
  }

  /** bytes per second of the link, once a sample confirmed the estimate as the link's (undefined: not yet) */
  get linkBytesPerSecond(): number | undefined {
    return this.linkBound && this.rate !== undefined ? Math.round(this.rate * 1000) : undefined;
  }

  /** bytes handed over and not answered */
  get outstanding(): number {
    return this.sent - this.answered;
  }

  /** bytes that may be outstanding: the measured rate × TIMINGS.fieldSendAheadMs (within its bounds) */
  get budget(): number {
    if (this.rate === undefined) return LIMITS.fieldSendAheadMinBytes;
    return Math.min(LIMITS.fieldSendAheadMaxBytes, Math.max(LIMITS.fieldSendAheadMinBytes, this.rate * this.aheadMs));
  }

  /** bytes per second measured (undefined: not yet) */
  get bytesPerSecond(): number | undefined {
    return this.rate === undefined ? undefined : Math.round(this.rate * 1000);
  }

  /**
   * bytes: the file chunk whose frame (base64: 4/3 of it) crosses the link in TIMINGS.fieldSendAheadMs
   * at the rate measured, at least LIMITS.fieldFileChunkMinBytes; undefined while the link's rate is
   * not known (a client that never had more to send than its link carries knows only a lower bound of
   * it, and chunks too small for a fast link would cost it a receipt, and a write, per few KiB).
   */
  chunkBytes(): number | undefined {
    if (!this.linkBound || this.rate === undefined) return undefined;
    return Math.max(LIMITS.fieldFileChunkMinBytes, Math.floor((this.rate * this.aheadMs * 3) / 4));
  }

  /**
   * bytes another frame may take now (0: none may go): what the budget leaves, or the whole budget
   * with nothing outstanding. A frame takes at least one message (or chunk), so one always goes
   * when nothing is outstanding, whatever its size.
   */
  room(): number {
    const budget = this.budget;
    const out = this.sent - this.answered;
    return out === 0 ? budget : Math.max(0, budget - out);
  }

  /** A frame of `bytes` whose last message is `lastId` was handed over. */
  handed(lastId: string, bytes: number, now: number): void {
    if (this.sent === this.answered) {
      // Idle until now: the sample starts with this frame.
      this.sampleAt = now;
      this.sampleFrom = this.answered;
    }
    this.sent += bytes;
    this.frames.push({ id: lastId, end: this.sent, at: now });
    this.ends.set(lastId, this.sent);
  }

  /**
   * The gateway acknowledged messages: the latest frame any of them ends, and every one before it,
   * are answered (whatever their order: see the class comment).
   */
  acked(ids: readonly string[], now: number): void {
    const end = this.latestEnd(ids);
    if (end !== undefined) this.answer(end, now);
  }

  /**
   * The gateway refused messages: as `acked`, any of them may end a frame (a refusal names the
   * messages refused, not always the frame's last). One that names none of ours (a frame refused
   * whole, unparsed) answers the oldest outstanding frame: the gateway answers each frame once, in order.
   */
  refused(ids: readonly string[], now: number): void {
    const end = this.latestEnd(ids) ?? this.frames[this.head]?.end;
    if (end !== undefined) this.answer(end, now);
  }

  /** The end of the latest outstanding frame one of `ids` ends (undefined: none). */
  private latestEnd(ids: readonly string[]): number | undefined {
    let end: number | undefined;
    for (const id of ids) {
      const e = this.ends.get(id);
      if (e !== undefined && (end === undefined || e > end)) end = e;
    }
    return end;
  }

  /**
   * Nothing outstanding any more: a new connection, or everything is sent again (what was handed
   * over is answered, or never will be on this connection). The rate is kept.
   */
  reset(): void {
    this.answered = this.sent;
    this.frames = [];
    this.head = 0;
    this.ends.clear();
  }

  /**
   * The frames handed over at or before `before` (performance.now()) and still unanswered are given
   * up on: the gateway answers every frame, in order, within seconds, so one unanswered for the
   * commit timeout never will be on this connection, and what it carried is sent again as overdue
   * (commit-receipts.ts). Held, their bytes kept the budget from that resend (and, past it, from
   * everything) until the connection happened to drop. Not a sample of the link's rate: the sample
   * starts again at `now`. Returns true when any frame was given up on.
   */
  giveUp(before: number, now: number): boolean {
    let end: number | undefined;
    for (let i = this.head; i < this.frames.length && (this.frames[i] as FrameEnd).at <= before; i++) end = (this.frames[i] as FrameEnd).end;
    if (end === undefined || end <= this.answered) return false;
    this.answered = end;
    this.dropThrough(end);
    this.sampleAt = now;
    this.sampleFrom = this.answered;
    return true;
  }

  /** Forgets the outstanding frames that end at or before `end` (answered, or given up on). */
  private dropThrough(end: number): void {
    const frames = this.frames;
    while (this.head < frames.length && (frames[this.head] as FrameEnd).end <= end) {
      const f = frames[this.head++] as FrameEnd;
      if (this.ends.get(f.id) === f.end) this.ends.delete(f.id);
    }
    if (this.head > 1024 && this.head * 2 > frames.length) {
      this.frames = frames.slice(this.head);
      this.head = 0;
    }
  }

  private answer(end: number, now: number): void {
    if (end <= this.answered) return;
    // Half the budget or more was outstanding until this answer: a client with little to send keeps
    // far less than seconds of its link outstanding (a round trip's worth), so the link (or the
    // gateway) is what held it to the rate it got.
    const full = this.sent - this.answered >= this.budget / 2;
    this.answered = end;
    this.dropThrough(end);
    const idle = this.sent === this.answered;
    const elapsed = now - this.sampleAt;
    if (!idle && elapsed < TIMINGS.fieldSendRateSampleMs) return;
    if (elapsed > 0) this.measured((this.answered - this.sampleFrom) / elapsed, full);
    this.sampleAt = now;
    this.sampleFrom = this.answered;
  }

  /**
   * Every sample is a lower bound of what the link carries: one above the estimate raises it. One
   * below lowers it only when it was `full` (a link that got slower, not a client with little to
   * send), halfway (answers come in clumps: GATEWAY_ACK_HOLD_MS). A full sample not far above the
   * estimate confirms it as the link's; one far above is a budget growing towards a fast link's
   * (it grows by its seconds over a round trip at each sample).
   */
  private measured(sample: number, full: boolean): void {
    if (full && this.rate !== undefined && sample <= this.rate * 1.5) this.linkBound = true;
    if (this.rate === undefined || sample > this.rate) this.rate = sample;
    else if (full) this.rate = (this.rate + sample) / 2;
  }
}
