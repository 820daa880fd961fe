import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { toRanges } from '../../shared/security/receipt-auth.ts';
import type { DurableQueue, QueuedMessage } from './queue/durable-queue.ts';
import { RejectedMessages, type Refusal } from './rejected.ts';

export interface SetAsideOptions {
  dataDir: string;
  /** bytes: FIELD_QUEUE_MAX_BYTES, shared by the queue, the outbox and what is set aside */
  maxBytes: number;
  queue: DurableQueue;
  /** bytes of the files waiting in the outbox */
  outboxBytes: () => number;
  /** messages set aside and let go of (the field client counts them as refused by the gateway) */
  onSetAside: (messages: number) => void;
  log: Logger;
}

/**
 * Messages the gateway refused for good, set aside (rejected.ts) within FIELD_QUEUE_MAX_BYTES: what
 * is set aside counts against the cap with the queue and the outbox, or a DMZ forging refusals of
 * everything would move all the device takes in aside, free the queue for more, and fill the disk.
 *
 * - New data is charged what is set aside, or at least the reserve kept for setting refusals aside
 *   (LIMITS.rejectedReservePercent of the cap), whichever is more (`charge`, the field client
 *   shares it with the queue).
 * - A refusal is set aside, in order, as far as it fits, and its messages are let go from the queue
 *   only once synced in rejected.jsonl. The rest are held: they stay in the queue (acknowledged to
 *   their producer, so never let go unwritten), are not sent again (`isHeld`), and are set aside
 *   once there is room. A line counts in full although its record is still in a segment, deleted
 *   only once all of it is committed: that is what the reserve is for, so a refusal after a long
 *   outage filled the queue still fits, and the queue behind it can empty.
 * - Every TIMINGS.rejectedCheckMs what is set aside is measured again (an operator may have moved it
 *   off the device: the room is new data's again, without a restart), and held refusals are set
 *   aside if they fit now. Held ones no longer in the queue (a genuine receipt came after all, or
 *   drop-oldest dropped them, counted there) are forgotten.
 *
 * Held messages are kept in memory only: after a restart they are sent again, and the gateway
 * refuses them again (or, a forgery over, takes them).
 */
