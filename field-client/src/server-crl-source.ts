import { dirname, join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { ReloadedFile } from '../../shared/reloaded-file.ts';
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
  private readonly file: ReloadedFile<ServerCrl | undefined>;
  /** the list in use (the file's last good version) */
  private held: ServerCrl | undefined;

  private constructor(
    readonly path: string,
    explicit: string | undefined,
    caFile: string,
    caPem: string,
    log: Pick<Logger, 'info' | 'warn'>,
  ) {
    const refused = (why: string) => log.warn({ code: 'FIELD_CRL_RELOAD_REFUSED', crl: path, revoked: this.held?.revoked ?? null }, `the CRL file changed and was not taken: ${why}`);
    this.file = new ReloadedFile({
      path,
      // Looked at whenever asked: before each connection attempt and every crlCheckMs (one stat).
      recheckMs: 0,
      read: () => {
        const next = readServerCrl(explicit, caFile, caPem, log);
        // Gone between the look and the read (readServerCrl's "no CRL beside FIELD_CA_FILE"): as gone.
        if (!next && this.held) throw Object.assign(new Error('gone'), { code: 'ENOENT' });
        if (this.held && next && next.thisUpdate.getTime() < this.held.thisUpdate.getTime()) {
          throw new Error(`it is older than the one held (thisUpdate ${next.thisUpdate.toISOString()}, before ${this.held.thisUpdate.toISOString()}): a stale copy would take revocations back`);
        }
        return next;
      },
      whenMissing: 'keep',
      onInvalid: (err) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          if (this.held) refused('the file is gone: the list read before is kept (a restart without the file turns the check off)');
        } else refused(err.message);
      },
      onChange: (next) => {
        log.info({ crl: path, revoked: next?.revoked ?? 0, before: this.held?.revoked ?? null }, "the CRL changed: the server's certificate is checked against the new one");
        this.held = next;
      },
    });
    // As at start: a file that cannot be used stops the client (readServerCrl's codes, exit 78).
    this.held = this.file.load();
  }

  /**
   * The CRL of FIELD_CRL_FILE (`explicit`), or of the ca.crl beside FIELD_CA_FILE; undefined when
   * FIELD_CRL_FILE is unset and no ca.crl was there at start nor is now.
   */
  static open(explicit: string | undefined, caFile: string, caPem: string, log: Pick<Logger, 'info' | 'warn'>): ServerCrlSource {
    return new ServerCrlSource(explicit ?? join(dirname(caFile), 'ca.crl'), explicit, caFile, caPem, log);
  }

  /** The list to check the server's certificate against now: the file read again first if it changed. */
  current(): ServerCrl | undefined {
    return this.file.current();
  }
}
