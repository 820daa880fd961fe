import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import { encodeRecordInto, HEADER_BYTES, recordBytes } from './record-codec.ts';
import { SegmentReader } from './segment-reader.ts';
import { TailCache } from './tail-cache.ts';

/**
 * The field client's store-and-forward queue on disk.
 *
 * - Every accepted message is appended to a segment file (records with a CRC-32 each) and, with the
 *   default sync policy, fsync'ed before `append` resolves: only then is it acknowledged to the
 *   producer. Appends arriving while a write is in flight share the next write and fsync.
 * - It stays until the gateway's ack for it arrives. Acks may come out of order; the queue keeps
 *   the watermark below which everything is acked (persisted in ack.json) and the acked sequence
 *   numbers above it. A segment whose records are all acked is deleted.
 * - After a crash, a torn or corrupt tail is cut off where the last good record ends, and counted;
 *   everything before it is kept. Acks given since the last ack.json write are forgotten, so a few
 *   messages may be sent again: the database write is idempotent, so that costs nothing.
 * - Its size on disk is bounded (maxBytes). When full, it either refuses new data
 *   (FIELD_QUEUE_FULL, counted in `refused`) or drops its oldest segment (counted in `dropped`).
 * - While a sender is reading (between `next` and `rewind`), the newest records written are also
 *   kept in memory (at most TAIL_CACHE_BYTES), keyed by where they are in their segment: a sender
 *   that keeps up gets them without reading them back from disk. What is kept is the text that was
 *   written, so it is exactly what the disk would give.
 */
export interface QueueItem {
  dataType: string;
  payload: unknown;
}

/** A message as the sender gets it: its payload as the JSON text that was queued. */
export interface OutgoingMessage {
  seq: number;
  messageId: string;
  dataType: string;
  payloadJson: string;
  acceptedAt: number;
}

export interface QueuedMessage extends QueueItem {
  seq: number;
  /** `EPOCH.SEQ`: the queue's creation epoch and the sequence number, stable across restarts */
  messageId: string;
  /** epoch ms when it was accepted */
  acceptedAt: number;
}

export type SyncPolicy = { mode: 'always' } | { mode: 'interval'; ms: number };
export type FullPolicy = 'reject' | 'drop-oldest';

export interface QueueOptions {
  dir: string;
  /** bytes on disk, all segments */
  maxBytes: number;
  /** bytes per segment file */
  segmentBytes: number;
  fullPolicy: FullPolicy;
  sync: SyncPolicy;
  /** bytes of memory for records kept ahead of the sender (default TAIL_CACHE_BYTES) */
  tailCacheBytes?: number;
  log: Logger;
}

interface Segment {
  firstSeq: number;
  /** firstSeq - 1 while empty */
  lastSeq: number;
  path: string;
  /** bytes written (and, for the active segment, handed to the kernel) */
  bytes: number;
}

interface Pending {
  /** the records of one `append`, one after another */
  block: Buffer;
  /** bytes of each record in the block */
  sizes: number[];
  outgoing: OutgoingMessage[];
  messages: QueuedMessage[];
  resolve: (m: QueuedMessage[]) => void;
  reject: (e: unknown) => void;
}

/** bytes of memory for records kept ahead of the send cursor, unless the options say otherwise */
export const TAIL_CACHE_BYTES = 8 * 1024 * 1024;

/** A record's body: the message as JSON, its payload spliced in as the text already made for it. */
function recordBody(m: OutgoingMessage): string {
  return `{"seq":${m.seq},"messageId":${JSON.stringify(m.messageId)},"dataType":${JSON.stringify(m.dataType)},"payload":${m.payloadJson},"acceptedAt":${m.acceptedAt}}`;
}

const SEGMENT_RE = /^seg-(\d{16})\.log$/;
const segName = (firstSeq: number) => `seg-${String(firstSeq).padStart(16, '0')}.log`;

