import { constants } from 'node:fs';
import { access, lstat, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { settleWithin } from '../../shared/settle-within.ts';

/**
 * Whether the file storage can take a file, for the distributor's /readyz (check `files`): the
 * writes' own verdict (StorageVerdict) and a look at the folder.
 */
export class StorageReadiness {
  private readonly verdict = new StorageVerdict();
  /** ready()'s look at the storage folder in flight */
  private looking: Promise<boolean> | undefined;

  /** root: the storage folder, absolute */
  constructor(private readonly root: string) {}

  /**
   * The last write to decide did not fail for a fault of the storage (a system call refused: no
   * space, a read-only file system, no permission), and the folder is one this process may write in
   * (access(2): a read-only mount or an immutable folder says no, root too). A folder not made yet
   * is judged by the folder it would be made in. Like the database's check, a fault found by a write
   * lasts until a write succeeds (the message's retries).
   */
  async ready(): Promise<boolean> {
    if (this.verdict.failed) return false;
    // One look at a time, shared by the /readyz asking meanwhile: a folder that does not answer
    // (a hung mount) would otherwise hold one more thread of libuv's pool at each request, the
    // pool the database's and dead letters' file and gzip work wait on too. Bounded: a look not
    // answered in time is not ready, and /readyz still names its other checks.
    this.looking ??= this.writable().finally(() => (this.looking = undefined));
    const look = await settleWithin(this.looking, TIMINGS.fileStoreReadyLookMs);
    return look.outcome === 'fulfilled' && look.value && !this.verdict.failed;
  }

  /**
   * Runs a write, keeping for ready() whether storage failed it: a DISTRIBUTOR_WRITE_FAILED caused by
   * a system call's error (io, writeTemp) is the storage's fault; one without a cause is a race with
   * another consumer, and every other code is the message's. Only a write that wrote (`wrote`)
   * clears a fault: an answer read from a transfer's done marker proves nothing of the disk, and a
   * chunk delivered again, answered so, made a full or read-only storage ready.
   */
  async track<T>(write: () => Promise<{ result: T; wrote: boolean }>): Promise<T> {
    const decide = this.verdict.begin();
    try {
      const { result, wrote } = await write();
      if (wrote) decide(false);
      return result;
    } catch (err) {
      if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED') && err.cause !== undefined) decide(true);
      throw err;
    }
  }

  /**
   * The storage folder is one this process may write in or, not made yet, may be made: the nearest
   * folder above it that is there may be written in (mkdir -p makes the rest there). Counted
   * writable for want of it alone, a folder to be made on a read-only mount, or in a name that is
   * a symbolic link to nowhere (mkdir fails through it: ENOENT, ENOTDIR), was ready until the first
   * file failed. Never rejects.
   */
  private async writable(): Promise<boolean> {
    for (let dir = this.root; ; dir = dirname(dir)) {
      try {
        if (!(await stat(dir)).isDirectory()) return false;
        await access(dir, constants.W_OK | constants.X_OK);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(dir) === dir) return false;
        // There, but a link to nowhere: nothing can be made through it.
        if (await lstat(dir).then(() => true, () => false)) return false;
      }
    }
  }
}

/**
 * Whether the storage failed, from the outcomes of writes that may overlap (several consumers):
 * the write begun last, among those that decided, decides. A write begun before the disk recovered
 * and failing after it does not overrule one begun since that succeeded, nor does a success begun
 * before a failure clear it.
 */
export class StorageVerdict {
  private begun = 0;
  private decidedBy = 0;
  private failedNow = false;

  get failed(): boolean {
    return this.failedNow;
  }

  /** A write begins; the function returned records its outcome (true: the storage failed it). */
  begin(): (failed: boolean) => void {
    const seq = ++this.begun;
    return (failed) => {
      if (seq < this.decidedBy) return;
      this.decidedBy = seq;
      this.failedNow = failed;
    };
  }
}
