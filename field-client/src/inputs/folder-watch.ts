import { mkdirSync, type Stats } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { unsafeFilenameReason } from '../../../shared/contract/filename.ts';
import { isFieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { FieldClient } from '../field-client.ts';
import type { LocalInput } from './input.ts';
import { KeptFiles } from './kept-files.ts';

const TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.csv': 'text/csv',
  '.txt': 'text/plain',
  '.json': 'application/json',
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
};

/**
 * Sends every new file that appears in a folder, but for those whose name starts with "." (a
 * writer's temporary file, taken once renamed). A file is taken once its size and modification
 * time held still for one interval (a camera may still be writing it), then moved into the outbox;
 * the folder is left empty of what was accepted (but for files it does not let go: copied, sent
 * once and left there, FIELD_FILE_SOURCE_KEPT; remembered in `keptFile`, FIELD_DATA_DIR/watched-kept.jsonl,
 * across restarts). Polling, not inotify: it works the same on every
 * file system, network mounts and SD cards included; one look at a time, read asynchronously (see
 * look). The folder is created on start if missing.
 *
 * Only regular files are taken. Anything else found there — a symbolic link above all (a program
 * allowed to write into the folder could link `innocent.txt -> /path/to/signing.key` and have the
 * key sent), a directory, a FIFO, a socket, a device — is refused with FIELD_INPUT_INVALID, logged
 * once (until it changes or goes), and left in place: nothing is followed, opened, moved or deleted.
 * The entry is looked at with lstat, never stat; the outbox opens what it moved without following
 * links as well, for a link swapped in between the look and the move.
 *
 * At most LIMITS.folderInputMaxFilesAtOnce files are taken at a time, each within the room left in
 * FIELD_QUEUE_MAX_BYTES (held for it until it is queued); a file there is no room for stays in the
 * folder and is tried again, as is one whose queue record could not be written (put back). A file
 * not taken (that, or a name the contract refuses) is logged once, until it or the reason changes.
 */
