import { statSync } from 'node:fs';

export interface ReloadedFileOptions<T> {
  path: string;
  /** milliseconds between two looks at the file (a stat each) */
  recheckMs: number;
  /** reads and checks the file (zod); throws when it is not valid */
  read: (path: string) => T;
  /** a file that is not there (or cannot be looked at): 'forget' makes the value undefined until it
   * is back; 'keep' keeps the last good value in force and reports it through onInvalid */
  whenMissing: 'forget' | 'keep';
  /** a version of the file that could not be read or is not valid: reported once per version, the
   * last good value staying in force */
  onInvalid: (err: Error) => void;
  /** a new value read from a changed file (not the first one, load()) */
  onChange?: (value: T) => void;
}

const MISSING = 'missing';

/** What tells one version of a file from another without reading it: written in place (mtime,
 * size) or replaced by a rename (inode). The mtime alone misses a copy that keeps the old one
 * (cp -p, rsync -t, a restore) and a second write within one tick of a coarse clock. Throws what
 * stat throws. Every file a service reloads is looked at with it (ReloadedFile, the gateway's
 * device tokens and revoked serials). */
export function stampOf(path: string): string {
  const s = statSync(path);
  return `${s.ino}:${s.size}:${s.mtimeMs}`;
}

/**
 * A file an operator may change while a service runs (the console's role tokens, the device
 * tokens it shows), read again when it changes. Asking for it at every request costs a clock read:
 * the file is looked at (one stat) at most once per `recheckMs`, and read only when that look finds
 * another version. A version that cannot be read or is not valid leaves the last good value in
 * force, reported once (a half-written file is seen again when the write ends, as its stamp then
 * changes), so an edit gone wrong never takes the service down or leaves it with nothing.
 */
export class ReloadedFile<T> {
  private value: T | undefined;
  /** the version last looked at (undefined: none yet) */
  private stamp: string | undefined;
  private lookedAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly o: ReloadedFileOptions<T>) {}

  /** Reads the file now, throwing what `read` throws: for a service that must not start without it. */
  load(now = Date.now()): T {
    this.lookedAt = now;
    // The stamp before the read: a change between the two is read again at the next look, never missed.
    let stamp: string | undefined;
    try {
      stamp = stampOf(this.o.path);
    } catch {
      stamp = MISSING;
    }
    const value = this.o.read(this.o.path);
    this.stamp = stamp;
    this.value = value;
    return value;
  }

  /** The value of the file's current version (at most `recheckMs` old), or the last good one. */
  current(now = Date.now()): T | undefined {
    if (now - this.lookedAt < this.o.recheckMs) return this.value;
    this.lookedAt = now;
    let stamp: string;
    try {
      stamp = stampOf(this.o.path);
    } catch (err) {
      if (this.stamp === MISSING) return this.value;
      this.stamp = MISSING;
      if (this.o.whenMissing === 'forget') this.value = undefined;
      else this.o.onInvalid(err as Error);
      return this.value;
    }
    if (stamp === this.stamp) return this.value;
    this.stamp = stamp;
    let value: T;
    try {
      value = this.o.read(this.o.path);
    } catch (err) {
      this.o.onInvalid(err as Error);
      return this.value;
    }
    this.value = value;
    this.o.onChange?.(value);
    return value;
  }
}