export class DurableQueue {
  private readonly segments: Segment[] = [];
  private active!: { seg: Segment; fh: FileHandle };
  private nextSeq = 1;
  private watermark = 0;
  private readonly ackedAbove = new Set<number>();
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private flushing = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  /** where the sender reads next: a segment and a byte offset in it (with a reader, when reading from disk) */
  private cursor: { seg: Segment; pos: number; reader?: SegmentReader } | undefined;
  /** the newest records of the active segment, by their offset, oldest first */
  private readonly tail: TailCache;
  private closed = false;
  readonly epoch: string;
  readonly stats = { appended: 0, acked: 0, dropped: 0, refused: 0, corruptTails: 0, lastAckAt: 0 };

  private constructor(private readonly o: QueueOptions) {
    this.tail = new TailCache(o.tailCacheBytes ?? TAIL_CACHE_BYTES);
    mkdirSync(o.dir, { recursive: true });
    const metaPath = join(o.dir, 'meta.json');
    if (!existsSync(metaPath)) writeFileSync(metaPath, JSON.stringify({ epoch: Date.now().toString(36) + randomBytes(2).toString('hex') }));
    this.epoch = (JSON.parse(readFileSync(metaPath, 'utf8')) as { epoch: string }).epoch;
    const ackPath = join(o.dir, 'ack.json');
    if (existsSync(ackPath)) {
      try {
        this.watermark = (JSON.parse(readFileSync(ackPath, 'utf8')) as { watermark: number }).watermark;
      } catch {
        o.log.warn({ code: 'FIELD_QUEUE_CORRUPT' }, 'ack.json unreadable; unacknowledged data will be sent again from the oldest segment');
      }
    }
  }

  static async open(o: QueueOptions): Promise<DurableQueue> {
    const q = new DurableQueue(o);
    q.recover();
    await q.openActive();
    return q;
  }

  /** Scans every segment: finds the last sequence number and cuts a torn or corrupt tail. */
  private recover(): void {
    const files = readdirSync(this.o.dir)
      .filter((f) => SEGMENT_RE.test(f))
      .sort();
    for (const file of files) {
      const path = join(this.o.dir, file);
      const firstSeq = Number(SEGMENT_RE.exec(file)?.[1]);
      const seg: Segment = { firstSeq, lastSeq: firstSeq - 1, path, bytes: statSync(path).size };
      const reader = new SegmentReader(path, 0, seg.bytes);
      let good = 0;
      let lastBody: Buffer | undefined;
      for (;;) {
        const r = reader.next();
        if (r === undefined) break;
        if ('corrupt' in r) {
          this.stats.corruptTails++;
          this.o.log.warn(
            { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: r.start, lostBytes: seg.bytes - r.start, reason: r.corrupt },
            'damaged queue record (torn write?); the segment is cut where its last good record ends',
          );
          break;
        }
        lastBody = r.body; // only the last record's sequence number is needed: parse just that one
        good = reader.position;
      }
      reader.close();
      if (lastBody) seg.lastSeq = (JSON.parse(lastBody.toString('utf8')) as QueuedMessage).seq;
      if (good < seg.bytes) {
        truncateSync(path, good);
        seg.bytes = good;
      }
      if (seg.lastSeq < seg.firstSeq && file !== files[files.length - 1]) {
        unlinkSync(path); // an empty segment in the middle holds nothing
        continue;
      }
      this.segments.push(seg);
    }
    const last = this.segments[this.segments.length - 1];
    this.nextSeq = Math.max(this.watermark + 1, last ? last.lastSeq + 1 : 1);
    const first = this.segments[0];
    if (first && this.watermark < first.firstSeq - 1) this.watermark = first.firstSeq - 1;
    this.deleteAckedSegments();
  }

  private async openActive(): Promise<void> {
    let seg = this.segments[this.segments.length - 1];
    if (!seg || seg.bytes >= this.o.segmentBytes) {
      seg = { firstSeq: this.nextSeq, lastSeq: this.nextSeq - 1, path: join(this.o.dir, segName(this.nextSeq)), bytes: 0 };
      this.segments.push(seg);
    }
    this.active = { seg, fh: await open(seg.path, 'a', 0o600) };
  }

  get depth(): number {
    return this.nextSeq - 1 - this.watermark - this.ackedAbove.size;
  }

