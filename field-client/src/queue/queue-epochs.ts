import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { readRegularFileSync, removeFileDurablySync, removeLeftAsideSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { SeqRanges } from './ack-book.ts';
import { writeWatermarkDurably } from './queue-files.ts';

/**
 * The epochs that name the queue's messages: a message's identity is `EPOCH.SEQ`, and the internal
 * side's replay window accepts each (device, epoch, seq) once.
 *
 * A record is sendable once written, before its fsync (see segment-writer.ts), and with
 * FIELD_QUEUE_SYNC=interval or never long before it. After a power cut the queue restarts at the
 * last record the disk kept, so a sequence number the gateway already took may be numbered again.
 * Under the same epoch the distributor would take the new message for a copy of the old one, give
 * its receipt, and the device would delete a reading no database holds. So after a stop that was
 * not clean and a restart of the machine (a power cut, a kernel panic: the kernel's boot id has
 * changed) the numbers from the next one on belong to a new epoch: the sequence numbers go on (the
 * queue's own bookkeeping is by sequence number), only their names change. The records already on
 * disk keep the epoch they were sent under. A killed process (SIGKILL, a crash) without a restart
 * of the machine loses nothing written: the page cache still holds it, so the epoch stays (a new
 * one at every crash of a crash-looping client would cost the distributor a replay window each).
 * After an fsync of the queue failed, the next start takes a new epoch too, restart or not: Linux
 * drops the pages it failed to write, so what was sent may be missing (newEpochAtNextStart).
 *
 * meta.json lists each epoch with the first sequence number it names (an epoch names the numbers up
 * to the next one's first) and the boot the queue was last opened in. An epoch is forgotten once
 * every number it names is committed. A file `clean`, written by close() after the last fsync,
 * marks a clean stop; open() removes it (for good, before anything new is numbered), so a stop
 * without close() leaves none.
 *
 * A disk that refuses these writes at open (full, failing) does not stop the queue from sending
 * what it holds: that was on disk before, and goes out under the epochs it was numbered by. Only
 * new numbers must wait when the new epoch is not in meta.json, or the clean-stop mark still is
 * (either way, a power cut could have a number given now, sent, and lost from the disk, name
 * another message after it): the queue is then drain-only (`drainOnly`) until `retryUnsaved`
 * gets the writes through. What else open could not write (epochs forgotten, the boot) only
 * spares work at the next start, which tries again.
 */
const EpochName = z.string().min(1).max(64);
const BootId = z.string().min(1).max(64);
const MetaFileSchema = z.union([
  z.object({ epochs: z.array(z.object({ epoch: EpochName, from: z.number().int().positive() })).min(1), boot: BootId.optional() }),
  // the layout before epochs changed at unclean stops: one epoch, naming every number
  z.object({ epoch: EpochName }).transform(({ epoch }) => ({ epochs: [{ epoch, from: 1 }], boot: undefined })),
]);
type MetaFile = z.infer<typeof MetaFileSchema>;
type EpochEntry = MetaFile['epochs'][number];

const META = 'meta.json';
const CLEAN = 'clean';

/**
 * A new epoch: the time (so they sort by age when read by a person) and 64 random bits. The time
 * alone does not keep names apart: a device without a battery-backed clock starts at one date at
 * every boot (until NTP answers), and opens its queue at about the same millisecond each time, the
 * very devices a power cut gives new epochs. With 16 random bits, 1 in 65,536 such starts named
 * the new epoch as the one before the cut, and the distributor took the readings numbered again
 * for copies: receipted, deleted, stored nowhere.
 */
const newEpochName = () => Date.now().toString(36) + randomBytes(8).toString('hex');

export class QueueEpochs {
  private constructor(
    private readonly dir: string,
    /** oldest first; `from` strictly increasing */
    private epochs: EpochEntry[],
  ) {}

  /** the boot of the machine this queue was last opened in */
  private boot: string | undefined;

  /** what open() could not write and new numbers wait for (see the class comment): the disk's refusal of each */
  private readonly unsaved: { epoch?: Error; clean?: Error } = {};

  /**
   * Reads meta.json (made on first use) and takes the clean-stop mark. `nextSeq` is the number the
   * queue gives next; `watermark` the committed one (at or below it, every number is committed);
   * `boot` this boot of the machine (bootId()). A damaged meta.json stops the queue: new names for
   * the messages still queued would let the receiving side store them twice.
   */
  static open(dir: string, o: { nextSeq: number; watermark: number; boot: string | undefined; log: Logger }): QueueEpochs {
    const metaPath = join(dir, META);
    const cleanPath = join(dir, CLEAN);
    removeLeftAsideSync(metaPath);
    const clean = existsSync(cleanPath);
    const meta = existsSync(metaPath) ? readMeta(metaPath) : undefined;
    const q = new QueueEpochs(dir, meta?.epochs ?? []);
    const before = [...q.epochs];
    let forgot = q.forgetCommitted(o.watermark);
    // The watermark must outlive a power cut before epochs are forgotten on its word: ack.json is
    // written without fsync (and segments are deleted without a directory fsync), so records above
    // an older watermark could come back named by a forgotten epoch, to be neither sent under their
    // own epoch nor acknowledged. When the disk refuses it, they are kept: an epoch remembered
    // longer names nothing new.
    if (forgot) {
      try {
        writeWatermarkDurably(dir, o.watermark);
      } catch (err) {
        q.epochs = before;
        forgot = false;
        o.log.warn(
          { code: 'FIELD_STATE_WRITE_FAILED', err: (err as Error).message, watermark: o.watermark },
          'cannot write the committed watermark durably (ack.json): the epochs it would let go of are kept, until a start that can',
        );
      }
    }
    let changed = forgot || meta?.boot !== o.boot;
    let newEpoch = false;
    // Without a clean stop, what the disk kept may be less than what was sent, unless the machine
    // did not restart since (a killed process leaves its writes in the page cache: the disk gets
    // them). Without a boot id to compare, every unclean stop counts as a power cut.
    const mayHaveLost = !clean && (o.boot === undefined || meta?.boot !== o.boot);
    if (mayHaveLost || q.epochs.length === 0) {
      // Epochs from nextSeq on name nothing the disk kept (a power cut can take back records read
      // at the last start too, when they were not yet synced): the new epoch takes their place.
      while (q.epochs.length > 0 && (q.epochs[q.epochs.length - 1] as EpochEntry).from >= o.nextSeq) q.epochs.pop();
      // The first epoch names every number: records left without a meta.json keep being numbered by it.
      q.epochs.push({ epoch: newEpochName(), from: q.epochs.length === 0 ? 1 : o.nextSeq });
      changed = true;
      newEpoch = true;
      if (meta) {
        o.log.info(
          { code: 'FIELD_QUEUE_NEW_EPOCH', epoch: q.current, from: o.nextSeq },
          'the queue was not closed cleanly before the machine restarted, or an fsync of it failed: what it numbers from now on has a new epoch (a number sent before but lost from the disk is not reused)',
        );
      }
    }
    q.boot = o.boot;
    if (changed) {
      try {
        q.save();
      } catch (err) {
        if (newEpoch) {
          q.unsaved.epoch = err as Error;
          o.log.error(
            { code: 'FIELD_QUEUE_WRITE_FAILED', err: (err as Error).message, epoch: q.current, from: o.nextSeq },
            'cannot save the new epoch (meta.json): the queue is drain-only, it sends what it holds (under the epochs it was numbered by) and refuses new data with FIELD_QUEUE_WRITE_FAILED until the epoch is saved, tried again at each append',
          );
        } else {
          // Epochs let go of, or the boot: kept on disk, they only cost the next start a new epoch it could have spared.
          o.log.warn({ code: 'FIELD_STATE_WRITE_FAILED', err: (err as Error).message }, 'cannot save meta.json (epochs all committed, the boot of the machine); tried again at the next start');
        }
      }
    }
    // Before anything new is numbered: a stop from here on, clean or not, must not find the mark.
    if (clean) {
      try {
        removeFileDurablySync(cleanPath);
      } catch (err) {
        q.unsaved.clean = err as Error;
        o.log.error(
          { code: 'FIELD_QUEUE_WRITE_FAILED', err: (err as Error).message },
          'cannot remove the clean-stop mark: the queue is drain-only, it sends what it holds and refuses new data with FIELD_QUEUE_WRITE_FAILED until the mark is gone, tried again at each append',
        );
      }
    }
    return q;
  }

  /**
   * The numbers below the oldest epoch meta.json names: all committed, as an epoch is forgotten only
   * once ack.json holds, synced, a watermark past its numbers (open). The queue's watermark never
   * starts below it: with ack.json lost or damaged (written without fsync, a power cut on an SD card
   * can leave it empty) the oldest segment is sent again, and records of a forgotten epoch that it
   * still held (the segment went on under a new epoch after a power cut) were sent under the
   * current one: ids never sent before, stored twice downstream, and never receipted under an epoch
   * that does not name them, holding the watermark, and so the receipt window, for good.
   * 0 when there is no meta.json, or it cannot be read (open refuses a damaged one).
   */
  static committedFloor(dir: string): number {
    const path = join(dir, META);
    if (!existsSync(path)) return 0;
    try {
      return (readMeta(path).epochs[0] as EpochEntry).from - 1;
    } catch {
      return 0;
    }
  }

  /** true while new numbers may not be given (open could not write the new epoch, or remove the clean-stop mark) */
  get drainOnly(): boolean {
    return this.unsaved.epoch !== undefined || this.unsaved.clean !== undefined;
  }

  /**
   * Tries again what open() could not write and new numbers wait for; returns the disk's refusal
   * that still stands in the way (undefined: new numbers may be given). A few small writes, made
   * only while the queue is drain-only.
   */
  retryUnsaved(): Error | undefined {
    if (this.unsaved.epoch) {
      try {
        this.save();
        delete this.unsaved.epoch;
      } catch (err) {
        this.unsaved.epoch = err as Error;
      }
    }
    if (this.unsaved.clean) {
      try {
        removeFileDurablySync(join(this.dir, CLEAN));
        delete this.unsaved.clean;
      } catch (err) {
        this.unsaved.clean = err as Error;
      }
    }
    return this.unsaved.epoch ?? this.unsaved.clean;
  }

  /** the epoch of the numbers given from now on */
  get current(): string {
    return (this.epochs[this.epochs.length - 1] as EpochEntry).epoch;
  }

  /** The epoch that names `seq` (undefined: below every epoch remembered, so long committed). */
  epochOf(seq: number): string | undefined {
    for (let i = this.epochs.length - 1; i >= 0; i--) {
      const e = this.epochs[i] as EpochEntry;
      if (seq >= e.from) return e.epoch;
    }
    return undefined;
  }

  /** The numbers `epoch` names, inclusive (undefined: not an epoch of this queue, or forgotten). */
  range(epoch: string): readonly [number, number] | undefined {
    const i = this.epochs.findIndex((e) => e.epoch === epoch);
    if (i < 0) return undefined;
    const next = this.epochs[i + 1];
    return [(this.epochs[i] as EpochEntry).from, next ? next.from - 1 : Number.MAX_SAFE_INTEGER];
  }

  /** `ranges` of `epoch`, cut to the numbers it names (undefined: not an epoch of this queue). */
  clip(epoch: string, ranges: SeqRanges): SeqRanges | undefined {
    const r = this.range(epoch);
    if (!r) return undefined;
    const out: [number, number][] = [];
    for (const [a, b] of ranges) {
      const from = Math.max(a, r[0]);
      const to = Math.min(b, r[1]);
      if (from <= to) out.push([from, to]);
    }
    return out;
  }

  /** The sequence number of a message id `EPOCH.SEQ` of this queue (undefined: not one, or the epoch does not name it). */
  seqOf(messageId: string): number | undefined {
    const dot = messageId.lastIndexOf('.');
    const seq = Number(messageId.slice(dot + 1));
    if (dot < 0 || !Number.isSafeInteger(seq) || seq <= 0) return undefined;
    return this.epochOf(seq) === messageId.slice(0, dot) ? seq : undefined;
  }

  /**
   * An fsync failed (segment-syncs.ts): records sent may be missing from the disk though the
   * machine does not restart (Linux drops the pages it failed to write), so the next start takes a
   * new epoch, as after a power cut: the boot is forgotten. The queue then writes no clean mark.
   * Throws when the disk refuses meta.json.
   */
  newEpochAtNextStart(): void {
    this.boot = undefined;
    this.save();
  }

  /**
   * Marks a clean stop: call after the last record's fsync. Not while the new epoch of a power cut
   * is unsaved: the next start would keep the epoch on disk, and number on under it what the cut
   * may have taken back after it was sent; without the mark, it takes a new one. Throws when the
   * disk refuses the file (then the next start takes the stop for an unclean one: safe too).
   */
  markClean(): void {
    if (this.unsaved.epoch) return;
    // Not synced on purpose: if a power cut loses the mark, the next start takes a new epoch, which is safe.
    writeFileSync(join(this.dir, CLEAN), '');
  }

  /** Epochs all of whose numbers are committed are not needed to name anything; the current one stays. */
  private forgetCommitted(watermark: number): boolean {
    const before = this.epochs.length;
    while (this.epochs.length > 1 && (this.epochs[1] as EpochEntry).from - 1 <= watermark) this.epochs.shift();
    return this.epochs.length !== before;
  }

  private save(): void {
    replaceFileDurablySync(join(this.dir, META), JSON.stringify({ epochs: this.epochs, ...(this.boot !== undefined && { boot: this.boot }) }));
  }
}

function readMeta(path: string): MetaFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readRegularFileSync(path, 'utf8'));
  } catch (err) {
    throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `${path} is not JSON: ${(err as Error).message}`);
  }
  const meta = MetaFileSchema.safeParse(raw);
  if (!meta.success) throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `${path} does not hold the queue's epochs: ${meta.error.message}`);
  const epochs = meta.data.epochs;
  for (let i = 1; i < epochs.length; i++) {
    if ((epochs[i] as EpochEntry).from <= (epochs[i - 1] as EpochEntry).from) {
      throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `${path}: the epochs' first sequence numbers do not increase`);
    }
  }
  return meta.data;
}