export class SetAside {
  private readonly rejected: RejectedMessages;
  /** refused messages held in the queue for lack of room, with their refusal */
  private readonly held = new Map<number, Refusal>();
  /** bytes the first held message needs in rejected.jsonl: the queue is not read for them again before */
  private heldNeed = 0;
  /** bytes of maxBytes kept for setting refused messages aside (LIMITS.rejectedReservePercent) */
  readonly reserve: number;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly o: SetAsideOptions) {
    this.rejected = new RejectedMessages(o.dataDir, o.log);
    this.reserve = Math.floor((o.maxBytes * LIMITS.rejectedReservePercent) / 100);
    if (this.rejected.bytes > 0) {
      o.log.warn(
        { rejectedBytes: this.rejected.bytes, maxBytes: o.maxBytes, path: this.rejected.path },
        'refused messages set aside earlier (rejected.jsonl, rejected/) count against FIELD_QUEUE_MAX_BYTES: look at them, then move them off the device',
      );
    }
    this.timer = setInterval(() => this.check(), TIMINGS.rejectedCheckMs);
    this.timer.unref();
  }

  get path(): string {
    return this.rejected.path;
  }

  /** bytes set aside (rejected.jsonl, rejected/), counted against maxBytes */
  get bytes(): number {
    return this.rejected.bytes;
  }

  /** refused messages held in the queue for lack of room to set them aside */
  get heldCount(): number {
    return this.held.size;
  }

  /** bytes of maxBytes new data may not take: what is set aside, or the reserve if that is more */
  charge(): number {
    return Math.max(this.rejected.bytes, this.reserve);
  }

  /** true for a refused message waiting for room: it is not sent again */
  isHeld(seq: number): boolean {
    return this.held.has(seq);
  }

  /** Measures again what is set aside (after a file was moved into rejected/, or the operator moved things away). */
  measure(): void {
    this.rejected.measure();
  }

  /** Sets refused messages aside as far as they fit; holds the rest (see the class comment). */
  refuse(messages: readonly QueuedMessage[], refusal: Refusal): void {
    this.measure();
    this.setAside(messages.map((m) => ({ m, refusal })));
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** what /status shows */
  status(): { path: string; bytes: number; reservedBytes: number; held: number } {
    return { path: this.rejected.path, bytes: this.rejected.bytes, reservedBytes: this.reserve, held: this.held.size };
  }

  /** bytes left within maxBytes for setting messages aside: the cap less the queue, the outbox and what is set aside */
  private room(): number {
    return this.o.maxBytes - (this.o.queue.bytesOnDisk + this.o.outboxBytes() + this.rejected.bytes);
  }

  private setAside(entries: readonly { m: QueuedMessage; refusal: Refusal }[]): void {
    if (entries.length === 0) return;
    let room = this.room();
    const at = new Date().toISOString();
    let text = '';
    let fit = 0;
    let need = 0;
    for (const { m, refusal } of entries) {
      const line = this.rejected.line(m, refusal, at);
      const bytes = Buffer.byteLength(line, 'utf8');
      if (bytes > room) {
        need = bytes;
        break;
      }
      room -= bytes;
      text += line;
      fit++;
    }
    let failure: unknown;
    if (fit > 0) {
      try {
        this.rejected.write(text);
      } catch (err) {
        // The disk refused (full, failing): nothing counts as set aside, so nothing is let go.
        failure = err;
        need = 0; // tried again at the next look
        fit = 0;
      }
    }
    const done = entries.slice(0, fit);
    if (done.length > 0) {
      for (const { m } of done) this.held.delete(m.seq);
      this.o.queue.commitRanges(toRanges(done.map(({ m }) => m.seq)));
      this.o.onSetAside(done.length);
      this.o.log.error(
        { code: 'FIELD_MESSAGE_REFUSED', gatewayCode: (done[0] as (typeof done)[number]).refusal.code, messages: done.length, path: this.rejected.path },
        'message refused by the gateway; set aside whole',
      );
    }
    const rest = entries.slice(fit);
    if (rest.length === 0) return;
    let newly = 0;
    for (const { m, refusal } of rest) {
      if (!this.held.has(m.seq)) newly++;
      this.held.set(m.seq, refusal);
    }
    this.heldNeed = need;
    // Once per refusal, not at every look: held messages are not in flight, so nothing refuses them again.
    if (newly > 0 || failure !== undefined) {
      this.o.log.error(
        { code: 'FIELD_REJECTED_FULL', gatewayCode: (rest[0] as (typeof rest)[number]).refusal.code, messages: rest.length, held: this.held.size, rejectedBytes: this.rejected.bytes, maxBytes: this.o.maxBytes, path: this.rejected.path, ...(failure !== undefined ? { err: failure } : {}) },
        failure !== undefined
          ? 'refused by the gateway, and the disk refused setting them aside; they stay in the queue, unsent'
          : 'refused by the gateway, and no room within FIELD_QUEUE_MAX_BYTES to set them aside; they stay in the queue, unsent, until rejected.jsonl and rejected/ are moved off the device',
      );
    }
  }

  private check(): void {
    this.rejected.measure();
    if (this.held.size === 0) return;
    for (const seq of this.held.keys()) if (!this.o.queue.has(seq)) this.held.delete(seq);
    // Not read back from disk while the first of them does not fit.
    if (this.held.size === 0 || this.room() < this.heldNeed) return;
    const messages = this.o.queue.read(new Set(this.held.keys()));
    this.setAside(messages.map((m) => ({ m, refusal: this.held.get(m.seq) as Refusal })));
  }
}
