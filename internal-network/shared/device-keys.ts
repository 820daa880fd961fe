import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readRegularFileSync } from '../../shared/durable-fs.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';

/**
 * The internal network's registry of device signing keys: DIR/DEVICE_ID.key, written by
 * scripts/generate-client-cert.sh, removed by scripts/revoke-device.sh. A device's key is what the
 * internal side believes, whatever the DMZ says. Changes are picked up without a restart: a key
 * added, at the device's first message (listed); a key removed or replaced, within a second; a key
 * file overwritten in place, within ten (see get).
 */
export interface KeyRecheck {
  /** milliseconds a looked-up key is trusted before the folder is looked at again */
  recheckMs: number;
  /** milliseconds before a key's own file is looked at again while the folder is unchanged; the
   * folder is listed again this often too, whatever its mtime says */
  fileRecheckMs: number;
  /** milliseconds: an id the listing lacks has the folder looked at again if the last look is older
   * than this (TIMINGS.deviceKeyMissRecheckMs) */
  missRecheckMs?: number;
}

interface CachedKey {
  key: Buffer | undefined;
  /** when its file was last looked at (epoch ms) */
  statAt: number;
  /** its file's mtime then */
  mtimeMs: number;
  /** the folder's mtime then */
  folderMtimeMs: number;
}

/**
 * Every lookup of an id the folder does not list costs one Set lookup and leaves nothing behind:
 * the verifier asks for every device an envelope names (a gateway's envelope names up to 1,000),
 * and the ids are the DMZ's word. A cache of every id asked for (as this was) grew by an entry and
 * a blocking stat per invented id: 300,000 forged ids held ~100 MB. Only listed ids are cached, so
 * the cache is bounded by the key files an operator put in the folder.
 */
export class DeviceKeyRegistry {
  private readonly cache = new Map<string, CachedKey>();
  private revoked = { ids: new Set<string>(), checkedAt: 0 };
  /** the problem with the revoked list last logged, so that one that lasts is logged once */
  private revokedProblem: string | undefined;
  /** the error the folder's last listing failed with (logged once while it lasts) */
  private folderProblem: string | undefined;
  /** the folder's listing: its ids, its mtime then (-1: no folder), when looked at and when listed */
  private folder = { ids: new Set<string>(), mtimeMs: -1, checkedAt: -Infinity, listedAt: -Infinity };

  /**
   * Reads the revoked list now: one that is there but cannot be read (a folder Docker mounted in
   * its place, no permission, an I/O error) throws CONFIG_FILE_UNREADABLE, so the service does not
   * start not knowing which devices are revoked; a missing one is an empty list (nothing revoked yet).
   */
  constructor(
    private readonly dir: string,
    private readonly revokedFile?: string,
    private readonly timing: KeyRecheck = { recheckMs: TIMINGS.deviceKeyRecheckMs, fileRecheckMs: TIMINGS.deviceKeyFileRecheckMs, missRecheckMs: TIMINGS.deviceKeyMissRecheckMs },
    private readonly log?: Logger,
  ) {
    if (revokedFile) this.readRevoked(Date.now(), true);
  }

  /** Revoked devices are refused even if a key of theirs is still around. */
  isRevoked(deviceId: string): boolean {
    return this.revokedIds().has(deviceId);
  }

  /** The revoked list (re-read at most every TIMINGS.deviceKeyRecheckMs). */
  revokedIds(): ReadonlySet<string> {
    const now = Date.now();
    if (this.revokedFile && now - this.revoked.checkedAt >= this.timing.recheckMs) this.readRevoked(now);
    return this.revoked.ids;
  }

