import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { readServerCrl, type ServerCrl } from './server-crl.ts';

/**
 * The CRL the client holds while it runs (server-crl.ts reads one): read at start, and read again
 * whenever its file has changed since (looked at before each connection attempt and every
 * TIMINGS.fieldCrlCheckMs: gateway-connection.ts), so that copying the CA's current certs/ca.crl to
 * a device after a `--renew-dmz` takes effect without a restart, and drops a connection to a server
 * it now revokes.
 *
 * A new file that cannot be used does not take the held list away: one that cannot be read, is no
 * CRL or no CRL of the CA, or is older than the one held (an earlier thisUpdate: a stale copy would
 * take a revocation back), is FIELD_CRL_RELOAD_REFUSED, logged once for that version of the file,
 * and the held list stays. So does a file removed while the client runs: the check is turned off
 * by a restart without the file, as at start. A file that appears where none was at start (the
 * ca.crl beside FIELD_CA_FILE) is read as a change.
 */
export class ServerCrlSource {
  private held: ServerCrl | undefined;
  /** the version of the file last looked at (see versionOf) */
  private seen: string;

  private constructor(
    readonly path: string,
    private readonly explicit: string | undefined,
    private readonly caFile: string,
    private readonly caPem: string,
    private readonly log: Pick<Logger, 'info' | 'warn'>,
  ) {
    this.seen = versionOf(path);
    // As at start: a file that cannot be used stops the client (readServerCrl's codes, exit 78).
    this.held = readServerCrl(explicit, caFile, caPem, log);
  }

  /**
   * The CRL of FIELD_CRL_FILE (`explicit`), or of the ca.crl beside FIELD_CA_FILE; undefined when
   * FIELD_CRL_FILE is unset and no ca.crl was there at start nor is now.
   */
  static open(explicit: string | undefined, caFile: string, caPem: string, log: Pick<Logger, 'info' | 'warn'>): ServerCrlSource {
    return new ServerCrlSource(explicit ?? join(dirname(caFile), 'ca.crl'), explicit, caFile, caPem, log);
  }

  /** The list to check the server's certificate against now: the file read again first if it changed. */
  current(now: number = Date.now()): ServerCrl | undefined {
    const version = versionOf(this.path);
    if (version === this.seen) return this.held;
    this.seen = version;
    if (version === ABSENT) {
      if (this.held) this.refused('the file is gone: the list read before is kept (a restart without the file turns the check off)');
      return this.held;
    }
    let next: ServerCrl | undefined;
    try {
      next = readServerCrl(this.explicit, this.caFile, this.caPem, this.log, now);
    } catch (err) {
      this.refused((err as Error).message);
      return this.held;
    }
    if (!next) return this.held;
    if (this.held && next.thisUpdate.getTime() < this.held.thisUpdate.getTime()) {
      this.refused(`it is older than the one held (thisUpdate ${next.thisUpdate.toISOString()}, before ${this.held.thisUpdate.toISOString()}): a stale copy would take revocations back`);
      return this.held;
    }
    this.log.info({ crl: this.path, revoked: next.revoked, before: this.held?.revoked ?? null }, "the CRL changed: the server's certificate is checked against the new one");
    this.held = next;
    return next;
  }

  private refused(why: string): void {
    this.log.warn({ code: 'FIELD_CRL_RELOAD_REFUSED', crl: this.path, revoked: this.held?.revoked ?? null }, `the CRL file changed and was not taken: ${why}`);
  }
}

const ABSENT = 'absent';

/**
 * Which version of the file is there: its inode, size, and modification and change times in
 * nanoseconds (a copy over it, or a rename into place, changes one of them), or ABSENT. A file that
 * cannot be looked at is a version of its own, so that the error is read and said once.
 */
function versionOf(path: string): string {
  try {
    const s = statSync(path, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? ABSENT : `error:${code ?? 'unknown'}`;
  }
}