export function folderInput(client: FieldClient, dir: string, intervalMs: number, log: Logger, options: { keptFile?: string } = {}): LocalInput {
  const seen = new Map<string, string>();
  const busy = new Set<string>();
  /** entries refused as not regular files, with what they were when refused (logged once each) */
  const refused = new Map<string, string>();
  /**
   * files not taken (a name the contract refuses; no room, too large, unreadable), with what they
   * were and why: logged once each until either changes. Looked at every interval, a file the
   * folder cannot take would otherwise be logged at every look, for as long as it lies there: a
   * warning a second per file, for ever, on a device's SD card. So is a name that is not UTF-8.
   */
  const notTaken = new Map<string, string>();
  /**
   * files sent as copies since their folder does not let them go (FIELD_FILE_SOURCE_KEPT), with what
   * they were (device, inode, size, modification time): not taken again until that changes, nor
   * logged again, also after a restart (`keptFile`, kept-files.ts). Forgotten once gone from the
   * folder; at most LIMITS.folderInputKeptMaxFiles, the oldest forgotten first. Before, such a file
   * was copied, the copy dropped as its source could not be removed, and the whole file copied and
   * synced again every other look, for ever; and then, remembered in memory alone, sent again at
   * every start of the client.
   */
  let kept = new KeptFiles(undefined, dir, log);
  const warnOnce = (name: string, sig: string, why: string, log: () => void) => {
    if (notTaken.get(name) === `${sig}|${why}`) return;
    notTaken.set(name, `${sig}|${why}`);
    log();
  };
  /** names that are not UTF-8 (their bytes in hex), logged once each while they lie there */
  const undecodable = new Set<string>();
  /**
   * Why the folder could not be read at the last look (its error's code), logged once until it
   * reads again or fails otherwise: removed, or made unreadable, it was logged at every look, a
   * warning a second for as long as it lasted.
   */
  let unreadable: string | undefined;
  /** set by close: a look under way takes nothing more */
  let stopped = false;
  /**
   * One look at the folder, on the event loop every input, the queue and the link share: so it is
   * read asynchronously (fs/promises, in libuv's threads), LIMITS.folderInputEntriesAtOnce entries
   * at a time (opendir's buffer), and its entries looked at (lstat) as many at a time. Listed and
   * looked at synchronously (readdirSync, lstatSync), a folder of 20,000 files held the loop some
   * 200 ms at every interval.
   */
  const look = async () => {
    const names: string[] = [];
    const rawPresent = new Set<string>();
    try {
      // Names as bytes (the encoding 'buffer', which Node takes and its types do not name): see below.
      const listing = await opendir(dir, { encoding: 'buffer' as BufferEncoding, bufferSize: LIMITS.folderInputEntriesAtOnce });
      for await (const entry of listing) {
        if (stopped) return; // closes the listing
        const bytes = entry.name as unknown as Buffer;
        const name = bytes.toString('utf8');
        if (Buffer.from(name, 'utf8').equals(bytes)) {
          names.push(name);
          continue;
        }
        // A Linux name is bytes; one that is not UTF-8 (a camera writing Latin-1, say) is read as a
        // string with U+FFFD in place of each bad byte, which names no file: every look at it failed
        // (ENOENT) and it lay there unsent without a word. A file name is text in the contract, so it
        // is refused as a name the contract refuses is: logged once, left in place.
        const hex = bytes.toString('hex');
        rawPresent.add(hex);
        if (name.startsWith('.') || undecodable.has(hex)) continue;
        undecodable.add(hex);
        log.warn({ code: 'FIELD_INPUT_INVALID', file: name, nameBytesHex: hex }, 'file name is not valid UTF-8; left in place (rename it to be sent)');
      }
    } catch (err) {
      // Failing midway (the folder removed while read) as failing at once: nothing forgotten of
      // what a partial listing leaves out (a file kept, sent already, would be sent again).
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (unreadable !== why) log.warn({ dir, code: 'FIELD_FILE_UNREADABLE', reason: why, err: (err as Error).message }, 'cannot read the watched folder; looked at again at every interval, logged again once it reads or fails otherwise');
      unreadable = why;
      return;
    }
    if (unreadable !== undefined) {
      unreadable = undefined;
      log.info({ dir }, 'the watched folder reads again');
    }
    for (const hex of undecodable) if (!rawPresent.has(hex)) undecodable.delete(hex);
    // Only this look adds to `busy` (one look at a time): a name not busy as its lstat starts is not
    // busy when its answer comes. One freed meanwhile waits for the next look, as before.
    const looked = names.filter((name) => !name.startsWith('.') && !busy.has(name));
    for (let i = 0; i < looked.length; i += LIMITS.folderInputEntriesAtOnce) {
      if (stopped) return;
      const batch = looked.slice(i, i + LIMITS.folderInputEntriesAtOnce);
      // lstat: a symbolic link is judged as the link it is, never as what it points to. One gone
      // meanwhile (taken by another program) is let be, as it was.
      const stats = await Promise.all(batch.map((name) => lstat(join(dir, name)).catch(() => undefined)));
      if (stopped) return;
      batch.forEach((name, j) => consider(name, stats[j]));
    }
    const present = new Set(names);
    for (const name of seen.keys()) if (!present.has(name)) seen.delete(name);
    for (const name of refused.keys()) if (!present.has(name)) refused.delete(name);
    for (const name of notTaken.keys()) if (!present.has(name)) notTaken.delete(name);
    kept.keepOnly(present);
  };
  /** What to do with one entry of the folder, given its lstat (undefined: it could not be looked at). */
  const consider = (name: string, st: Stats | undefined) => {
    if (!st) return;
    if (!st.isFile()) {
      seen.delete(name);
      const what = `${kindOf(st)}:${st.ino}:${st.mtimeMs}`;
      if (refused.get(name) !== what) {
        refused.set(name, what);
        log.warn({ code: 'FIELD_INPUT_INVALID', file: name, kind: kindOf(st) }, 'not a regular file in the watched folder; refused and left in place');
      }
      return;
    }
    refused.delete(name);
    const path = join(dir, name);
    const sig = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
    if (kept.has(name, sig)) return; // sent already, and unchanged (one that changed is another file, taken as any)
    if (seen.get(name) !== sig) {
      seen.set(name, sig);
      return;
    }
    const reason = unsafeFilenameReason(name);
    if (reason) {
      warnOnce(name, sig, reason, () => log.warn({ code: 'FIELD_INPUT_INVALID', file: name }, `file name ${reason}; left in place`));
      return;
    }
    // The rest wait for a later look, still `seen` (taken at once then): at most a few are taken at a time.
    // Busy already: a listing that names an entry twice (a network file system's, changing under
    // it) must not take it twice; the busy check before the lstats looked at each name once.
    if (busy.has(name) || busy.size >= LIMITS.folderInputMaxFilesAtOnce) return;
    busy.add(name);
    const taking = sig;
    client
      .submitFile(path, {
        filename: name,
        contentType: TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream',
        move: true,
        // Told once the file's queue record is written (takeFile): remembered only then, so a file
        // whose taking failed, or was cut off by a kill, is taken again, never skipped.
        sourceKept: (code) => {
          kept.remember(name, taking);
          log.warn({ code: 'FIELD_FILE_SOURCE_KEPT', file: name, reason: code }, 'file from the watched folder sent as a copy: its folder does not let it be removed; left there, not taken again until it changes');
        },
      })
      .then(
        (m) => {
          notTaken.delete(name);
          log.info({ file: name, messageId: m.messageId }, 'file from the watched folder queued');
        },
        (err: Error) =>
          warnOnce(name, taking, isFieldStreamError(err) ? err.code : err.message, () =>
            log.warn({ code: isFieldStreamError(err) ? err.code : undefined, file: name, err: err.message }, 'cannot take the file; tried again at every look, logged again if it or the reason changes'),
          ),
      )
      .finally(() => {
        busy.delete(name);
        seen.delete(name);
      });
  };
  /** the look under way, if any */
  let looking: Promise<void> | undefined;
  const tick = () => {
    // A look that outlasts the interval (a large folder, a slow card) is not joined by another: two
    // at once would each take the same file as held still. The next starts at the first tick after.
    if (looking || stopped) return;
    looking = look()
      .catch((err: unknown) => log.warn({ dir, err: (err as Error).message }, 'a look at the watched folder failed; looked at again at the next interval'))
      .finally(() => {
        looking = undefined;
      });
  };
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'folder',
    async start() {
      mkdirSync(dir, { recursive: true });
      kept = new KeptFiles(options.keptFile, dir, log);
      stopped = false;
      timer = setInterval(tick, intervalMs);
    },
    async close() {
      stopped = true;
      clearInterval(timer);
      // Nothing is taken once closed: the look under way stops at its next step.
      await looking;
    },
  };
}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'symbolic link';
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isBlockDevice() || st.isCharacterDevice()) return 'device';
  return 'other';
}
