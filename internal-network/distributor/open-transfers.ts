import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { entries, exists, ifGone, io } from './file-io.ts';

/**
 * The bound on a device's unfinished chunked transfers (LIMITS.fileOpenTransfersPerDeviceMax).
 *
 * A transfer is unfinished while its folder of chunks, ROOT/.partial/DEVICE/ID/, is there without
 * its done marker (ID.done.json beside it): the sweep removes nothing else of it (file-sweep.ts),
 * and a failed transfer's folder is moved to .failed/. Counted from the storage, never from memory:
 * distributors sharing the storage each open transfers there, and a count kept here would not see
 * theirs, nor one finished by another.
 *
 * Counted only when a transfer opens (its first chunk to arrive; each chunk of one refused, until it
 * is taken), and only up to the bound. The listing reads the device's folder in .partial/, where each
 * finished transfer leaves its done marker for good: a device with 100,000 files stored makes each
 * opening a listing of about 100 ms. A device found at the bound is remembered with its folder's
 * modification time, which any transfer opened, finished or moved changes: its chunks sent again are
 * refused without a listing while the time holds, for TIMINGS.fileOpenTransfersRecheckMs at most
 * (a change within the timestamp's granularity of the listing does not show).
 *
 * Two chunks opening two transfers of one device at the same instant (two consumers, two
 * distributors) may each find room for one: the bound is passed by at most the number of chunks
 * opening transfers at once, since each later opening counts them.
 */
export class OpenTransfers {
  /** device's folder in .partial/ → its modification time (ns) when found at the bound, and until when that is trusted */
  private readonly full = new Map<string, { mtimeNs: bigint; until: number }>();

  constructor(
    /** transfers. Most a device may have unfinished */
    readonly max: number = LIMITS.fileOpenTransfersPerDeviceMax,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Throws DISTRIBUTOR_FILE_TRANSFERS_OPEN when `deviceId`, whose folder in .partial/ is
   * `partialDevice`, may open no transfer now: it has `max` unfinished. A failure to look is
   * DISTRIBUTOR_WRITE_FAILED (retried).
   */
  async mayOpen(partialDevice: string, deviceId: string, transferId: string): Promise<void> {
    const mtimeNs = await io(partialDevice, () => modified(partialDevice));
    const known = this.full.get(partialDevice);
    let open: number;
    if (known && mtimeNs !== undefined && known.mtimeNs === mtimeNs && this.now() < known.until) open = this.max;
    else {
      open = await io(partialDevice, () => openTransfers(partialDevice, this.max));
      this.full.delete(partialDevice);
      // The time read before the listing: a change after it shows as another time.
      if (open >= this.max && mtimeNs !== undefined) {
        if (this.full.size >= LIMITS.fileOpenTransfersRefusedDevicesMax) this.full.clear();
        this.full.set(partialDevice, { mtimeNs, until: this.now() + TIMINGS.fileOpenTransfersRecheckMs });
      }
    }
    if (open < this.max) return;
    throw new FieldStreamError(
      'DISTRIBUTOR_FILE_TRANSFERS_OPEN',
      `File transfer ${transferId} from ${deviceId} not opened: the device has ${open} transfers unfinished in the file storage (${partialDevice}), the most it may have. The chunk is neither stored nor receipted; the device sends it again later.`,
      { deviceId, transferId, open, max: this.max },
    );
  }

  /** A transfer of the device finished or was set aside here: its next opening is counted afresh. */
  forget(partialDevice: string): void {
    this.full.delete(partialDevice);
  }
}

/** The unfinished transfers of a device, counted from its folder `partialDevice` in .partial/, up to `max`. */
export async function openTransfers(partialDevice: string, max: number): Promise<number> {
  let open = 0;
  for await (const e of entries(partialDevice)) {
    // Folders only: chunks live in them; markers and temporary files are files. A name starting with
    // a dot is no transfer (the contract refuses such ids).
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    // A folder beside its done marker is a stored file's chunks that a kill left (the sweep removes it).
    if (await exists(`${join(partialDevice, e.name)}.done.json`)) continue;
    if (++open >= max) break;
  }
  return open;
}

/** The folder's modification time in nanoseconds; undefined when it is not there. */
async function modified(dir: string): Promise<bigint | undefined> {
  const s = await lstat(dir, { bigint: true }).catch(ifGone);
  return s?.mtimeNs;
}