  get bytesOnDisk(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0) + this.pendingBytes;
  }

  /**
   * Appends messages; resolves once they are on disk (per the sync policy). Each payload is
   * serialised here, once: changing a payload object afterwards changes nothing queued.
   */
  append(items: readonly QueueItem[]): Promise<QueuedMessage[]> {
    if (this.closed) return Promise.reject(new Error('queue closed'));
    const now = Date.now();
    const messages: QueuedMessage[] = [];
    const outgoing: OutgoingMessage[] = [];
    const bodies: string[] = [];
    const sizes: number[] = [];
    let size = 0;
    for (const item of items) {
      const seq = this.nextSeq + messages.length;
      let payloadJson: string | undefined;
      try {
        payloadJson = JSON.stringify(item.payload) as string | undefined;
      } catch (err) {
        // a cycle, or a BigInt: nothing that could be sent
        return Promise.reject(new FieldStreamError('FIELD_INPUT_INVALID', `The payload of a ${item.dataType} message cannot be JSON: ${(err as Error).message}`));
      }
      if (payloadJson === undefined) return Promise.reject(new FieldStreamError('FIELD_INPUT_INVALID', `The payload of a ${item.dataType} message is not JSON.`));
      const out: OutgoingMessage = { seq, messageId: `${this.epoch}.${seq}`, dataType: item.dataType, payloadJson, acceptedAt: now };
      const body = recordBody(out);
      const bytes = recordBytes(body);
      messages.push({ seq, messageId: out.messageId, dataType: item.dataType, payload: item.payload, acceptedAt: now });
      outgoing.push(out);
      bodies.push(body);
      sizes.push(bytes);
      size += bytes;
    }
    if (!this.makeRoom(size)) {
      this.stats.refused += items.length;
      return Promise.reject(
        new FieldStreamError('FIELD_QUEUE_FULL', `The queue holds ${this.bytesOnDisk} bytes of at most ${this.o.maxBytes}; refused ${items.length} message(s).`, {
          refused: this.stats.refused,
        }),
      );
    }
    // One buffer for the call's records: one allocation, and one piece to write, not one per record.
    const block = Buffer.allocUnsafe(size);
    for (let i = 0, at = 0; i < bodies.length; at += sizes[i] as number, i++) encodeRecordInto(block, at, bodies[i] as string);
    this.nextSeq += messages.length;
    this.pendingBytes += size;
    return new Promise((resolve, reject) => {
      this.pending.push({ block, sizes, outgoing, messages, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  /** true when `size` more bytes fit (after dropping old data, under drop-oldest). */
  private makeRoom(size: number): boolean {
    if (this.bytesOnDisk + size <= this.o.maxBytes) return true;
    if (this.o.fullPolicy === 'reject') return false;
    let droppedNow = 0;
    while (this.bytesOnDisk + size > this.o.maxBytes) {
      const oldest = this.segments[0];
      if (!oldest || oldest === this.active.seg) break;
      let lost = 0;
      for (let s = Math.max(oldest.firstSeq, this.watermark + 1); s <= oldest.lastSeq; s++) if (!this.ackedAbove.has(s)) lost++;
      for (let s = oldest.firstSeq; s <= oldest.lastSeq; s++) this.ackedAbove.delete(s);
      this.watermark = Math.max(this.watermark, oldest.lastSeq);
      if (this.cursor?.seg === oldest) this.closeCursor();
      this.segments.shift();
      unlinkSync(oldest.path);
      droppedNow += lost;
    }
    if (droppedNow > 0) {
      this.stats.dropped += droppedNow;
      this.o.log.warn({ code: 'FIELD_QUEUE_DROPPED_OLDEST', droppedNow, droppedTotal: this.stats.dropped }, 'queue full: dropped the oldest unsent messages');
      this.persistAck();
    }
    return this.bytesOnDisk + size <= this.o.maxBytes;
  }

  /** Group commit: everything appended while the previous write ran goes in one write and one fsync. */
  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      try {
        // One write per segment touched: the appends' blocks are gathered, not written one
        // syscall each; a block is cut where a segment ends.
        let parts: Buffer[] = [];
        let partMessages: OutgoingMessage[] = [];
        let partSizes: number[] = [];
        let partBytes = 0;
        let lastSeq = this.active.seg.lastSeq;
        const writeOut = async () => {
          if (parts.length === 0) return;
          const seg = this.active.seg;
          await this.active.fh.write(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, partBytes));
          // Kept only while a sender reads: for a client offline, holding records in memory
          // until they are let go would cost the garbage collector, for nothing.
          if (this.cursor) {
            for (let i = 0, at = seg.bytes; i < partSizes.length; at += partSizes[i] as number, i++) {
              const length = partSizes[i] as number;
              this.tail.add(seg, { start: at, end: at + length, bytes: length - HEADER_BYTES, message: partMessages[i] as OutgoingMessage });
            }
          }
          seg.bytes += partBytes;
          seg.lastSeq = lastSeq;
          this.pendingBytes -= partBytes;
          parts = [];
          partMessages = [];
          partSizes = [];
          partBytes = 0;
        };
        for (const p of batch) {
          let from = 0; // where the part of this block not yet gathered starts
          let to = 0;
          for (let i = 0; i < p.sizes.length; i++) {
            const size = p.sizes[i] as number;
            if (this.active.seg.bytes + partBytes > 0 && this.active.seg.bytes + partBytes + size > this.o.segmentBytes) {
              if (to > from) parts.push(p.block.subarray(from, to));
              from = to;
              await writeOut();
              await this.rotate();
            }
            partMessages.push(p.outgoing[i] as OutgoingMessage);
            partSizes.push(size);
            partBytes += size;
            to += size;
            lastSeq = (p.messages[i] as QueuedMessage).seq;
          }
          if (to > from) parts.push(from === 0 && to === p.block.length ? p.block : p.block.subarray(from, to));
        }
        await writeOut();
        if (this.o.sync.mode === 'always') await this.active.fh.datasync();
        else this.scheduleSync();
        for (const p of batch) {
          this.stats.appended += p.messages.length;
          p.resolve(p.messages);
        }
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.flushing = false;
  }

  private scheduleSync(): void {
    if (this.syncTimer || this.o.sync.mode !== 'interval') return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.active.fh.datasync().catch((err: Error) => this.o.log.error({ err: err.message }, 'queue fsync failed'));
    }, this.o.sync.ms);
  }

  private async rotate(): Promise<void> {
    await this.active.fh.datasync();
    await this.active.fh.close();
    const seg: Segment = { firstSeq: this.active.seg.lastSeq + 1, lastSeq: this.active.seg.lastSeq, path: join(this.o.dir, segName(this.active.seg.lastSeq + 1)), bytes: 0 };
    this.segments.push(seg);
    this.active = { seg, fh: await open(seg.path, 'a', 0o600) };
  }

  /**
   * The next unacknowledged messages in order, from the send cursor, at most `max` of them and
   * about `maxBytes`. Only what is written is returned: from the tail cache when it holds the
   * record at the cursor, else read back from disk.
   */
  next(max: number, maxBytes = 4 * 1024 * 1024): OutgoingMessage[] {
    const out: OutgoingMessage[] = [];
    let bytes = 0;
    while (out.length < max && bytes < maxBytes) {
      if (!this.cursor) {
        const seg = this.segments.find((s) => s.lastSeq > this.watermark);
        if (!seg) break;
        this.cursor = { seg, pos: 0 };
      }
      const cur = this.cursor;
      const cached = this.tail.take(cur.seg, cur.pos);
      let m: OutgoingMessage;
      let size: number;
      if (cached) {
        // Passed once: a resend after a reconnect reads from disk.
        cur.pos = cached.end;
        m = cached.message;
        size = cached.bytes;
      } else {
        const r = this.readAtCursor();
        if (r === undefined) {
          const following = this.segments[this.segments.indexOf(cur.seg) + 1];
          if (!following) break; // caught up with the writer
          this.closeCursor();
          this.cursor = { seg: following, pos: 0 };
          continue;
        }
        if ('corrupt' in r) {
          this.o.log.error({ code: 'FIELD_QUEUE_CORRUPT', segment: cur.seg.path, reason: r.corrupt }, 'unreadable queue record; skipping the rest of the segment');
          const following = this.segments[this.segments.indexOf(cur.seg) + 1];
          this.closeCursor();
          if (!following) break;
          this.cursor = { seg: following, pos: 0 };
          continue;
        }
        const stored = JSON.parse(r.body.toString('utf8')) as QueuedMessage;
        m = { seq: stored.seq, messageId: stored.messageId, dataType: stored.dataType, payloadJson: JSON.stringify(stored.payload), acceptedAt: stored.acceptedAt };
        size = r.body.length;
      }
      if (m.seq <= this.watermark || this.ackedAbove.has(m.seq)) continue;
      out.push(m);
      bytes += size;
    }
    return out;
  }

  /**
   * The record at the cursor, read from disk, up to what is written now. The reader is renewed
   * when the cursor moved without it (records taken from the tail cache) or when the segment grew
   * past what the reader was made for.
   */
  private readAtCursor(): ReturnType<SegmentReader['next']> {
    const cur = this.cursor as { seg: Segment; pos: number; reader?: SegmentReader };
    const durable = cur.seg.bytes;
    if (cur.pos >= durable) return undefined;
    if (cur.reader && cur.reader.position !== cur.pos) {
      cur.reader.close();
      cur.reader = undefined;
    }
    cur.reader ??= new SegmentReader(cur.seg.path, cur.pos, durable);
    let r = cur.reader.next();
    if (r === undefined) {
      cur.reader.close();
      cur.reader = new SegmentReader(cur.seg.path, cur.pos, durable);
      r = cur.reader.next();
    }
    if (r !== undefined && !('corrupt' in r)) cur.pos = cur.reader.position;
    return r;
  }

  private closeCursor(): void {
    this.cursor?.reader?.close();
    this.cursor = undefined;
  }

  /** Sends start again from the first unacknowledged message (after a reconnect); until the next
   * `next`, nothing is kept in memory for a sender. */
  rewind(): void {
    this.closeCursor();
  }

  ack(seqs: Iterable<number>): void {
    let n = 0;
    for (const seq of seqs) {
      if (seq <= this.watermark || seq >= this.nextSeq || this.ackedAbove.has(seq)) continue;
      this.ackedAbove.add(seq);
      n++;
    }
    if (n === 0) return;
    this.stats.acked += n;
    this.stats.lastAckAt = Date.now();
    while (this.ackedAbove.delete(this.watermark + 1)) this.watermark++;
    this.deleteAckedSegments();
    if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        this.persistAck();
      }, 200);
    }
  }

  private deleteAckedSegments(): void {
    while (this.segments.length > 1) {
      const oldest = this.segments[0] as Segment;
      if (oldest.lastSeq > this.watermark || oldest === this.active?.seg) break;
      if (this.cursor?.seg === oldest) this.closeCursor();
      this.segments.shift();
      try {
        unlinkSync(oldest.path);
      } catch {
        /* already gone */
      }
    }
  }

  private persistAck(): void {
    const path = join(this.o.dir, 'ack.json');
    writeFileSync(`${path}.tmp`, JSON.stringify({ watermark: this.watermark }));
    renameSync(`${path}.tmp`, path);
  }

  /** acceptedAt of the oldest unacknowledged message, read from disk (undefined when none). */
  oldestUnacked(): number | undefined {
    for (const seg of this.segments) {
      if (seg.lastSeq <= this.watermark) continue;
      const reader = new SegmentReader(seg.path, 0, seg.bytes);
      try {
        for (let r = reader.next(); r && !('corrupt' in r); r = reader.next()) {
          const m = JSON.parse(r.body.toString('utf8')) as QueuedMessage;
          if (m.seq > this.watermark && !this.ackedAbove.has(m.seq)) return m.acceptedAt;
        }
      } finally {
        reader.close();
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (this.flushing || this.pending.length > 0) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    clearTimeout(this.syncTimer);
    clearTimeout(this.ackTimer);
    this.persistAck();
    this.closeCursor();
    await this.active.fh.datasync();
    await this.active.fh.close();
  }
}