  /**
   * A list that cannot be read while the service runs (EACCES, EMFILE, EISDIR, EIO: anything but
   * its absence) leaves the list read last in force, logged once (CONFIG_FILE_UNREADABLE), and is
   * read again at the next look: taken as empty, every revoked device whose key file is still
   * around had its messages and responses accepted and was sent commands until then.
   *
   * Revocation only ever adds to the list (a revoked id is never issued a certificate again), so
   * while the service runs a list that reads shorter keeps every id read before, logged once: one
   * read empty (docs/operations.md has it copied in place with cp or scp, which truncate the file
   * before they write it), an older copy restored over it, or one gone for a moment would otherwise
   * let those devices back in. Ids it adds are taken at once. Taking an id off the list (by hand)
   * takes a restart.
   */
  private readRevoked(now: number, atStart = false): void {
    const path = this.revokedFile as string;
    let text: string;
    try {
      text = readRegularFileSync(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        text = ''; // nothing revoked yet
      } else {
        const problem = `unreadable: ${code ?? (err as Error).message}`;
        if (atStart) throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `The revoked devices' list ${path} cannot be read (${problem}); fix the path or its permissions.`, { path });
        this.revoked.checkedAt = now;
        this.reportRevoked(problem, "revoked devices' list cannot be read: the devices read last stay revoked");
        return;
      }
    }
    const ids = new Set(text.split('\n').map((l) => l.trim()).filter(Boolean));
    let dropped = 0;
    for (const id of this.revoked.ids) {
      if (ids.has(id)) continue;
      ids.add(id);
      dropped++;
    }
    if (dropped > 0) this.reportRevoked(`dropped ${dropped}`, "revoked devices' list lacks devices read before (being copied? an older copy? gone?): they stay revoked");
    else this.revokedProblem = undefined;
    this.revoked = { ids, checkedAt: now };
  }

  private reportRevoked(problem: string, message: string): void {
    if (this.revokedProblem === problem) return;
    this.revokedProblem = problem;
    this.log?.warn({ code: 'CONFIG_FILE_UNREADABLE', path: this.revokedFile, problem, revoked: this.revoked.ids.size }, message);
  }

  /** Every device with a registered key (DIR/DEVICE_ID.key), whatever else is in the folder: listed afresh. */
  registered(): string[] {
    this.list(Date.now());
    return [...this.folder.ids];
  }

  /** Keys held in memory: at most one per key file listed, whatever ids were asked for. */
  get cachedKeys(): number {
    return this.cache.size;
  }

  /** How many devices the folder listed at the last look (no look of its own). */
  get listedCount(): number {
    return this.folder.ids.size;
  }

  /** Whether the folder lists a key file for this id (as of the last look, at most recheckMs ago). */
  has(deviceId: string): boolean {
    return this.listed(deviceId, Date.now());
  }

  /**
   * A key is looked at again after `recheckMs`, at the cost of one look at the folder for every
   * device: a key added, removed or replaced by a rename (as copying tools and editors do) changes
   * the folder, and only then is it listed again and the device's own file looked at. A file
   * overwritten in place does not change the folder: each file is looked at again after
   * `fileRecheckMs` regardless. (A look at each device's file every second cost the distributor a
   * system call per message of a fleet of devices sending once a second: docs/performance.md.)
   */
  get(deviceId: string): Buffer | undefined {
    const now = Date.now();
    // Not listed (an id the DMZ invented, or not a device id at all: the listing holds only valid
    // ones): nothing kept.
    if (!this.listed(deviceId, now)) return undefined;
    const folderMtimeMs = this.folder.mtimeMs;
    const hit = this.cache.get(deviceId);
    if (hit && hit.folderMtimeMs === folderMtimeMs && now - hit.statAt < this.timing.fileRecheckMs) return hit.key;
    const path = join(this.dir, `${deviceId}.key`);
    let key: Buffer | undefined;
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(path).mtimeMs;
      key = hit && hit.mtimeMs === mtimeMs ? hit.key : parseSigningKey(readRegularFileSync(path, 'utf8'));
    } catch (err) {
      // A key removed (ENOENT) is gone; one that cannot be looked at for a moment (EMFILE, EIO) is
      // the key it was: dropped, every message of the device would be refused as an unknown
      // device's, a false security event each.
      const transient = hit !== undefined && isTransient(err);
      key = transient ? hit.key : undefined;
      if (transient) mtimeMs = hit.mtimeMs;
    }
    this.cache.set(deviceId, { key, statAt: now, mtimeMs, folderMtimeMs });
    return key;
  }

  /**
   * Whether the folder lists `deviceId`. An id it lacks has the folder looked at again once the last
   * look is `missRecheckMs` old, not `recheckMs`: a device onboarded a moment before its first
   * message (its key written, the device started) would otherwise have that message refused as
   * unknown, a security event, and held until its commit timeout. A flood of invented ids costs at
   * most one stat of the folder per `missRecheckMs`, and a listing only when the folder changed.
   */
  private listed(deviceId: string, now: number): boolean {
    this.lookAtFolder(now);
    if (this.folder.ids.has(deviceId)) return true;
    const miss = this.timing.missRecheckMs ?? this.timing.recheckMs;
    if (now - this.folder.checkedAt < miss) return false;
    this.lookAtFolder(now, true);
    return this.folder.ids.has(deviceId);
  }

  /**
   * The folder's mtime, looked at most once every `recheckMs` (-1: no folder); listed again when it
   * changed, and at least every `fileRecheckMs` whatever it says (a key added within the tick of the
   * mtime of the last listing leaves the mtime as it was, on file systems with coarse timestamps).
   */
  private lookAtFolder(now: number, force = false): number {
    if (!force && now - this.folder.checkedAt < this.timing.recheckMs) return this.folder.mtimeMs;
    let mtimeMs = -1;
    try {
      mtimeMs = statSync(this.dir).mtimeMs;
    } catch {
      /* no keys yet */
    }
    this.folder.checkedAt = now;
    if (mtimeMs !== this.folder.mtimeMs || now - this.folder.listedAt >= this.timing.fileRecheckMs) this.list(now, mtimeMs);
    return this.folder.mtimeMs;
  }

  /** Lists the folder: its valid device ids; cached keys of ids no longer listed are forgotten. */
  private list(now: number, mtimeMs = this.statFolder()): void {
    let ids = new Set<string>();
    try {
      ids = new Set(
        readdirSync(this.dir)
          .filter((f) => f.endsWith('.key'))
          .map((f) => f.slice(0, -'.key'.length))
          .filter((id) => DeviceIdSchema.safeParse(id).success),
      );
      this.folderProblem = undefined;
    } catch (err) {
      if (isTransient(err)) {
        // Not listed for a moment (EMFILE, EIO, EACCES): the devices listed last are still
        // registered. Taken as none, every device's messages were refused as unknown for a
        // second, a false security event each. Listed again at the next look.
        const problem = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        if (problem !== this.folderProblem) this.log?.warn({ code: 'CONFIG_FILE_UNREADABLE', path: this.dir, problem, registered: this.folder.ids.size }, "device keys' folder cannot be listed: the devices listed last stay registered");
        this.folderProblem = problem;
        this.folder = { ...this.folder, checkedAt: now, listedAt: now };
        return;
      }
      /* no folder: no keys yet, or every key removed */
    }
    for (const id of this.cache.keys()) if (!ids.has(id)) this.cache.delete(id);
    this.folder = { ids, mtimeMs, checkedAt: now, listedAt: now };
  }

  private statFolder(): number {
    try {
      return statSync(this.dir).mtimeMs;
    } catch {
      return -1;
    }
  }
}

/** A system call's error that says nothing of whether the file or folder is there: anything but
 * ENOENT (gone). Not a key that does not parse: that one is refused. */
function isTransient(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return e.syscall !== undefined && e.code !== 'ENOENT';
}
